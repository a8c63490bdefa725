package ntp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socket is one bound UDP socket, integrated with the Go netpoller.
type socket struct {
	conn             *net.UDPConn
	rc               syscall.RawConn
	local            netip.AddrPort
	v6               bool
	wildcard         bool
	kernelTimestamps bool
	closing          atomic.Bool
	closeOnce        sync.Once
}

func openSocket(addr netip.AddrPort, reusePort bool) (*socket, error) {
	so := &socket{v6: addr.Addr().Is6(), wildcard: addr.Addr().IsUnspecified()}
	network := "udp4"
	if so.v6 {
		network = "udp6"
	}
	var optErr error
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			ifd := int(fd)
			if reusePort {
				if err := unix.SetsockoptInt(ifd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
					optErr = err
					return
				}
			}
			// Kernel receive timestamps: T2 is when the packet arrived,
			// not when we got round to reading it.
			so.kernelTimestamps = unix.SetsockoptInt(ifd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) == nil
			// Learn each request's destination address, so that the
			// reply leaves from it on a wildcard socket.
			if so.v6 {
				optErr = unix.SetsockoptInt(ifd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			} else {
				optErr = unix.SetsockoptInt(ifd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			}
			// A larger receive buffer absorbs bursts; failure is harmless.
			_ = unix.SetsockoptInt(ifd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		})
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		var se *net.OpError
		if errors.As(err, &se) {
			return nil, se.Err
		}
		return nil, err
	}
	if optErr != nil {
		pc.Close()
		return nil, optErr
	}
	so.conn = pc.(*net.UDPConn)
	so.local = so.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	so.local = netip.AddrPortFrom(so.local.Addr().Unmap(), so.local.Port())
	if so.rc, err = so.conn.SyscallConn(); err != nil {
		pc.Close()
		return nil, err
	}
	return so, nil
}

func (so *socket) close() {
	so.closeOnce.Do(func() {
		so.closing.Store(true)
		so.conn.Close()
	})
}

const (
	recvBufLen = 2048
	oobLen     = 128
)

// recvBatch is the buffers of one recvmmsg call, allocated once: up to
// len(msgs) packets with their source addresses (N: the socket's sockaddr
// type) and control messages.
type recvBatch[N any] struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	bufs  [][recvBufLen]byte
	oobs  [][oobLen]byte
	names []N
}

func (b *recvBatch[N]) init(batch int) {
	b.msgs = make([]unix.Mmsghdr, batch)
	b.iovs = make([]unix.Iovec, batch)
	b.bufs = make([][recvBufLen]byte, batch)
	b.oobs = make([][oobLen]byte, batch)
	b.names = make([]N, batch)
	for i := range b.msgs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(recvBufLen)
		h := &b.msgs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Control = &b.oobs[i][0]
	}
}

// recvmmsg resets the headers and reads up to a batch from fd. It always
// adds MSG_DONTWAIT to flags: the call must not block, because it is made as
// a raw system call (see send).
func (b *recvBatch[N]) recvmmsg(fd uintptr, flags int) (int, unix.Errno) {
	flags |= unix.MSG_DONTWAIT
	for i := range b.msgs {
		h := &b.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		h.SetControllen(oobLen)
		h.Flags = 0
		b.msgs[i].Len = 0
	}
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])),
		uintptr(len(b.msgs)), uintptr(flags), 0, 0)
	return int(n), errno
}

// reader owns all buffers of one reading goroutine, allocated once.
type reader struct {
	so       *socket
	resp     *Responder
	consumer Consumer

	recvBatch[unix.RawSockaddrInet6]

	readFn func(fd uintptr) bool

	reply   [HeaderLength]byte
	sendHdr unix.Msghdr
	sendIov unix.Iovec
	sendOOB [64]byte
	pollOut [1]unix.PollFd

	obs Observation
}

func newReader(so *socket, resp *Responder, consumer Consumer, batch int) *reader {
	r := &reader{so: so, resp: resp, consumer: consumer}
	r.recvBatch.init(batch)
	r.readFn = r.recv
	r.sendIov.Base = &r.reply[0]
	r.sendIov.SetLen(HeaderLength)
	r.sendHdr.Iov = &r.sendIov
	r.sendHdr.SetIovlen(1)
	return r
}

// recv is called by the netpoller with the socket's fd once it is
// readable. It reads and answers batches until the socket would block (the
// netpoller then waits for the next packet) or the socket is closing. All
// of it runs inside the callback, where the fd is guaranteed open, so
// replies go out with a direct sendmsg on the same fd.
func (r *reader) recv(fd uintptr) bool {
	for {
		if r.so.closing.Load() {
			return true
		}
		n, errno := r.recvmmsg(fd, unix.MSG_DONTWAIT)
		switch errno {
		case 0:
		case unix.EAGAIN:
			return false
		case unix.EINTR:
			continue
		default:
			// Errors such as ECONNREFUSED from an earlier ICMP are not
			// fatal for a UDP server; go back to waiting.
			return false
		}
		for i := 0; i < n; i++ {
			r.handle(fd, i)
		}
	}
}

// send transmits the prepared reply. A full send buffer (EAGAIN) is waited
// out briefly, then counted as a send error.
//
// The sendmsg, like the recvmmsg, is a raw system call: with MSG_DONTWAIT
// it cannot block, so telling the Go scheduler about it (entersyscall and
// exitsyscall) buys nothing. It costs more than the bookkeeping, though:
// when the kernel preempts the reader inside the call, as it does on a
// busy machine, the runtime's monitor thread finds the processor "in a
// system call", hands it off and keeps polling every 20 µs, which took 8%
// of the process's CPU under saturation (perf, 2026-12-04). Only the
// EAGAIN wait below, which does block, goes through the scheduler.
func (r *reader) send(fd uintptr) error {
	for try := 0; ; try++ {
		_, _, errno := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&r.sendHdr)), unix.MSG_DONTWAIT)
		switch {
		case errno == 0:
			return nil
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN && try < 3:
			r.pollOut[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
			unix.Poll(r.pollOut[:], 10)
			continue
		}
		return errno
	}
}

func (r *reader) run() error {
	for {
		if err := r.so.rc.Read(r.readFn); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if r.so.closing.Load() {
			return nil
		}
	}
}

func (r *reader) handle(fd uintptr, i int) {
	m := &r.msgs[i]
	length := int(m.Len)
	truncated := m.Hdr.Flags&unix.MSG_TRUNC != 0
	client, ok := sockaddrToAddrPort(&r.names[i], m.Hdr.Namelen)
	if !ok {
		return
	}
	rx, local, ifindex := r.parseControl(r.oobs[i][:m.Hdr.Controllen])
	if rx == 0 {
		rx = time.Now().UnixNano()
	}
	req := r.bufs[i][:length]
	n := r.resp.Respond(req, rx, client, local, r.reply[:], &r.obs)
	if truncated && r.obs.Drop == DropNone {
		// Longer than our buffer: not a request we understand.
		r.obs.Drop, n = DropMalformed, 0
		r.obs.ReplyLength, r.obs.ServerTransmit, r.obs.Processing = 0, 0, 0
	}
	if n > 0 {
		r.sendHdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.sendHdr.Namelen = m.Hdr.Namelen
		r.setSourceControl(local, ifindex)
		if err := r.send(fd); err != nil {
			r.obs.Drop = DropSendError
			r.obs.ReplyLength = 0
		}
	}
	r.consumer.Observe(&r.obs)
}

// parseControl walks the control messages of one received packet without
// allocating: kernel receive timestamp, destination address and interface.
func (r *reader) parseControl(oob []byte) (rxNanos int64, local netip.AddrPort, ifindex uint32) {
	local = r.so.local
	const hdrLen = unix.SizeofCmsghdr
	for len(oob) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(oob) {
			break
		}
		data := oob[cmsgAlign(hdrLen):l]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= int(unsafe.Sizeof(unix.Timespec{})):
			ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
			rxNanos = ts.Sec*1e9 + ts.Nsec
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			local = netip.AddrPortFrom(netip.AddrFrom4(pi.Addr), r.so.local.Port())
			ifindex = uint32(pi.Ifindex)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			local = netip.AddrPortFrom(netip.AddrFrom16(pi.Addr).Unmap(), r.so.local.Port())
			ifindex = pi.Ifindex
		}
		next := cmsgAlign(l)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return rxNanos, local, ifindex
}

// setSourceControl makes the reply leave from the address the request
// was sent to (wildcard sockets only).
func (r *reader) setSourceControl(local netip.AddrPort, ifindex uint32) {
	if !r.so.wildcard {
		r.sendHdr.Control = nil
		r.sendHdr.SetControllen(0)
		return
	}
	b := r.sendOOB[:]
	for i := range b {
		b[i] = 0
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	data := b[cmsgAlign(unix.SizeofCmsghdr):]
	if r.so.v6 {
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(cmsgAlign(unix.SizeofCmsghdr) + unix.SizeofInet6Pktinfo)
		pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
		pi.Addr = local.Addr().As16()
		pi.Ifindex = ifindex
		r.sendHdr.SetControllen(cmsgAlign(unix.SizeofCmsghdr + unix.SizeofInet6Pktinfo))
	} else {
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(cmsgAlign(unix.SizeofCmsghdr) + unix.SizeofInet4Pktinfo)
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
		pi.Spec_dst = local.Addr().As4()
		r.sendHdr.SetControllen(cmsgAlign(unix.SizeofCmsghdr + unix.SizeofInet4Pktinfo))
	}
	r.sendHdr.Control = &b[0]
}

func cmsgAlign(n int) int {
	const a = int(unsafe.Sizeof(uintptr(0)))
	return (n + a - 1) &^ (a - 1)
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6, n uint32) (netip.AddrPort, bool) {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), netPort(&sa4.Port)), true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), netPort(&sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// netPort reads a port stored in network byte order.
func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}
