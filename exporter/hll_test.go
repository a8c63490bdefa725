package exporter

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ntpexp/ntpexp/ntp"
)

func TestHLLAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addrSets := map[string]func(i int) netip.Addr{
		"sequential IPv4": func(i int) netip.Addr {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(i))
			return netip.AddrFrom4(b)
		},
		"IPv6 /64 hosts": func(i int) netip.Addr {
			var b [16]byte
			copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8})
			binary.BigEndian.PutUint64(b[8:], uint64(i))
			return netip.AddrFrom16(b)
		},
		"random IPv6": func(int) netip.Addr {
			var b [16]byte
			binary.BigEndian.PutUint64(b[:8], rng.Uint64())
			binary.BigEndian.PutUint64(b[8:], rng.Uint64())
			return netip.AddrFrom16(b)
		},
	}
	for name, addr := range addrSets {
		for _, n := range []int{0, 1, 2, 10, 100, 1000, 10_000, 100_000, 1_000_000} {
			if n == 1_000_000 && testing.Short() {
				continue
			}
			var s hllSketch
			for i := range n {
				a := addr(i)
				// Each address twice: duplicates must not count.
				s.insert(hllPosition(hashAddr(a)))
				s.insert(hllPosition(hashAddr(a)))
			}
			est := s.estimate()
			tol := 0.03 * float64(n)
			if n <= 100 {
				tol = 0.02*float64(n) + 1
			}
			if math.Abs(est-float64(n)) > tol {
				t.Errorf("%s: n=%d: estimate %.1f (%.2f%%)", name, n, est, 100*(est-float64(n))/float64(n))
			}
		}
	}
}

func TestHLLMergeIsUnion(t *testing.T) {
	var a, b, u hllSketch
	for i := range 20_000 {
		x := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if i < 12_000 {
			a.insert(hllPosition(hashAddr(x)))
		}
		if i >= 8_000 {
			b.insert(hllPosition(hashAddr(x)))
		}
		u.insert(hllPosition(hashAddr(x)))
	}
	a.merge(&b)
	if a != u {
		t.Error("merge of two sketches differs from the sketch of the union")
	}
}

func TestHashAddrIgnoresMappingAndZone(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.1")
	if hashAddr(v4) != hashAddr(netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Error("IPv4 and IPv4-mapped forms hash differently")
	}
	if hashAddr(netip.MustParseAddr("fe80::1")) != hashAddr(netip.MustParseAddr("fe80::1%eth0")) {
		t.Error("zone changes the hash")
	}
}

func TestClientsSeenWindows(t *testing.T) {
	type step struct {
		// observe n clients (numbered from first) at offset at
		at          time.Duration
		first, n    int
		collectAt   time.Duration
		m5, h1, h24 float64
		collectOnly bool
	}
	start := time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC)
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "windows expire without traffic",
			steps: []step{
				{at: 0, first: 0, n: 100, collectAt: 0, m5: 100, h1: 100, h24: 100},
				{collectOnly: true, collectAt: 5*time.Minute + 29*time.Second, m5: 100, h1: 100, h24: 100},
				{collectOnly: true, collectAt: 6 * time.Minute, m5: 0, h1: 100, h24: 100},
				{collectOnly: true, collectAt: 60 * time.Minute, m5: 0, h1: 100, h24: 100},
				{collectOnly: true, collectAt: 61 * time.Minute, m5: 0, h1: 0, h24: 100},
				{collectOnly: true, collectAt: 24 * time.Hour, m5: 0, h1: 0, h24: 100},
				{collectOnly: true, collectAt: 24*time.Hour + 15*time.Minute, m5: 0, h1: 0, h24: 0},
			},
		},
		{
			name: "observation time rotates the rings",
			steps: []step{
				{at: 0, first: 0, n: 50, collectAt: 0, m5: 50, h1: 50, h24: 50},
				{at: 3 * time.Minute, first: 25, n: 50, collectAt: 3 * time.Minute, m5: 75, h1: 75, h24: 75},
				{at: 2 * time.Hour, first: 1000, n: 10, collectAt: 2 * time.Hour, m5: 10, h1: 10, h24: 85},
				{at: 2*time.Hour + 10*time.Minute, first: 1000, n: 5, collectAt: 2*time.Hour + 10*time.Minute, m5: 5, h1: 10, h24: 85},
			},
		},
		{
			name: "clock stepped back past the rings",
			steps: []step{
				{at: 48 * time.Hour, first: 0, n: 40, collectAt: 48 * time.Hour, m5: 40, h1: 40, h24: 40},
				{at: 0, first: 100, n: 7, collectAt: 0, m5: 7, h1: 7, h24: 7},
			},
		},
		{
			name: "collection clock behind observations",
			steps: []step{
				{at: 10 * time.Minute, first: 0, n: 30, collectAt: 8 * time.Minute, m5: 0, h1: 0, h24: 30},
				{collectOnly: true, collectAt: 10 * time.Minute, m5: 30, h1: 30, h24: 30},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDistinctClients(nil)
			for i, s := range tc.steps {
				if !s.collectOnly {
					for c := s.first; c < s.first+s.n; c++ {
						d.add(start.Add(s.at), netip.AddrFrom4([4]byte{10, 9, byte(c >> 8), byte(c)}))
					}
				}
				m5, h1, h24 := d.windows(start.Add(s.collectAt))
				got := [3]float64{m5, h1, h24}
				want := [3]float64{s.m5, s.h1, s.h24}
				for j := range got {
					// Empty windows are exactly 0; others within the
					// sketch's error.
					if math.Abs(got[j]-want[j]) > 0.02*want[j]+1 || (want[j] == 0) != (got[j] == 0) {
						t.Errorf("step %d: 5m/1h/24h = %.1f, want %v", i, got, want)
						break
					}
				}
			}
		})
	}
}

// TestClientsSeenCollectClock checks the metric end to end with an
// injected collection clock.
func TestClientsSeenCollectClock(t *testing.T) {
	now := t0
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, nil, MetricsConfig{MaxClients: -1, Now: func() time.Time { return now }})
	for i := range 10_000 {
		o := ntp.Observation{Received: t0, Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), 123), Length: 48}
		m.Observe(&o)
	}
	mf := gatherFamily(t, reg, "ntpexp_clients_seen")
	for _, mt := range mf.GetMetric() {
		if v := mt.GetGauge().GetValue(); math.Abs(v-10_000) > 300 {
			t.Errorf("window %s: %g, want 10000 ± 3%%", labelValue(mt, "window"), v)
		}
	}
	now = t0.Add(25 * time.Hour)
	want := headers["ntpexp_clients_seen"] + `ntpexp_clients_seen{window="1h"} 0
ntpexp_clients_seen{window="24h"} 0
ntpexp_clients_seen{window="5m"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ntpexp_clients_seen"); err != nil {
		t.Error(err)
	}
}

func BenchmarkClientsSeenCollect(b *testing.B) {
	d := newDistinctClients(nil)
	for i := range 100_000 {
		d.add(t0.Add(time.Duration(i)*time.Second), netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	now := t0.Add(100_000 * time.Second)
	for b.Loop() {
		d.windows(now)
	}
}
