package exporter

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ntpexp/ntpexp/ntp"
)

// seriesClients returns the client label values of a family.
func seriesClients(t *testing.T, g prometheus.Gatherer, name string) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	if mf := gatherFamily(t, g, name); mf != nil {
		for _, m := range mf.GetMetric() {
			got[labelValue(m, "client")] = true
		}
	}
	return got
}

func TestPerClientSeriesBounded(t *testing.T) {
	const (
		maxClients = 256
		distinct   = 10_000
	)
	watch := []netip.Prefix{
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("::ffff:203.0.113.0/120"), // IPv4-mapped form of 203.0.113.0/24
		netip.MustParsePrefix("2001:db8:feed::/48"),
	}
	watched := []string{"198.51.100.7", "203.0.113.9", "2001:db8:feed::1"}

	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, nil, MetricsConfig{MaxClients: maxClients, ClientMinIdle: -1, Watch: watch, MaxWatchedClients: 8})
	observe := func(addr netip.Addr, i int) {
		o := answered(4, "192.0.2.1:123")
		o.Client = netip.AddrPortFrom(addr, 123)
		o.Received = t0.Add(time.Duration(i) * time.Millisecond)
		o.Method, o.Offset, o.Delay = ntp.MethodExchange, time.Duration(i)*time.Microsecond, time.Millisecond
		m.Observe(&o)
	}
	for i, w := range watched {
		observe(netip.MustParseAddr(w), i)
	}
	for i := range distinct {
		observe(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), i)
	}

	families := []string{
		"ntpexp_client_requests_total", "ntpexp_client_clock_offset_seconds",
		"ntpexp_client_round_trip_delay_seconds", "ntpexp_client_last_offset_seconds",
	}
	for _, name := range families {
		got := seriesClients(t, reg, name)
		if len(got) != maxClients+len(watched) {
			t.Errorf("%s: %d clients carry series, want %d", name, len(got), maxClients+len(watched))
		}
		for _, w := range watched {
			if !got[w] {
				t.Errorf("%s: watched client %s lost its series", name, w)
			}
		}
		// The most recent clients keep theirs, the older ones were deleted.
		for _, c := range []string{"10.1.39.15" /* i = 9999 */, "10.1.38.16" /* i = 9744, the oldest kept */} {
			if !got[c] {
				t.Errorf("%s: recent client %s has no series", name, c)
			}
		}
		for _, c := range []string{"10.1.0.0", "10.1.38.15" /* i = 9743 */} {
			if got[c] {
				t.Errorf("%s: evicted client %s still has series", name, c)
			}
		}
	}
	if n, err := testutil.GatherAndCount(reg, "ntpexp_client_requests_total"); err != nil || n != maxClients+len(watched) {
		t.Errorf("GatherAndCount = %d, %v", n, err)
	}
	if got := gatherFamily(t, reg, "ntpexp_client_series_clients").GetMetric()[0].GetGauge().GetValue(); got != maxClients+float64(len(watched)) {
		t.Errorf("ntpexp_client_series_clients = %g, want %d", got, maxClients+len(watched))
	}
	// A returning client re-enters with fresh series.
	observe(netip.MustParseAddr("10.1.0.0"), 0)
	if got := seriesClients(t, reg, "ntpexp_client_requests_total"); !got["10.1.0.0"] || got["10.1.38.16"] {
		t.Error("returning client did not replace the least recently used one")
	}
}

func TestWatchedClientsBounded(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, nil, MetricsConfig{
		MaxClients:        -1, // only watched clients
		Watch:             []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		MaxWatchedClients: 3,
	})
	for i := range 10 {
		o := answered(4, "192.0.2.1:123")
		o.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 123)
		m.Observe(&o)
	}
	o := answered(4, "192.0.2.1:123") // not watched
	m.Observe(&o)
	got := seriesClients(t, reg, "ntpexp_client_requests_total")
	if len(got) != 3 || !got["10.0.0.0"] || !got["10.0.0.2"] {
		t.Errorf("series for %v, want the first three watched clients", got)
	}
}

func TestLRUOrder(t *testing.T) {
	tr := newClientTracker(3, 0, -1, nil, 0)
	addr := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, i}) }
	for i := range byte(3) {
		tr.get(addr(i), 0)
	}
	tr.get(addr(0), 0) // 0 becomes the most recent; 1 is now the oldest
	tr.get(addr(3), 0) // evicts 1
	for i, want := range []bool{true, false, true, true} {
		if _, ok := tr.byAddr[addr(byte(i))]; ok != want {
			t.Errorf("client %d tracked = %v, want %v", i, ok, want)
		}
	}
	var order []netip.Addr
	for cs := tr.lru.next; cs != &tr.lru; cs = cs.next {
		order = append(order, cs.addr)
	}
	if want := []netip.Addr{addr(3), addr(0), addr(2)}; len(order) != 3 || order[0] != want[0] || order[1] != want[1] || order[2] != want[2] {
		t.Errorf("LRU order %v, want %v", order, want)
	}
	if tr.lruLen != 3 || tr.total.Load() != 3 {
		t.Errorf("lruLen %d total %d, want 3 3", tr.lruLen, tr.total.Load())
	}
}

func TestClientAdmission(t *testing.T) {
	const idle = 5 * time.Minute
	addr := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, i}) }
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	tests := []struct {
		name string
		// each step: client, time; want: whether it gets series
		steps []struct {
			c    byte
			at   time.Duration
			want bool
		}
	}{
		{
			name: "busy places are kept",
			steps: []struct {
				c    byte
				at   time.Duration
				want bool
			}{
				{1, 0, true}, {2, time.Minute, true},
				{3, 2 * time.Minute, false},         // oldest (1) idle 2m < 5m
				{1, 3 * time.Minute, true},          // refreshes 1; 2 is now the oldest
				{3, 6 * time.Minute, true},          // 2 idle 5m: replaced
				{2, 6*time.Minute + 1, false},       // 1 idle 3m
				{4, 9*time.Minute + 1, true},        // 1 idle 6m: replaced
				{5, 9*time.Minute + 2, false},       // 3 idle 3m
				{5, 9*time.Minute + 2 - idle, true}, // clock stepped back: admitted
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newClientTracker(2, 0, idle, nil, 0)
			for i, s := range tc.steps {
				if got := tr.get(addr(s.c), at(s.at)) != nil; got != s.want {
					t.Errorf("step %d: client %d at %v has series = %v, want %v", i, s.c, s.at, got, s.want)
				}
				if tr.lruLen > 2 {
					t.Fatalf("step %d: %d clients tracked", i, tr.lruLen)
				}
			}
		})
	}
}
