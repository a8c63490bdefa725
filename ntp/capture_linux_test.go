package ntp

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"golang.org/x/sys/unix"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// enterPrivateNetns moves the calling test's thread into a new network
// namespace with lo up, so that server and capture sockets on port 123
// collide with nothing else (the e2e suite uses 127.0.0.1:123 at the same
// time). The thread is never unlocked: it ends with the test.
func enterPrivateNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		msg := "SKIPPED LOUDLY: passive capture needs root (a private network namespace and CAP_NET_RAW); CI runs this as root"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("bringing lo up: %v", err)
	}
}

// TestCaptureMatchesServerMode runs ntpexp's own server mode as "the
// daemon" in a private namespace and captures its traffic on lo: every
// passive observation must agree with the server's own.
// loInjector returns a packet socket, closed when the test ends, and the
// address that sends frames on lo with it.
func loInjector(t *testing.T) (int, *unix.SockaddrLinklayer) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	ifr, _ := unix.NewIfreq("lo")
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		t.Fatal(err)
	}
	return fd, &unix.SockaddrLinklayer{Ifindex: int(ifr.Uint32()), Halen: 6}
}

// runCapture opens a capture with cfg for p and runs it; stop ends it
// (Shutdown) and returns Run's error.
func runCapture(t *testing.T, p *Passive, cfg CaptureConfig) (stop func() error) {
	t.Helper()
	capt := NewCapture(cfg, p, log.NewNopLogger())
	if err := capt.Open(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- capt.Run(ctx) }()
	return func() error {
		cancel()
		capt.Shutdown()
		return <-done
	}
}

func TestCaptureMatchesServerMode(t *testing.T) {
	enterPrivateNetns(t)
	srv, served := startServer(t, []string{"127.0.0.1:123", "[::1]:123"}, 1)
	_ = srv

	seen := newCollector()
	p := NewPassive(PassiveConfig{ReplyTimeout: 500 * time.Millisecond}, NewClientTable(100), seen)
	stop := runCapture(t, p, CaptureConfig{Interfaces: []string{"lo"}, Sweep: 20 * time.Millisecond})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	const rounds = 4
	servers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:123"), netip.MustParseAddrPort("[::1]:123")}
	sent := 0
	for _, to := range servers {
		// ntpd-like: one socket, Origin/Receive echo the previous reply.
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			t.Fatal(err)
		}
		var prevT3, prevT4 Timestamp
		for range rounds {
			h := Header{Version: 4, Mode: ModeClient, Stratum: 3, Poll: 6, Precision: -20,
				Origin: prevT3, Receive: prevT4, Transmit: TimestampFromTime(time.Now().Add(300 * time.Millisecond))}
			reply := roundTrip(t, c, request(h))
			var rh Header
			if err := DecodeHeader(reply, &rh); err != nil {
				t.Fatal(err)
			}
			prevT3, prevT4 = rh.Transmit, TimestampFromTime(time.Now().Add(300*time.Millisecond))
			sent++
		}
		c.Close()
		// chrony-like: a new socket per request, random Transmit.
		for range rounds {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c, request(Header{Leap: LeapAlarm, Version: 4, Mode: ModeClient, Precision: 32, Transmit: Timestamp(rand.Uint64())}))
			c.Close()
			sent++
		}
	}
	// A request the server drops: mode 6.
	c, _ := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(servers[0]))
	c.Write(request(Header{Version: 2, Mode: ModeControl}))
	c.Close()
	sent++

	want := served.wait(t, sent)
	got := seen.wait(t, sent)
	byKey := map[string]Observation{}
	for _, o := range got {
		byKey[fmt.Sprintf("%v/%v/%x", o.Client, o.Local, o.Transmit)] = o
	}
	exchanges := 0
	for _, s := range want {
		o, ok := byKey[fmt.Sprintf("%v/%v/%x", s.Client, s.Local, s.Transmit)]
		if !ok {
			t.Errorf("no passive observation for %v → %v", s.Client, s.Local)
			continue
		}
		if s.Drop != DropNone {
			// Refused requests are recorded when captured, a little
			// before the server read them.
			if d := s.Received.Sub(o.Received); d < 0 || d > 50*time.Millisecond {
				t.Errorf("refused request captured %v before the server's T2", d)
			}
			o.Received = s.Received
		}
		sameObservation(t, s.Client.String(), o, s)
		if o.Method == MethodExchange {
			exchanges++
		}
	}
	if exchanges != 2*(rounds-1) {
		t.Errorf("%d exchange-method observations, want %d", exchanges, 2*(rounds-1))
	}
	cn := p.Counters()
	answered := uint64(sent - 1)
	// On lo every packet passes twice: as sent (outgoing) and as received.
	if cn.Matched != answered || cn.IgnoredOutgoingRequests != uint64(sent) || cn.IgnoredIncomingReplies != answered ||
		cn.Unmatched != 0 || cn.KernelDrops != 0 || cn.Pending != 0 {
		t.Errorf("counters %+v", cn)
	}
}

func roundTrip(t *testing.T, c *net.UDPConn, req []byte) []byte {
	t.Helper()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return buf[:n]
}

// TestCaptureCountsKernelDrops fills a small capture buffer before the
// capture reads it: the kernel's drops are counted and the requests whose
// replies may be among them are capture_lost, not unanswered.
func TestCaptureCountsKernelDrops(t *testing.T) {
	enterPrivateNetns(t)
	_, served := startServer(t, []string{"127.0.0.1:123"}, 1)
	seen := newCollector()
	p := NewPassive(PassiveConfig{ReplyTimeout: 200 * time.Millisecond}, NewClientTable(100), seen)
	capt := NewCapture(CaptureConfig{Interfaces: []string{"lo"}, BufferSize: 1, Sweep: 20 * time.Millisecond}, p, log.NewNopLogger())
	if err := capt.Open(); err != nil {
		t.Fatal(err)
	}
	const n = 300
	c, _ := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:123")))
	for range n {
		c.Write(request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(rand.Uint64())}))
	}
	c.Close()
	served.wait(t, n)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- capt.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for p.Counters().Pending > 0 || p.Counters().KernelDrops == 0 {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	capt.Shutdown()
	<-done
	cn := p.Counters()
	if cn.KernelDrops == 0 {
		t.Fatalf("no kernel drops counted with a minimal buffer: %+v", cn)
	}
	if cn.Unanswered != 0 {
		t.Errorf("%d requests guessed unanswered despite capture loss: %+v", cn.Unanswered, cn)
	}
	t.Logf("captured %d requests, %d matched, %d lost, kernel drops %d", cn.Requests, cn.Matched, cn.Lost, cn.KernelDrops)
}

func TestCaptureErrors(t *testing.T) {
	enterPrivateNetns(t)
	p := NewPassive(PassiveConfig{}, NewClientTable(10), nil)
	err := NewCapture(CaptureConfig{Interfaces: []string{"nosuch0"}}, p, log.NewNopLogger()).Open()
	if err == nil || !strings.Contains(err.Error(), "no such interface") || !strings.Contains(err.Error(), "ip link") {
		t.Errorf("missing interface: %v", err)
	}
	err = NewCapture(CaptureConfig{}, p, log.NewNopLogger()).Open()
	if err == nil || !strings.Contains(err.Error(), "capture.interface") {
		t.Errorf("no interface: %v", err)
	}
}

// TestCapturePermissionDenied opens a capture without CAP_NET_RAW. As root
// it re-runs itself as user nobody, so it runs in CI too.
func TestCapturePermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		peers.RerunAsNobody(t, "TestCapturePermissionDenied")
		return
	}
	p := NewPassive(PassiveConfig{}, NewClientTable(10), nil)
	err := NewCapture(CaptureConfig{Interfaces: []string{"lo"}}, p, log.NewNopLogger()).Open()
	if err == nil || !strings.Contains(err.Error(), "CAP_NET_RAW") {
		t.Fatalf("err = %v", err)
	}
}

// TestCaptureVLANTagsInFrame injects Ethernet frames with 802.1Q and
// 802.1ad tags inside the frame on lo (this kernel has no VLAN devices):
// sent frames reach the capture as written, tags included, so the
// kernel runs the filter on tagged frames and the decoder reads them.
// The request's received copy has its tag moved to metadata by the
// kernel, as on a real VLAN interface; its sent copy is ignored as this
// host's own. Only the reply's sent copy, with both tags in the frame,
// can complete the request (the received one is ignored as a reply to
// this host).
func TestCaptureVLANTagsInFrame(t *testing.T) {
	enterPrivateNetns(t)
	seen := newCollector()
	p := NewPassive(PassiveConfig{ReplyTimeout: 300 * time.Millisecond}, NewClientTable(10), seen)
	stop := runCapture(t, p, CaptureConfig{Interfaces: []string{"lo"}, Sweep: 20 * time.Millisecond})
	defer stop()

	fd, to := loInjector(t)
	client := netip.MustParseAddrPort("127.0.0.2:40000")
	server := netip.MustParseAddrPort("127.0.0.1:123")
	t2 := TimestampFromTime(time.Now())
	req := request(Header{Version: 4, Mode: ModeClient, Transmit: 0x1122334455667788})
	rep := request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 0x1122334455667788, Receive: t2, Transmit: t2 + 1<<12})
	for _, f := range [][]byte{
		buildFrame(frameSpec{src: client, dst: server, vlans: []uint16{etherTypeVLAN}, payload: req}),
		buildFrame(frameSpec{src: server, dst: client, vlans: []uint16{etherTypeQinQ, etherTypeVLAN}, payload: rep}),
	} {
		clear(f[:12]) // lo's MAC address: received copies are PACKET_HOST
		if err := unix.Sendto(fd, f, 0, to); err != nil {
			t.Fatalf("injecting a frame on lo: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := seen.wait(t, 1)
	o := got[0]
	if o.Client != client || o.Local != server || o.Drop != DropNone || o.ServerTransmit != t2+1<<12 || o.Processing != (t2+1<<12).Sub(t2) {
		t.Errorf("observation from tagged frames: %+v", o)
	}
	if c := p.Counters(); c.Matched != 1 || c.Invalid != 0 || c.IgnoredOutgoingRequests != 1 || c.IgnoredIncomingReplies != 1 {
		t.Errorf("counters %+v", c)
	}
}

// slowConsumer costs time per observation, like a busy store would.
type slowConsumer struct{ d time.Duration }

func (s slowConsumer) Observe(*Observation) { time.Sleep(s.d) }

// TestCaptureShutdownUnderFlood: Shutdown returns promptly while frames
// keep arriving faster than they are handled.
func TestCaptureShutdownUnderFlood(t *testing.T) {
	enterPrivateNetns(t)
	p := NewPassive(PassiveConfig{}, NewClientTable(100), slowConsumer{20 * time.Microsecond})
	capt := NewCapture(CaptureConfig{Interfaces: []string{"lo"}}, p, log.NewNopLogger())
	if err := capt.Open(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- capt.Run(context.Background()) }()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	stopFlood := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 123}
		req := request(Header{Version: 4, Mode: ModeClient})
		for i := 0; ; i++ {
			select {
			case <-stopFlood:
				return
			default:
			}
			req[47] = byte(i)
			conn.WriteTo(req, to)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	capt.Shutdown()
	took := time.Since(start)
	close(stopFlood)
	<-flooded
	conn.Close()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if took > time.Second {
		t.Errorf("Shutdown took %v under a flood", took)
	}
	t.Logf("Shutdown under a flood took %v after %d requests", took, p.Counters().Requests)
}

// TestCaptureInterfaceRemoved: when the captured interface disappears,
// Run returns an error that says so (and serve exits, to be restarted).
func TestCaptureInterfaceRemoved(t *testing.T) {
	enterPrivateNetns(t)
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("iproute2 is needed: %v", err)
	}
	// Commands run from this thread inherit its network namespace.
	if out, err := exec.Command(ip, "link", "add", "vcap0", "type", "veth", "peer", "name", "vcap1").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v %s", err, out)
	}
	exec.Command(ip, "link", "set", "vcap0", "up").Run()
	exec.Command(ip, "link", "set", "vcap1", "up").Run()
	p := NewPassive(PassiveConfig{}, NewClientTable(10), nil)
	capt := NewCapture(CaptureConfig{Interfaces: []string{"vcap0"}}, p, log.NewNopLogger())
	if err := capt.Open(); err != nil {
		t.Fatal(err)
	}
	defer capt.Shutdown()
	done := make(chan error, 1)
	go func() { done <- capt.Run(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	if out, err := exec.Command(ip, "link", "del", "vcap0").CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v %s", err, out)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "vcap0") {
			t.Errorf("Run after the interface was removed: %v", err)
		}
		t.Logf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not notice the interface was removed")
	}
}

// TestCaptureDropWarningRateLimited: while the kernel keeps dropping
// frames, the sweep (every 100 ms) warns at most once per 10 s per
// interface, and the warnings add up to every frame dropped.
func TestCaptureDropWarningRateLimited(t *testing.T) {
	var buf strings.Builder
	p := NewPassive(PassiveConfig{}, NewClientTable(10), nil)
	c := NewCapture(CaptureConfig{}, p, log.NewLogfmtLogger(&buf))
	eth, vlan := &captureSocket{iface: "eth9"}, &captureSocket{iface: "eth9.10"}
	start := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).UnixNano()
	// 30 s of drops on both interfaces, then 20 s without.
	for i := range 500 {
		now := start + int64(i)*int64(100*time.Millisecond)
		n := uint64(0)
		if i < 300 {
			n = 7
		}
		c.noteDrops(eth, now, n)
		c.noteDrops(vlan, now, n/7)
	}
	dropped := map[string]uint64{}
	lines := map[string]int{}
	re := regexp.MustCompile(`interface=(\S+) dropped=(\d+)`)
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected log line %q", line)
		}
		n, _ := strconv.ParseUint(m[2], 10, 64)
		dropped[m[1]] += n
		lines[m[1]]++
	}
	for iface, want := range map[string]uint64{"eth9": 300 * 7, "eth9.10": 300} {
		// At the first drop, then every 10 s: 0, 10, 20 and 30 s (the
		// rest of the drops up to 29.9 s).
		if lines[iface] != 4 || dropped[iface] != want {
			t.Errorf("%s: %d warnings reporting %d frames dropped; want 4 reporting %d\n%s", iface, lines[iface], dropped[iface], want, buf.String())
		}
	}
	if got := p.Counters().KernelDrops; got != 300*8 {
		t.Errorf("kernel drops %d, want %d", got, 300*8)
	}
}

// TestCaptureOtherHostFrames injects frames addressed to another MAC
// address on lo: their received copies are PACKET_OTHERHOST (what a
// promiscuous interface shows). They are ignored unless the capture is
// on a mirror port.
func TestCaptureOtherHostFrames(t *testing.T) {
	enterPrivateNetns(t)
	fd, to := loInjector(t)
	for _, mirror := range []bool{false, true} {
		p := NewPassive(PassiveConfig{ReplyTimeout: time.Minute, Mirror: mirror}, NewClientTable(10), nil)
		stop := runCapture(t, p, CaptureConfig{Interfaces: []string{"lo"}, Sweep: 20 * time.Millisecond})
		// buildFrame's destination MAC is 02:00:00:00:00:01, not lo's.
		f := buildFrame(frameSpec{src: netip.MustParseAddrPort("192.0.2.10:40000"), dst: netip.MustParseAddrPort("192.0.2.1:123"),
			payload: request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(rand.Uint64())})})
		if err := unix.Sendto(fd, f, 0, to); err != nil {
			t.Fatalf("injecting a frame on lo: %v", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for c := p.Counters(); c.IgnoredOutgoingRequests == 0 || c.IgnoredOtherHost+c.Requests == 0; c = p.Counters() {
			if time.Now().After(deadline) {
				t.Fatalf("mirror=%v: frames not seen: %+v", mirror, c)
			}
			time.Sleep(10 * time.Millisecond)
		}
		stop()
		c := p.Counters()
		// The sent copy is this host's own request either way.
		if c.IgnoredOutgoingRequests != 1 {
			t.Errorf("mirror=%v: counters %+v", mirror, c)
		}
		if !mirror && (c.IgnoredOtherHost != 1 || c.Requests != 0) {
			t.Errorf("other-host frame recorded without capture.mirror: %+v", c)
		}
		if mirror && (c.IgnoredOtherHost != 0 || c.Requests != 1) {
			t.Errorf("other-host frame not recorded with capture.mirror: %+v", c)
		}
	}
}

// TestCaptureUnreadableRepliesAreGaps: a "daemon" on 127.0.0.1:123 and
// [::1]:123 answers with datagrams the capture cannot read, fragmented
// (lo's MTU lowered to 1280) or longer than the capture buffer: the
// requests become capture_lost, not unanswered. A request left without
// any answer, next to garbage, is still unanswered.
func TestCaptureUnreadableRepliesAreGaps(t *testing.T) {
	enterPrivateNetns(t)
	setMTU := func(mtu uint32) {
		t.Helper()
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		ifr, _ := unix.NewIfreq("lo")
		ifr.SetUint32(mtu)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
			t.Fatalf("setting lo's MTU to %d: %v", mtu, err)
		}
	}
	p := NewPassive(PassiveConfig{ReplyTimeout: 200 * time.Millisecond}, NewClientTable(10), nil)
	stop := runCapture(t, p, CaptureConfig{Interfaces: []string{"lo"}, Sweep: 20 * time.Millisecond})
	defer stop()
	// exchange sends a request from a new socket to the daemon, which
	// answers with size bytes (0: not at all), and waits until the
	// request has been recorded one way or the other.
	exchange := func(to string, size int) PassiveCounters {
		t.Helper()
		daemon, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
		if err != nil {
			t.Fatal(err)
		}
		defer daemon.Close()
		c, err := net.DialUDP("udp", nil, daemon.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		before := p.Counters()
		tx := Timestamp(rand.Uint64())
		c.Write(request(Header{Version: 4, Mode: ModeClient, Transmit: tx}))
		buf := make([]byte, 512)
		daemon.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, from, err := daemon.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if size > 0 {
			rep := make([]byte, size)
			copy(rep, request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: tx, Receive: TimestampFromTime(time.Now()), Transmit: TimestampFromTime(time.Now())}))
			if _, err := daemon.WriteToUDPAddrPort(rep, from); err != nil {
				t.Fatal(err)
			}
		} else {
			c.Write([]byte{0x17, 0, 3, 0x2a}) // garbage: mode 7, too short
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			cn := p.Counters()
			if cn.Requests > before.Requests && cn.Pending == 0 && cn.Lost+cn.Unanswered > before.Lost+before.Unanswered {
				return cn
			}
			if time.Now().After(deadline) {
				t.Fatalf("request to %s not recorded: %+v", to, cn)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	cn := exchange("127.0.0.1:123", 0)
	if cn.Unanswered != 1 || cn.Lost != 0 {
		t.Fatalf("unanswered request next to garbage: %+v", cn)
	}
	setMTU(1280)
	cn = exchange("127.0.0.1:123", 1800)
	if cn.Lost != 1 || cn.Unanswered != 1 || cn.Fragments == 0 {
		t.Errorf("IPv4 reply in fragments: %+v", cn)
	}
	cn = exchange("[::1]:123", 1800)
	if cn.Lost != 2 || cn.Unanswered != 1 || cn.Fragments < 2 {
		t.Errorf("IPv6 reply in fragments: %+v", cn)
	}
	setMTU(65536)
	cn = exchange("127.0.0.1:123", 4000)
	if cn.Lost != 3 || cn.Unanswered != 1 || cn.Truncated == 0 {
		t.Errorf("reply longer than the capture buffer: %+v", cn)
	}
	if cn.Matched != 0 || cn.Unmatched != 0 || cn.KernelDrops != 0 {
		t.Errorf("counters %+v", cn)
	}
	t.Logf("counters %+v", cn)
}
