package ntp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"golang.org/x/sys/unix"
)

// CaptureConfig configures passive capture.
type CaptureConfig struct {
	// Interfaces to capture on (at least one).
	Interfaces []string
	// BufferSize is the kernel receive buffer of each capture socket in
	// bytes (default 8 MiB). Frames that do not fit are dropped by the
	// kernel, counted, and make pending requests DropCaptureLost.
	BufferSize int
	// Batch is how many frames one recvmmsg call may return (default 32).
	Batch int
	// Sweep is how often kernel drops are read and expired requests
	// recorded (default 100 ms).
	Sweep time.Duration
}

// CaptureError explains a capture socket that could not be opened.
type CaptureError struct {
	Interface string
	Err       error
}

func (e *CaptureError) Error() string {
	switch {
	case errors.Is(e.Err, unix.EPERM), errors.Is(e.Err, unix.EACCES):
		return fmt.Sprintf("cannot capture on interface %s: %v: passive mode needs CAP_NET_RAW; run as root, "+
			"or grant only that capability (systemd: AmbientCapabilities=CAP_NET_RAW; or setcap cap_net_raw+ep on the binary)",
			e.Interface, e.Err)
	case errors.Is(e.Err, errNoInterface):
		return fmt.Sprintf("cannot capture on interface %q: no such interface; list them with 'ip link' and set capture.interface", e.Interface)
	}
	return fmt.Sprintf("cannot capture on interface %s: %v", e.Interface, e.Err)
}

func (e *CaptureError) Unwrap() error { return e.Err }

var errNoInterface = errors.New("no such network interface")

// Capture reads NTP traffic from AF_PACKET sockets and feeds a Passive
// matcher. It never sends a packet.
type Capture struct {
	cfg     CaptureConfig
	passive *Passive
	logger  log.Logger
	socks   []*captureSocket
	wg      sync.WaitGroup
	stop    chan struct{}
	once    sync.Once
	// stopping makes the readers leave their receive loop at the next
	// batch, so that closing the sockets does not wait for a flood to end.
	stopping atomic.Bool
}

type captureSocket struct {
	iface   string
	ifindex int
	link    LinkType
	// buffer is the receive buffer the kernel granted (SO_RCVBUF as read
	// back, which counts its bookkeeping too).
	buffer int
	file   *os.File
	rc     syscall.RawConn
	// Kernel drops not yet logged, and when they were last logged (Unix
	// ns; sweep goroutine only).
	unloggedDrops uint64
	lastDropLog   int64
}

// dropLogInterval is the least time between two kernel-drop warnings for
// one interface; each says how many frames were dropped since the last.
const dropLogInterval = 10 * time.Second

// NewCapture makes a capture; Open opens its sockets.
func NewCapture(cfg CaptureConfig, passive *Passive, logger log.Logger) *Capture {
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 8 << 20
	}
	if cfg.Batch < 1 {
		cfg.Batch = 32
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = 100 * time.Millisecond
	}
	return &Capture{cfg: cfg, passive: passive, logger: logger, stop: make(chan struct{})}
}

// Open opens one capture socket per interface, with the filter attached
// before any frame can be queued.
func (c *Capture) Open() error {
	if len(c.cfg.Interfaces) == 0 {
		return &CaptureError{Interface: "(none)", Err: errors.New("no interface given: set capture.interface")}
	}
	for _, name := range c.cfg.Interfaces {
		s, err := openCaptureSocket(name, c.cfg.BufferSize)
		if err != nil {
			c.closeAll()
			return &CaptureError{Interface: name, Err: err}
		}
		c.socks = append(c.socks, s)
		if s.buffer < c.cfg.BufferSize {
			level.Warn(c.logger).Log("msg", "capture buffer smaller than asked for", "interface", name,
				"asked_bytes", c.cfg.BufferSize, "granted_bytes", s.buffer,
				"fix", fmt.Sprintf("raise net.core.rmem_max (sysctl -w net.core.rmem_max=%d), or grant CAP_NET_ADMIN", c.cfg.BufferSize))
		} else {
			level.Info(c.logger).Log("msg", "capturing", "interface", name, "buffer_bytes", s.buffer)
		}
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openCaptureSocket(name string, bufSize int) (*captureSocket, error) {
	// Protocol 0: the socket receives nothing until it is bound, so the
	// filter is in place before the first frame is queued.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	// The interface is looked up with ioctls on this socket, in its
	// network namespace, without netlink (the systemd unit allows only
	// the socket families it needs).
	ifindex, err := ifIndex(fd, name)
	if err != nil {
		return nil, err
	}
	link, err := linkTypeOf(fd, name)
	if err != nil {
		return nil, err
	}
	raw, err := CaptureFilter(link)
	if err != nil {
		return nil, err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return nil, fmt.Errorf("attaching the BPF filter: %w", err)
	}
	// A larger buffer absorbs bursts; SO_RCVBUFFORCE passes the sysctl
	// limit when we may (root), else the limit applies.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufSize) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bufSize)
	}
	granted, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return nil, fmt.Errorf("enabling kernel timestamps: %w", err)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, err
	}
	// Reset the drop counter: PACKET_STATISTICS reads and clears.
	_, _ = unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	f := os.NewFile(uintptr(fd), "capture:"+name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		ok = true
		return nil, err
	}
	ok = true
	return &captureSocket{iface: name, ifindex: ifindex, link: link, buffer: granted, file: f, rc: rc}, nil
}

// ifIndex looks an interface up by name with an ioctl on fd (in fd's
// network namespace).
func ifIndex(fd int, name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, errNoInterface
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return 0, errNoInterface
		}
		return 0, fmt.Errorf("looking up the interface: %w", err)
	}
	return int(ifr.Uint32()), nil
}

// linkTypeOf asks the kernel for the interface's ARP hardware type (in
// the network namespace of the socket fd).
func linkTypeOf(fd int, name string) (LinkType, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFHWADDR, ifr); err != nil {
		return 0, fmt.Errorf("reading its link type: %w", err)
	}
	switch t := ifr.Uint16(); t {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		return LinkEthernet, nil
	case unix.ARPHRD_NONE, unix.ARPHRD_PPP, unix.ARPHRD_IPGRE, unix.ARPHRD_TUNNEL, unix.ARPHRD_TUNNEL6, arphrdRawIP:
		return LinkRawIP, nil
	default:
		return 0, fmt.Errorf("link type %d is not supported (Ethernet, loopback, tun/WireGuard, PPP and IP tunnels are)", t)
	}
}

// arphrdRawIP is ARPHRD_RAWIP (raw IP devices such as some LTE modems).
const arphrdRawIP = 519

// Interfaces returns the interfaces being captured.
func (c *Capture) Interfaces() []string {
	var out []string
	for _, s := range c.socks {
		out = append(out, s.iface)
	}
	return out
}

// Run reads until Shutdown. Every Sweep it reads the kernel's drop counts
// and records requests whose reply timed out.
func (c *Capture) Run(ctx context.Context) error {
	errc := make(chan error, len(c.socks))
	for i, s := range c.socks {
		r := newCaptureReader(s, c.passive, c.cfg.Batch)
		r.iface, r.stopping, r.logger = i+1, &c.stopping, c.logger
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			errc <- r.run()
		}()
	}
	t := time.NewTicker(c.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.stop:
			return nil
		case err := <-errc:
			if err != nil {
				return err
			}
		case now := <-t.C:
			if err := c.sweep(now.UnixNano()); err != nil {
				return err
			}
		}
	}
}

// sweep reads the kernel's drop counts, checks that every interface is
// still there, and records requests whose reply timed out. A removed
// interface is an error: its socket will never see another frame, even
// if an interface of the same name comes back.
func (c *Capture) sweep(now int64) error {
	for _, s := range c.socks {
		var st *unix.TpacketStats
		idx := s.ifindex
		_ = s.rc.Control(func(fd uintptr) {
			st, _ = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
			if i, err := ifIndex(int(fd), s.iface); err != nil {
				idx = -1
			} else {
				idx = i
			}
		})
		if idx != s.ifindex {
			return fmt.Errorf("capture on %s stopped: the interface was removed (restart ntpexp once it is back; under systemd it restarts by itself)", s.iface)
		}
		var drops uint64
		if st != nil {
			drops = uint64(st.Drops)
		}
		c.noteDrops(s, now, drops)
	}
	c.passive.Expire(now)
	return nil
}

// noteDrops records n frames the kernel dropped on s (read at time now)
// as a capture gap, and warns at most once per dropLogInterval per
// interface with the frames dropped since the last warning.
func (c *Capture) noteDrops(s *captureSocket, now int64, n uint64) {
	c.passive.CaptureGap(n)
	s.unloggedDrops += n
	if s.unloggedDrops == 0 || (s.lastDropLog != 0 && now-s.lastDropLog < int64(dropLogInterval)) {
		return
	}
	since := "start"
	if s.lastDropLog != 0 {
		since = time.Duration(now - s.lastDropLog).Round(time.Second).String()
	}
	level.Warn(c.logger).Log("msg", "capture buffer overflowed; frames dropped by the kernel",
		"interface", s.iface, "dropped", s.unloggedDrops, "since_last_warning", since,
		"fix", "raise capture.buffer_size, or check CPU load")
	s.unloggedDrops, s.lastDropLog = 0, now
}

// Shutdown stops reading, waits for the readers, then records every
// request still waiting for a reply (as capture_lost).
func (c *Capture) Shutdown() {
	c.once.Do(func() {
		c.stopping.Store(true)
		close(c.stop)
		c.closeAll()
		c.wg.Wait()
		c.passive.Flush()
	})
}

func (c *Capture) closeAll() {
	for _, s := range c.socks {
		s.file.Close()
	}
}

// captureReader owns the buffers of one capture socket.
type captureReader struct {
	s        *captureSocket
	p        *Passive
	iface    int
	stopping *atomic.Bool
	logger   log.Logger
	err      error // why the reader stopped, if not asked to
	recvBatch[unix.RawSockaddrLinklayer]
	readFn func(fd uintptr) bool
}

func newCaptureReader(s *captureSocket, p *Passive, batch int) *captureReader {
	r := &captureReader{s: s, p: p}
	r.recvBatch.init(batch)
	r.readFn = r.recv
	return r
}

func (r *captureReader) run() error {
	for {
		err := r.s.rc.Read(r.readFn)
		switch {
		case r.stopping.Load():
			return nil
		case err != nil:
			if errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		case r.err != nil:
			return r.err
		}
	}
}

// recv reads batches until the socket would block, the capture is
// stopping, or a socket error ends it (r.err).
func (r *captureReader) recv(fd uintptr) bool {
	for {
		if r.stopping.Load() {
			return true
		}
		n, errno := r.recvmmsg(fd, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		switch errno {
		case 0:
		case unix.EAGAIN:
			return false
		case unix.EINTR:
			continue
		case unix.ENETDOWN:
			// The interface went down: frames flow again once it is
			// up. (Removal is noticed by the sweep.)
			level.Warn(r.logger).Log("msg", "capture interface is down", "interface", r.s.iface)
			return false
		default:
			r.err = fmt.Errorf("capture on %s stopped: %w (if the interface was removed or recreated, restart ntpexp once it is back; under systemd it restarts by itself)", r.s.iface, errno)
			return true
		}
		for i := 0; i < n; i++ {
			r.handle(i)
		}
	}
}

func (r *captureReader) handle(i int) {
	m := &r.msgs[i]
	dir := DirOther
	switch r.names[i].Pkttype {
	case unix.PACKET_HOST, unix.PACKET_BROADCAST, unix.PACKET_MULTICAST:
		dir = DirIncoming
	case unix.PACKET_OUTGOING:
		dir = DirOutgoing
	}
	length := int(m.Len)
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 || length > recvBufLen {
		r.p.Truncated(dir)
		return
	}
	rx := captureTimestamp(r.oobs[i][:m.Hdr.Controllen])
	if rx == 0 {
		rx = time.Now().UnixNano()
	}
	payload, src, dst, err := DecodeFrame(r.s.link, r.bufs[i][:length])
	switch {
	case errors.Is(err, errFrameFragment):
		r.p.Fragment(src, dst, dir)
		return
	case err != nil:
		r.p.Invalid(dir)
		return
	}
	r.p.PacketOn(r.iface, payload, src, dst, dir, rx)
}

// captureTimestamp reads SCM_TIMESTAMPNS from a control buffer.
func captureTimestamp(oob []byte) int64 {
	const hdrLen = unix.SizeofCmsghdr
	for len(oob) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(oob) {
			break
		}
		data := oob[cmsgAlign(hdrLen):l]
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
			return ts.Sec*1e9 + ts.Nsec
		}
		next := cmsgAlign(l)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return 0
}
