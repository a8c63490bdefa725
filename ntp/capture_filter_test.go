package ntp

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// frameSpec builds test frames: IPv4 or IPv6, UDP (or another protocol),
// optional VLAN tags, optional Ethernet header.
type frameSpec struct {
	src, dst netip.AddrPort
	proto    uint8
	vlans    []uint16 // tag protocol IDs, outermost first
	raw      bool     // no Ethernet header (tun)
	fragOff  uint16   // IPv4 fragment offset field (in 8-byte units)
	ext6     bool     // IPv6 hop-by-hop header before UDP
	frag6    bool     // IPv6 fragment header before UDP
	frag6Off uint16   // its offset and M flag field
	pad      int      // Ethernet padding after the IP packet
	payload  []byte
}

func buildFrame(s frameSpec) []byte {
	if s.proto == 0 {
		s.proto = ipProtoUDP
	}
	udp := make([]byte, 8+len(s.payload))
	binary.BigEndian.PutUint16(udp[0:], s.src.Port())
	binary.BigEndian.PutUint16(udp[2:], s.dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], s.payload)
	var ip []byte
	etherType := uint16(etherTypeIPv4)
	if s.src.Addr().Is4() {
		ip = make([]byte, 20, 20+len(udp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		binary.BigEndian.PutUint16(ip[6:], s.fragOff)
		ip[8], ip[9] = 64, s.proto
		a, b := s.src.Addr().As4(), s.dst.Addr().As4()
		copy(ip[12:], a[:])
		copy(ip[16:], b[:])
	} else {
		etherType = etherTypeIPv6
		ip = make([]byte, 40, 48+len(udp))
		ip[0] = 0x60
		next := s.proto
		if s.ext6 {
			next = 0 // hop-by-hop
		}
		if s.frag6 {
			next = ipProtoFragment
		}
		ip[6], ip[7] = next, 64
		a, b := s.src.Addr().As16(), s.dst.Addr().As16()
		copy(ip[8:], a[:])
		copy(ip[24:], b[:])
		if s.ext6 {
			ip = append(ip, s.proto, 0, 0, 0, 0, 0, 0, 0)
		}
		if s.frag6 {
			ip = append(ip, s.proto, 0, byte(s.frag6Off>>8), byte(s.frag6Off), 0, 0, 0x12, 0x34)
		}
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40+len(udp)))
	}
	ip = append(ip, udp...)
	if s.raw {
		return ip
	}
	f := make([]byte, 12, 14+4*len(s.vlans)+len(ip)+s.pad)
	copy(f, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2})
	for i, tpid := range s.vlans {
		f = binary.BigEndian.AppendUint16(f, tpid)
		f = binary.BigEndian.AppendUint16(f, uint16(100+i))
	}
	f = binary.BigEndian.AppendUint16(f, etherType)
	f = append(f, ip...)
	return append(f, make([]byte, s.pad)...)
}

func TestCaptureFilterAndDecode(t *testing.T) {
	req := request(Header{Version: 4, Mode: ModeClient, Transmit: 0x0102030405060708})
	c4 := netip.MustParseAddrPort("192.0.2.10:40000")
	s4 := netip.MustParseAddrPort("192.0.2.1:123")
	c6 := netip.MustParseAddrPort("[2001:db8::10]:40000")
	s6 := netip.MustParseAddrPort("[2001:db8::1]:123")
	other := netip.MustParseAddrPort("192.0.2.1:53")
	tests := []struct {
		name   string
		spec   frameSpec
		pass   bool // the filter passes it
		decode bool // and DecodeFrame reads it
	}{
		{"ipv4 request", frameSpec{src: c4, dst: s4, payload: req}, true, true},
		{"ipv4 reply", frameSpec{src: s4, dst: c4, payload: req}, true, true},
		{"ipv6 request", frameSpec{src: c6, dst: s6, payload: req}, true, true},
		{"ipv6 reply", frameSpec{src: s6, dst: c6, payload: req}, true, true},
		{"802.1Q tag", frameSpec{src: c4, dst: s4, vlans: []uint16{etherTypeVLAN}, payload: req}, true, true},
		{"QinQ tags", frameSpec{src: c6, dst: s6, vlans: []uint16{etherTypeQinQ, etherTypeVLAN}, payload: req}, true, true},
		{"three tags", frameSpec{src: c4, dst: s4, vlans: []uint16{etherTypeQinQ, etherTypeVLAN, etherTypeVLAN}, payload: req}, false, false},
		{"raw ip (tun)", frameSpec{src: c4, dst: s4, raw: true, payload: req}, true, true},
		{"raw ipv6 (wireguard)", frameSpec{src: c6, dst: s6, raw: true, payload: req}, true, true},
		{"padded short frame", frameSpec{src: c4, dst: s4, payload: []byte{0x23}, pad: 30}, true, true},
		{"dns", frameSpec{src: c4, dst: other, payload: req}, false, true},
		{"tcp port 123", frameSpec{src: c4, dst: s4, proto: 6, payload: req}, false, false},
		{"later fragment", frameSpec{src: c4, dst: s4, fragOff: 185, payload: req}, false, false},
		{"ipv6 extension header", frameSpec{src: c6, dst: s6, ext6: true, payload: req}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			link, frame, n := runFilter(t, tc.spec)
			if pass := n > 0; pass != tc.pass {
				t.Fatalf("filter passed=%v, want %v", pass, tc.pass)
			}
			if tc.pass && n < len(frame) {
				t.Fatalf("filter keeps %d of %d bytes", n, len(frame))
			}
			payload, src, dst, err := DecodeFrame(link, frame)
			if (err == nil) != tc.decode {
				t.Fatalf("decode err = %v, want ok=%v", err, tc.decode)
			}
			if err != nil {
				return
			}
			if src != tc.spec.src || dst != tc.spec.dst || string(payload) != string(tc.spec.payload) {
				t.Fatalf("decoded %v → %v %x, want %v → %v %x", src, dst, payload, tc.spec.src, tc.spec.dst, tc.spec.payload)
			}
		})
	}
}

// runFilter builds spec's frame and runs the capture filter of its link
// type on it in x/net/bpf's virtual machine, returning the bytes it keeps.
func runFilter(t *testing.T, spec frameSpec) (link LinkType, frame []byte, n int) {
	t.Helper()
	link = LinkEthernet
	if spec.raw {
		link = LinkRawIP
	}
	raw, err := CaptureFilter(link)
	if err != nil {
		t.Fatal(err)
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	frame = buildFrame(spec)
	if n, err = vm.Run(frame); err != nil {
		t.Fatal(err)
	}
	return link, frame, n
}

// TestCaptureFilterFragments: first fragments of NTP datagrams pass the
// filter and are reported as fragments, with their addresses and ports,
// so that a reply in fragments counts as a capture gap; later fragments
// (no UDP header) are rejected; an IPv6 atomic fragment is a whole
// datagram and is read.
func TestCaptureFilterFragments(t *testing.T) {
	req := request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 0x0102030405060708})
	s4, c4 := netip.MustParseAddrPort("192.0.2.1:123"), netip.MustParseAddrPort("192.0.2.10:40000")
	s6, c6 := netip.MustParseAddrPort("[2001:db8::1]:123"), netip.MustParseAddrPort("[2001:db8::10]:40000")
	dns := netip.MustParseAddrPort("192.0.2.1:53")
	tests := []struct {
		name       string
		spec       frameSpec
		pass, frag bool
	}{
		{"ipv4 first fragment", frameSpec{src: s4, dst: c4, fragOff: 0x2000, payload: req}, true, true},
		{"ipv4 first fragment, tagged", frameSpec{src: s4, dst: c4, fragOff: 0x2000, vlans: []uint16{etherTypeVLAN}, payload: req}, true, true},
		{"ipv4 later fragment", frameSpec{src: s4, dst: c4, fragOff: 0x2000 | 185, payload: req}, false, false},
		{"ipv4 last fragment", frameSpec{src: s4, dst: c4, fragOff: 185, payload: req}, false, false},
		{"ipv4 dns first fragment", frameSpec{src: dns, dst: c4, fragOff: 0x2000, payload: req}, false, true},
		{"ipv6 first fragment", frameSpec{src: s6, dst: c6, frag6: true, frag6Off: 1, payload: req}, true, true},
		{"ipv6 first fragment, raw", frameSpec{src: s6, dst: c6, raw: true, frag6: true, frag6Off: 1, payload: req}, true, true},
		{"ipv6 later fragment", frameSpec{src: s6, dst: c6, frag6: true, frag6Off: 185 << 3, payload: req}, false, false},
		{"ipv6 atomic fragment", frameSpec{src: s6, dst: c6, frag6: true, payload: req}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			link, frame, n := runFilter(t, tc.spec)
			if pass := n > 0; pass != tc.pass {
				t.Fatalf("filter passed=%v, want %v", pass, tc.pass)
			}
			if !tc.pass && !tc.frag {
				return
			}
			payload, src, dst, err := DecodeFrame(link, frame)
			if tc.frag {
				if err != errFrameFragment || src != tc.spec.src || dst != tc.spec.dst || payload != nil {
					t.Fatalf("decoded %v → %v, %d bytes, err %v; want a fragment %v → %v", src, dst, len(payload), err, tc.spec.src, tc.spec.dst)
				}
				return
			}
			if err != nil || src != tc.spec.src || string(payload) != string(req) {
				t.Fatalf("decoded %v → %v %x, err %v", src, dst, payload, err)
			}
		})
	}
}

// TestDecodeFrameNeverPanics feeds every prefix of real frames and
// corrupts their length fields.
func TestDecodeFrameNeverPanics(t *testing.T) {
	req := request(Header{Version: 4, Mode: ModeClient})
	for _, s := range []frameSpec{
		{src: clientA, dst: local, payload: req},
		{src: netip.MustParseAddrPort("[2001:db8::10]:40000"), dst: netip.MustParseAddrPort("[2001:db8::1]:123"), vlans: []uint16{etherTypeVLAN}, payload: req},
	} {
		frame := buildFrame(s)
		for n := 0; n <= len(frame); n++ {
			DecodeFrame(LinkEthernet, frame[:n])
			DecodeFrame(LinkRawIP, frame[:n])
		}
		for i := range frame {
			f := append([]byte(nil), frame...)
			f[i] = 0xff
			DecodeFrame(LinkEthernet, f)
			f[i] = 0
			DecodeFrame(LinkEthernet, f)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	req := request(Header{Version: 4, Mode: ModeClient})
	f.Add(buildFrame(frameSpec{src: clientA, dst: local, payload: req}), false)
	f.Add(buildFrame(frameSpec{src: clientA, dst: local, raw: true, payload: req}), true)
	f.Fuzz(func(t *testing.T, frame []byte, raw bool) {
		link := LinkEthernet
		if raw {
			link = LinkRawIP
		}
		payload, _, _, err := DecodeFrame(link, frame)
		if err == nil && len(payload) > len(frame) {
			t.Fatal("payload longer than the frame")
		}
	})
}
