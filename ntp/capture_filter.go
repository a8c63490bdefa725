package ntp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"

	"golang.org/x/net/bpf"
)

// LinkType is how a captured frame starts.
type LinkType uint8

const (
	// LinkEthernet: a 14-byte Ethernet header (also loopback and veth),
	// possibly followed by up to two 802.1Q/802.1ad VLAN tags still in
	// the frame (the kernel usually strips the outer one into metadata).
	LinkEthernet LinkType = iota
	// LinkRawIP: the frame is the IP packet (tun, WireGuard, GRE, PPP).
	LinkRawIP
)

const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86dd
	etherTypeVLAN   = 0x8100
	etherTypeQinQ   = 0x88a8
	etherTypeQinQ91 = 0x9100
	ipProtoUDP      = 17
	ipProtoFragment = 44 // IPv6 fragment header
	// captureSnap is the largest frame length the filter passes whole;
	// longer frames are cut there and counted as truncated.
	captureSnap = 65535
)

// CaptureFilter returns the classic BPF program that passes IPv4 and IPv6
// UDP packets with port 123 on either side, and nothing else, for the
// given link type. First fragments of such datagrams pass too, so that
// they are counted (DecodeFrame reports errFrameFragment); later
// fragments are rejected (no UDP header). IPv6 packets with other
// extension headers before UDP are rejected (NTP does not use them). It
// is checked with x/net/bpf's virtual machine in tests, against real
// frames.
func CaptureFilter(link LinkType) ([]bpf.RawInstruction, error) {
	var a filterAsm
	switch link {
	case LinkEthernet:
		// Ethertype at 12, then up to two VLAN tags of 4 bytes each.
		for tags := 0; tags <= 2; tags++ {
			off := uint32(12 + 4*tags)
			a.label("eth" + string(rune('0'+tags)))
			a.ins(bpf.LoadAbsolute{Off: off, Size: 2})
			a.jeq(etherTypeIPv4, "v4_"+string(rune('0'+tags)), "")
			a.jeq(etherTypeIPv6, "v6_"+string(rune('0'+tags)), "")
			if tags < 2 {
				next := "eth" + string(rune('1'+tags))
				a.jeq(etherTypeVLAN, next, "")
				a.jeq(etherTypeQinQ, next, "")
				a.jeq(etherTypeQinQ91, next, "")
			}
			a.jmp("reject")
		}
		for tags := 0; tags <= 2; tags++ {
			base := uint32(14 + 4*tags)
			a.label("v4_" + string(rune('0'+tags)))
			a.ipv4(base)
			a.label("v6_" + string(rune('0'+tags)))
			a.ipv6(base)
		}
	case LinkRawIP:
		a.ins(bpf.LoadAbsolute{Off: 0, Size: 1})
		a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4})
		a.jeq(4, "v4", "")
		a.jeq(6, "v6", "")
		a.jmp("reject")
		a.label("v4")
		a.ipv4(0)
		a.label("v6")
		a.ipv6(0)
	default:
		return nil, errors.New("ntp: unknown link type")
	}
	a.label("accept")
	a.ins(bpf.RetConstant{Val: captureSnap})
	a.label("reject")
	a.ins(bpf.RetConstant{Val: 0})
	prog, err := a.assemble()
	if err != nil {
		return nil, err
	}
	return bpf.Assemble(prog)
}

// ipv4 checks an IPv4 header at base: UDP, not a later fragment, port 123.
func (a *filterAsm) ipv4(base uint32) {
	a.ins(bpf.LoadAbsolute{Off: base + 9, Size: 1})
	a.jeq(ipProtoUDP, "", "reject")
	a.ins(bpf.LoadAbsolute{Off: base + 6, Size: 2})
	a.jset(0x1fff, "reject", "")
	a.ins(bpf.LoadMemShift{Off: base})
	a.ins(bpf.LoadIndirect{Off: base, Size: 2})
	a.jeq(ntpPort, "accept", "")
	a.ins(bpf.LoadIndirect{Off: base + 2, Size: 2})
	a.jeq(ntpPort, "accept", "reject")
}

// ipv6 checks an IPv6 header at base: next header UDP, port 123; or a
// fragment header with offset 0 followed by UDP, port 123.
func (a *filterAsm) ipv6(base uint32) {
	frag := "frag6_" + strconv.Itoa(int(base))
	a.ins(bpf.LoadAbsolute{Off: base + 6, Size: 1})
	a.jeq(ipProtoFragment, frag, "")
	a.jeq(ipProtoUDP, "", "reject")
	a.ins(bpf.LoadAbsolute{Off: base + 40, Size: 2})
	a.jeq(ntpPort, "accept", "")
	a.ins(bpf.LoadAbsolute{Off: base + 42, Size: 2})
	a.jeq(ntpPort, "accept", "reject")
	a.label(frag)
	a.ins(bpf.LoadAbsolute{Off: base + 40, Size: 1})
	a.jeq(ipProtoUDP, "", "reject")
	a.ins(bpf.LoadAbsolute{Off: base + 42, Size: 2})
	a.jset(0xfff8, "reject", "")
	a.ins(bpf.LoadAbsolute{Off: base + 48, Size: 2})
	a.jeq(ntpPort, "accept", "")
	a.ins(bpf.LoadAbsolute{Off: base + 50, Size: 2})
	a.jeq(ntpPort, "accept", "reject")
}

// filterAsm is a tiny assembler with named jump targets ("" = next).
type filterAsm struct {
	prog   []bpf.Instruction
	labels map[string]int
	jumps  []filterJump
}

type filterJump struct {
	at          int
	tTrue, tFal string
}

func (a *filterAsm) ins(i bpf.Instruction) { a.prog = append(a.prog, i) }

func (a *filterAsm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *filterAsm) jeq(v uint32, t, f string) {
	a.jumps = append(a.jumps, filterJump{len(a.prog), t, f})
	a.ins(bpf.JumpIf{Cond: bpf.JumpEqual, Val: v})
}

func (a *filterAsm) jset(v uint32, t, f string) {
	a.jumps = append(a.jumps, filterJump{len(a.prog), t, f})
	a.ins(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: v})
}

func (a *filterAsm) jmp(t string) {
	a.jumps = append(a.jumps, filterJump{len(a.prog), t, ""})
	a.ins(bpf.Jump{})
}

func (a *filterAsm) assemble() ([]bpf.Instruction, error) {
	skip := func(from int, to string) (int, error) {
		if to == "" {
			return 0, nil
		}
		at, ok := a.labels[to]
		if !ok || at <= from {
			return 0, errors.New("ntp: bad filter label " + to)
		}
		return at - from - 1, nil
	}
	for _, j := range a.jumps {
		t, err := skip(j.at, j.tTrue)
		if err != nil {
			return nil, err
		}
		f, err := skip(j.at, j.tFal)
		if err != nil {
			return nil, err
		}
		switch ins := a.prog[j.at].(type) {
		case bpf.JumpIf:
			if t > 255 || f > 255 {
				return nil, errors.New("ntp: filter jump too long")
			}
			ins.SkipTrue, ins.SkipFalse = uint8(t), uint8(f)
			a.prog[j.at] = ins
		case bpf.Jump:
			ins.Skip = uint32(t)
			a.prog[j.at] = ins
		}
	}
	return a.prog, nil
}

// Frame decoding errors.
var (
	errFrameShort = errors.New("ntp: frame too short")
	errFrameProto = errors.New("ntp: not a UDP datagram we read")
	// errFrameFragment: the first fragment of a fragmented UDP datagram;
	// DecodeFrame returns its source and destination with it.
	errFrameFragment = errors.New("ntp: IP fragment")
)

// DecodeFrame finds the UDP payload, source and destination of a frame
// that the capture filter passed. The payload is cut to the UDP length
// (Ethernet pads short frames). A first fragment of a fragmented datagram
// is errFrameFragment, with src and dst; fragments are not reassembled.
// It does not allocate.
func DecodeFrame(link LinkType, frame []byte) (payload []byte, src, dst netip.AddrPort, err error) {
	ip := frame
	if link == LinkEthernet {
		if len(frame) < 14 {
			return nil, src, dst, errFrameShort
		}
		off := 12
		for tags := 0; ; tags++ {
			if len(frame) < off+2 {
				return nil, src, dst, errFrameShort
			}
			et := binary.BigEndian.Uint16(frame[off:])
			if (et == etherTypeVLAN || et == etherTypeQinQ || et == etherTypeQinQ91) && tags < 2 {
				off += 4
				continue
			}
			if et != etherTypeIPv4 && et != etherTypeIPv6 {
				return nil, src, dst, errFrameProto
			}
			break
		}
		ip = frame[off+2:]
	}
	var udp []byte
	var sa, da netip.Addr
	if len(ip) < 1 {
		return nil, src, dst, errFrameShort
	}
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return nil, src, dst, errFrameShort
		}
		ihl := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		frag := binary.BigEndian.Uint16(ip[6:])
		if ihl < 20 || total < ihl || ip[9] != ipProtoUDP || frag&0x1fff != 0 {
			return nil, src, dst, errFrameProto
		}
		if total > len(ip) {
			return nil, src, dst, errFrameShort
		}
		sa, da = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		udp = ip[ihl:total]
		if frag&0x2000 != 0 { // more fragments: the first of several
			return fragmentPorts(udp, sa, da)
		}
	case 6:
		if len(ip) < 40 {
			return nil, src, dst, errFrameShort
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if ip[6] != ipProtoUDP && ip[6] != ipProtoFragment {
			return nil, src, dst, errFrameProto
		}
		if 40+plen > len(ip) {
			return nil, src, dst, errFrameShort
		}
		sa, da = netip.AddrFrom16([16]byte(ip[8:24])).Unmap(), netip.AddrFrom16([16]byte(ip[24:40])).Unmap()
		udp = ip[40 : 40+plen]
		if ip[6] == ipProtoFragment {
			// Fragment header: next header, reserved, offset and M flag.
			if len(udp) < 8 {
				return nil, src, dst, errFrameShort
			}
			if udp[0] != ipProtoUDP || binary.BigEndian.Uint16(udp[2:])&0xfff8 != 0 {
				return nil, src, dst, errFrameProto
			}
			if binary.BigEndian.Uint16(udp[2:])&1 != 0 {
				return fragmentPorts(udp[8:], sa, da)
			}
			udp = udp[8:] // an atomic fragment: the whole datagram
		}
	default:
		return nil, src, dst, errFrameProto
	}
	if len(udp) < 8 {
		return nil, src, dst, errFrameShort
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < 8 || ulen > len(udp) {
		return nil, src, dst, errFrameShort
	}
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(udp[0:]))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(udp[2:]))
	return udp[8:ulen], src, dst, nil
}

// fragmentPorts returns errFrameFragment with the source and destination
// of a first fragment whose UDP header starts udp.
func fragmentPorts(udp []byte, sa, da netip.Addr) (payload []byte, src, dst netip.AddrPort, err error) {
	if len(udp) < 8 {
		return nil, src, dst, errFrameShort
	}
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(udp[0:]))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(udp[2:]))
	return nil, src, dst, errFrameFragment
}
