package ntp

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/log"
	"go.uber.org/goleak"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type collector struct {
	mu   sync.Mutex
	obs  []Observation
	seen chan struct{}
}

func newCollector() *collector { return &collector{seen: make(chan struct{}, 1<<16)} }

func (c *collector) Observe(o *Observation) {
	c.mu.Lock()
	c.obs = append(c.obs, *o)
	c.mu.Unlock()
	c.seen <- struct{}{}
}

func (c *collector) wait(t *testing.T, n int) []Observation {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-c.seen:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d observations", i, n)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Observation(nil), c.obs...)
}

func startServer(t *testing.T, addrs []string, readers int) (*Server, *collector) {
	t.Helper()
	clock, err := NewHostClock(ClockSyncAssume, 2, DefaultRefID)
	if err != nil {
		t.Fatal(err)
	}
	table := NewClientTable(100)
	col := newCollector()
	srv := NewServer(ServerConfig{ListenAddresses: addrs, Readers: readers}, NewResponder(table, clock, RateLimit{}, nil), col, log.NewNopLogger())
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(t.Context()) }()
	t.Cleanup(func() {
		srv.Shutdown()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, col
}

func exchangeUDP(t *testing.T, to netip.AddrPort, req []byte) []byte {
	t.Helper()
	return exchangeUDPTimeout(t, to, req, 2*time.Second)
}

func exchangeUDPTimeout(t *testing.T, to netip.AddrPort, req []byte, timeout time.Duration) []byte {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestServerLoopback(t *testing.T) {
	srv, col := startServer(t, []string{"127.0.0.1:0"}, 1)
	addr := srv.Addrs()[0]
	before := time.Now()
	reply := exchangeUDP(t, addr, request(Header{Version: 4, Mode: ModeClient, Poll: 6, Precision: 32, Transmit: 0xabcdef}))
	after := time.Now()
	var h Header
	if err := DecodeHeader(reply, &h); err != nil {
		t.Fatalf("reply: %v", err)
	}
	if h.Mode != ModeServer || h.Origin != 0xabcdef || h.Stratum != 2 || len(reply) != HeaderLength {
		t.Fatalf("reply %+v", h)
	}
	t2 := h.Receive.Time(before)
	t3 := h.Transmit.Time(before)
	if t2.Before(before.Add(-time.Millisecond)) || t3.After(after.Add(time.Millisecond)) || t3.Before(t2) {
		t.Fatalf("T2 %v T3 %v outside [%v, %v]", t2, t3, before, after)
	}
	obs := col.wait(t, 1)
	if obs[0].Local.Addr() != netip.MustParseAddr("127.0.0.1") || obs[0].Implementation != ImplChrony || obs[0].Drop != DropNone {
		t.Fatalf("observation %+v", obs[0])
	}
	if obs[0].Processing <= 0 || obs[0].Processing > 100*time.Millisecond {
		t.Fatalf("processing %v", obs[0].Processing)
	}
}

// TestServerWildcardSourceAddress checks that a reply on a wildcard
// socket leaves from the address the request was sent to, and that the
// observation names it.
func TestServerWildcardSourceAddress(t *testing.T) {
	srv, col := startServer(t, []string{":0"}, 1)
	port := srv.Addrs()[0].Port()
	for i, dst := range []string{"127.0.0.1", "127.0.0.2", "127.1.2.3", "::1"} {
		to := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
		// DialUDP connects: a reply from any other source is discarded.
		reply := exchangeUDP(t, to, request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(i + 1)}))
		if len(reply) != HeaderLength {
			t.Fatalf("%s: no reply from the right source address", dst)
		}
		obs := col.wait(t, 1)
		if got := obs[len(obs)-1].Local.Addr(); got != netip.MustParseAddr(dst) {
			t.Fatalf("observation local address %v, want %v", got, dst)
		}
	}
}

func TestServerNoReplyToControlAndShort(t *testing.T) {
	srv, col := startServer(t, []string{"127.0.0.1:0"}, 2)
	addr := srv.Addrs()[0]
	monlist := []byte{0x17, 0x00, 0x03, 0x2a, 0, 0, 0, 0}       // ntpdc monlist probe (mode 7)
	readvar := []byte{0x16, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0} // ntpq readvar (mode 6)
	for _, req := range [][]byte{monlist, readvar, make([]byte, 47)} {
		if reply := exchangeUDPTimeout(t, addr, req, 300*time.Millisecond); reply != nil {
			t.Fatalf("request %x answered with %x", req, reply)
		}
	}
	obs := col.wait(t, 3)
	want := map[DropReason]bool{DropPrivate: true, DropControl: true, DropTooShort: true}
	for _, o := range obs {
		if !want[o.Drop] {
			t.Fatalf("unexpected drop %v", o.Drop)
		}
	}
}

func TestServerPortBusy(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	clock, _ := NewHostClock(ClockSyncAssume, 2, DefaultRefID)
	table := NewClientTable(10)
	srv := NewServer(ServerConfig{ListenAddresses: []string{pc.LocalAddr().String()}}, NewResponder(table, clock, RateLimit{}, nil), nil, log.NewNopLogger())
	err = srv.Listen()
	var le *ListenError
	if !errors.As(err, &le) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"already in use", "ss -ulnp", "port 0", "--ntp.listen-address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q: %s", want, err)
		}
	}
}

// TestServerPermissionDenied binds port 123 without privilege. As root it
// re-runs itself as user nobody, so it runs in CI too.
func TestServerPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		peers.RerunAsNobody(t, "TestServerPermissionDenied")
		return
	}
	clock, _ := NewHostClock(ClockSyncAssume, 2, DefaultRefID)
	table := NewClientTable(10)
	srv := NewServer(ServerConfig{ListenAddresses: []string{"127.0.0.1:123"}}, NewResponder(table, clock, RateLimit{}, nil), nil, log.NewNopLogger())
	err := srv.Listen()
	if err == nil || !strings.Contains(err.Error(), "CAP_NET_BIND_SERVICE") {
		t.Fatalf("err = %v", err)
	}
}
