package exporter

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/ntpexp/ntpexp/ntp"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC)

// headers holds the HELP and TYPE lines of the families compared as text.
var headers = map[string]string{
	"ntpexp_requests_total": `# HELP ntpexp_requests_total Requests received, by header mode and version ("0" to "7"); requests too short to carry a first byte count as mode and version "0".
# TYPE ntpexp_requests_total counter
`,
	"ntpexp_responses_total": `# HELP ntpexp_responses_total Replies sent, including kiss-o'-death replies.
# TYPE ntpexp_responses_total counter
`,
	"ntpexp_kod_responses_total": `# HELP ntpexp_kod_responses_total Kiss-o'-death (RATE) replies sent.
# TYPE ntpexp_kod_responses_total counter
`,
	"ntpexp_request_bytes_total": `# HELP ntpexp_request_bytes_total UDP payload bytes of all requests received.
# TYPE ntpexp_request_bytes_total counter
`,
	"ntpexp_response_bytes_total": `# HELP ntpexp_response_bytes_total UDP payload bytes of all replies sent; compare with ntpexp_request_bytes_total to check for amplification.
# TYPE ntpexp_response_bytes_total counter
`,
	"ntpexp_drops_total": `# HELP ntpexp_drops_total Requests not answered normally, by reason.
# TYPE ntpexp_drops_total counter
`,
	"ntpexp_client_requests_total": `# HELP ntpexp_client_requests_total Requests received from the client since its series were created (bounded set of clients; see ntpexp_client_series_clients).
# TYPE ntpexp_client_requests_total counter
`,
	"ntpexp_client_last_offset_seconds": `# HELP ntpexp_client_last_offset_seconds Most recent clock offset of the client (client minus server), same method preference as ntpexp_client_clock_offset_seconds. Absent until the client revealed an offset.
# TYPE ntpexp_client_last_offset_seconds gauge
`,
	"ntpexp_client_series_clients": `# HELP ntpexp_client_series_clients Number of clients that currently carry per-client series (LRU-tracked plus watched).
# TYPE ntpexp_client_series_clients gauge
`,
	"ntpexp_client_delay_seconds": `# HELP ntpexp_client_delay_seconds Round-trip delay of full NTP exchanges (method="exchange").
# TYPE ntpexp_client_delay_seconds histogram
`,
	"ntpexp_processing_seconds": `# HELP ntpexp_processing_seconds Server processing time from request receive to reply transmit, answered requests only.
# TYPE ntpexp_processing_seconds histogram
`,
	"ntpexp_clients_seen": `# HELP ntpexp_clients_seen Estimated number of distinct client addresses that sent a request within the window (HyperLogLog, about 1.6% relative standard error). window is one of 5m, 1h, 24h; a window includes the current, partial 1m (5m, 1h) or 15m (24h) slot.
# TYPE ntpexp_clients_seen gauge
`,
}

// requestsText renders ntpexp_requests_total with all 64 pre-created
// series; counts maps [mode, version] to a value.
func requestsText(counts map[[2]int]int) string {
	var b strings.Builder
	b.WriteString(headers["ntpexp_requests_total"])
	for mode := range numModes {
		for version := range numVersions {
			fmt.Fprintf(&b, "ntpexp_requests_total{mode=\"%d\",version=\"%d\"} %d\n", mode, version, counts[[2]int{mode, version}])
		}
	}
	return b.String()
}

// dropsText renders ntpexp_drops_total with every reason.
func dropsText(counts map[string]int) string {
	var b strings.Builder
	b.WriteString(headers["ntpexp_drops_total"])
	for _, r := range ntp.DropReasons() {
		fmt.Fprintf(&b, "ntpexp_drops_total{reason=%q} %d\n", r.String(), counts[r.String()])
	}
	return b.String()
}

func counterText(name string, v float64) string {
	return fmt.Sprintf("%s%s %g\n", headers[name], name, v)
}

func client(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// answered returns an answered mode-3 request of the given version.
func answered(version uint8, from string) ntp.Observation {
	return ntp.Observation{
		Received: t0, Client: client(from), Length: 48, ReplyLength: 48,
		Version: version, Mode: 3, Processing: 20 * time.Microsecond,
	}
}

func TestMetricsExposition(t *testing.T) {
	tooShortEmpty := ntp.Observation{Received: t0, Client: client("192.0.2.1:123"), Drop: ntp.DropTooShort}
	tooShortOne := ntp.Observation{Received: t0, Client: client("192.0.2.1:123"), Length: 1, Version: 3, Mode: 3, Drop: ntp.DropTooShort}
	control := ntp.Observation{Received: t0, Client: client("192.0.2.2:40000"), Length: 12, Version: 2, Mode: 6, Drop: ntp.DropControl}
	private := ntp.Observation{Received: t0, Client: client("192.0.2.2:40000"), Length: 8, Version: 2, Mode: 7, Drop: ntp.DropPrivate}
	badVersion := ntp.Observation{Received: t0, Client: client("192.0.2.3:123"), Length: 48, Version: 5, Mode: 3, Drop: ntp.DropBadVersion}
	kod := ntp.Observation{Received: t0, Client: client("192.0.2.4:123"), Length: 48, ReplyLength: 48, Version: 4, Mode: 3, Drop: ntp.DropRateLimit, KoD: true}
	silentRate := ntp.Observation{Received: t0, Client: client("192.0.2.4:123"), Length: 48, Version: 4, Mode: 3, Drop: ntp.DropRateLimit}
	sendErr := ntp.Observation{Received: t0, Client: client("192.0.2.5:123"), Length: 68, Version: 4, Mode: 3, Drop: ntp.DropSendError}
	exchange := answered(4, "[2001:db8::1]:123")
	exchange.Method, exchange.Offset, exchange.Delay = ntp.MethodExchange, -3*time.Millisecond, 30*time.Millisecond
	exchange.Implementation = ntp.ImplChrony

	tests := []struct {
		name   string
		cfg    MetricsConfig
		obs    []ntp.Observation
		want   string
		metric []string
	}{
		{
			name: "answered request",
			obs:  []ntp.Observation{answered(4, "192.0.2.1:123")},
			want: requestsText(map[[2]int]int{{3, 4}: 1}) + dropsText(nil) +
				counterText("ntpexp_responses_total", 1) + counterText("ntpexp_kod_responses_total", 0) +
				counterText("ntpexp_request_bytes_total", 48) + counterText("ntpexp_response_bytes_total", 48),
			metric: []string{"ntpexp_requests_total", "ntpexp_drops_total", "ntpexp_responses_total",
				"ntpexp_kod_responses_total", "ntpexp_request_bytes_total", "ntpexp_response_bytes_total"},
		},
		{
			name: "drops by reason",
			obs:  []ntp.Observation{tooShortEmpty, tooShortOne, control, private, badVersion, kod, silentRate, sendErr},
			want: requestsText(map[[2]int]int{{0, 0}: 1, {3, 3}: 1, {6, 2}: 1, {7, 2}: 1, {3, 5}: 1, {3, 4}: 3}) +
				dropsText(map[string]int{"too_short": 2, "mode_control": 1, "mode_private": 1, "bad_version": 1, "rate_limit": 2, "send_error": 1}) +
				counterText("ntpexp_responses_total", 1) + counterText("ntpexp_kod_responses_total", 1) +
				counterText("ntpexp_request_bytes_total", 0+1+12+8+48+48+48+68) + counterText("ntpexp_response_bytes_total", 48),
			metric: []string{"ntpexp_requests_total", "ntpexp_drops_total", "ntpexp_responses_total",
				"ntpexp_kod_responses_total", "ntpexp_request_bytes_total", "ntpexp_response_bytes_total"},
		},
		{
			name: "versions",
			obs: []ntp.Observation{answered(1, "192.0.2.1:123"), answered(2, "192.0.2.1:123"),
				answered(3, "192.0.2.1:123"), answered(4, "192.0.2.1:123"), answered(4, "192.0.2.9:123")},
			want:   requestsText(map[[2]int]int{{3, 1}: 1, {3, 2}: 1, {3, 3}: 1, {3, 4}: 2}),
			metric: []string{"ntpexp_requests_total"},
		},
		{
			name: "delay and processing histograms",
			obs:  []ntp.Observation{exchange, kod},
			want: headers["ntpexp_client_delay_seconds"] + `ntpexp_client_delay_seconds_bucket{le="0.0001"} 0
ntpexp_client_delay_seconds_bucket{le="0.00025"} 0
ntpexp_client_delay_seconds_bucket{le="0.0005"} 0
ntpexp_client_delay_seconds_bucket{le="0.001"} 0
ntpexp_client_delay_seconds_bucket{le="0.0025"} 0
ntpexp_client_delay_seconds_bucket{le="0.005"} 0
ntpexp_client_delay_seconds_bucket{le="0.01"} 0
ntpexp_client_delay_seconds_bucket{le="0.025"} 0
ntpexp_client_delay_seconds_bucket{le="0.05"} 1
ntpexp_client_delay_seconds_bucket{le="0.1"} 1
ntpexp_client_delay_seconds_bucket{le="0.25"} 1
ntpexp_client_delay_seconds_bucket{le="0.5"} 1
ntpexp_client_delay_seconds_bucket{le="1"} 1
ntpexp_client_delay_seconds_bucket{le="2.5"} 1
ntpexp_client_delay_seconds_bucket{le="+Inf"} 1
ntpexp_client_delay_seconds_sum 0.03
ntpexp_client_delay_seconds_count 1
` + headers["ntpexp_processing_seconds"] + `ntpexp_processing_seconds_bucket{le="1e-06"} 0
ntpexp_processing_seconds_bucket{le="2.5e-06"} 0
ntpexp_processing_seconds_bucket{le="5e-06"} 0
ntpexp_processing_seconds_bucket{le="1e-05"} 0
ntpexp_processing_seconds_bucket{le="2.5e-05"} 1
ntpexp_processing_seconds_bucket{le="5e-05"} 1
ntpexp_processing_seconds_bucket{le="0.0001"} 1
ntpexp_processing_seconds_bucket{le="0.00025"} 1
ntpexp_processing_seconds_bucket{le="0.0005"} 1
ntpexp_processing_seconds_bucket{le="0.001"} 1
ntpexp_processing_seconds_bucket{le="0.01"} 1
ntpexp_processing_seconds_bucket{le="+Inf"} 1
ntpexp_processing_seconds_sum 2e-05
ntpexp_processing_seconds_count 1
`,
			metric: []string{"ntpexp_client_delay_seconds", "ntpexp_processing_seconds"},
		},
		{
			name: "per-client series",
			cfg:  MetricsConfig{MaxClients: 2, ClientMinIdle: -1},
			obs: func() []ntp.Observation {
				a := answered(4, "192.0.2.1:123")
				a.Method, a.Offset = ntp.MethodApparent, 60*time.Millisecond
				b := answered(4, "192.0.2.2:123") // no offset: no last-offset gauge
				c := answered(4, "[::ffff:192.0.2.3]:123")
				c.Method, c.Offset = ntp.MethodApparent, -time.Millisecond
				return []ntp.Observation{a, a, b, c}
			}(),
			// 192.0.2.1 is the least recently used of three and is evicted;
			// the IPv4-mapped address is reported unmapped.
			want: headers["ntpexp_client_requests_total"] + `ntpexp_client_requests_total{client="192.0.2.2"} 1
ntpexp_client_requests_total{client="192.0.2.3"} 1
` + headers["ntpexp_client_last_offset_seconds"] + `ntpexp_client_last_offset_seconds{client="192.0.2.3"} -0.001
` + headers["ntpexp_client_series_clients"] + "ntpexp_client_series_clients 2\n",
			metric: []string{"ntpexp_client_requests_total", "ntpexp_client_last_offset_seconds", "ntpexp_client_series_clients"},
		},
		{
			name: "exchange offsets win over apparent ones",
			obs: func() []ntp.Observation {
				a := answered(4, "192.0.2.1:123")
				a.Method, a.Offset = ntp.MethodApparent, 80*time.Millisecond
				e := a
				e.Method, e.Offset, e.Delay = ntp.MethodExchange, 40*time.Millisecond, 80*time.Millisecond
				return []ntp.Observation{a, e, a}
			}(),
			want: headers["ntpexp_client_last_offset_seconds"] + `ntpexp_client_last_offset_seconds{client="192.0.2.1"} 0.04
`,
			metric: []string{"ntpexp_client_last_offset_seconds"},
		},
		{
			name: "clients seen",
			obs:  []ntp.Observation{answered(4, "192.0.2.1:123"), answered(4, "192.0.2.1:124"), answered(4, "[2001:db8::1]:123")},
			want: headers["ntpexp_clients_seen"] + `ntpexp_clients_seen{window="1h"} 2
ntpexp_clients_seen{window="24h"} 2
ntpexp_clients_seen{window="5m"} 2
`,
			metric: []string{"ntpexp_clients_seen"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			cfg := tc.cfg
			cfg.Now = func() time.Time { return t0 }
			m := NewMetrics(reg, nil, cfg)
			for i := range tc.obs {
				m.Observe(&tc.obs[i])
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tc.want), tc.metric...); err != nil {
				t.Error(err)
			}
		})
	}
}

func gatherFamily(t *testing.T, g prometheus.Gatherer, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	return nil
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestOffsetHistogram(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, nil, MetricsConfig{NativeHistograms: true})
	for _, tc := range []struct {
		method ntp.OffsetMethod
		impl   ntp.Implementation
		offset time.Duration
	}{
		{ntp.MethodApparent, ntp.ImplNTPd, 75 * time.Millisecond},
		{ntp.MethodApparent, ntp.ImplNTPd, -75 * time.Millisecond},
		{ntp.MethodExchange, ntp.ImplChrony, 2 * time.Hour},
		{ntp.MethodNone, ntp.ImplChrony, time.Second}, // not an offset
		{ntp.MethodExchange, ntp.Implementation(200), time.Microsecond},
	} {
		o := answered(4, "192.0.2.1:123")
		o.Method, o.Implementation, o.Offset = tc.method, tc.impl, tc.offset
		m.Observe(&o)
	}
	mf := gatherFamily(t, reg, "ntpexp_client_offset_seconds")
	if mf == nil {
		t.Fatal("no ntpexp_client_offset_seconds")
	}
	if got, want := len(mf.GetMetric()), 2*len(ntp.Implementations()); got != want {
		t.Errorf("%d series, want %d (method × implementation, pre-created)", got, want)
	}
	type key struct{ method, impl string }
	got := map[key]*dto.Histogram{}
	for _, mt := range mf.GetMetric() {
		got[key{labelValue(mt, "method"), labelValue(mt, "implementation")}] = mt.GetHistogram()
	}
	for k, want := range map[key]struct {
		count uint64
		sum   float64
	}{
		{"apparent", "ntpd"}:     {2, 0},
		{"exchange", "chrony"}:   {1, 7200},
		{"exchange", "unknown"}:  {1, 1e-6},
		{"apparent", "chrony"}:   {0, 0},
		{"exchange", "android"}:  {0, 0},
		{"apparent", "unknown"}:  {0, 0},
		{"exchange", "ntpsec"}:   {0, 0},
		{"apparent", "ntpdig"}:   {0, 0},
		{"apparent", "busybox"}:  {0, 0},
		{"exchange", "ntpdate"}:  {0, 0},
		{"exchange", "sntp"}:     {0, 0},
		{"apparent", "timesynd"}: {0, 0}, // absent: not a class
	} {
		h := got[k]
		if k.impl == "timesynd" {
			if h != nil {
				t.Errorf("%v: unexpected series", k)
			}
			continue
		}
		if h == nil {
			t.Errorf("%v: no series", k)
			continue
		}
		if h.GetSampleCount() != want.count || math.Abs(h.GetSampleSum()-want.sum) > 1e-9 {
			t.Errorf("%v: count %d sum %g, want %d %g", k, h.GetSampleCount(), h.GetSampleSum(), want.count, want.sum)
		}
	}

	// Classic buckets: symmetric, with 0, ±50 ms and ±100 ms as edges.
	h := got[key{"apparent", "ntpd"}]
	var edges []float64
	for _, b := range h.GetBucket() {
		edges = append(edges, b.GetUpperBound())
	}
	for _, e := range []float64{-31536000, -0.1, -0.05, 0, 0.05, 0.1, 1e-5, 31536000} {
		if !slices.Contains(edges, e) {
			t.Errorf("bucket edge %g missing from %v", e, edges)
		}
	}
	for i := range edges {
		if edges[i] != -edges[len(edges)-1-i] {
			t.Fatalf("buckets not symmetric: %v", edges)
		}
	}
	// −75 ms is at or below −0.05 but not −0.1; +75 ms adds above 0.05.
	for _, b := range h.GetBucket() {
		var want uint64
		switch ub := b.GetUpperBound(); {
		case ub < -0.075:
			want = 0
		case ub < 0.075:
			want = 1
		default:
			want = 2
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("le=%g: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	// Native buckets are exposed alongside, with negative buckets for
	// negative offsets.
	if h.Schema == nil {
		t.Error("no native histogram (schema unset)")
	}
	if len(h.GetNegativeSpan()) == 0 || len(h.GetPositiveSpan()) == 0 {
		t.Errorf("native histogram lacks negative or positive spans: %v", h)
	}
}

// TestNativeHistogramsOption: native histograms are kept only when asked
// for, on the aggregate and the per-client histograms alike; the classic
// buckets are there either way.
func TestNativeHistogramsOption(t *testing.T) {
	hists := []string{"ntpexp_client_offset_seconds", "ntpexp_client_delay_seconds", "ntpexp_processing_seconds",
		"ntpexp_client_clock_offset_seconds", "ntpexp_client_round_trip_delay_seconds"}
	for _, native := range []bool{false, true} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			m := NewMetrics(reg, nil, MetricsConfig{NativeHistograms: native})
			for _, off := range []time.Duration{-3 * time.Millisecond, 20 * time.Millisecond} {
				o := ntp.Observation{Client: netip.MustParseAddrPort("192.0.2.7:123"), Received: time.Unix(1700000000, 0),
					Length: 48, ReplyLength: 48, Version: 4, Mode: 3, Method: ntp.MethodExchange, Implementation: ntp.ImplNTPd,
					Offset: off, Delay: 5 * time.Millisecond, Processing: 20 * time.Microsecond}
				m.Observe(&o)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			found := map[string]bool{}
			for _, mf := range mfs {
				if !slices.Contains(hists, mf.GetName()) {
					continue
				}
				for _, mm := range mf.GetMetric() {
					h := mm.GetHistogram()
					if h.GetSampleCount() == 0 {
						continue
					}
					found[mf.GetName()] = true
					if len(h.GetBucket()) == 0 {
						t.Errorf("%s: no classic buckets", mf.GetName())
					}
					if got := h.Schema != nil; got != native {
						t.Errorf("%s: native histogram %v, want %v", mf.GetName(), got, native)
					}
				}
			}
			for _, name := range hists {
				if !found[name] {
					t.Errorf("%s: no observations gathered", name)
				}
			}
		})
	}
}

type fakeStats struct{ clock ntp.ClockState }

func (f *fakeStats) ClockState() ntp.ClockState { return f.clock }
func (f *fakeStats) TrackedClients() int        { return 17 }
func (f *fakeStats) Evictions() uint64          { return 5 }
func (f *fakeStats) TableCapacity() int         { return 65536 }

func TestServerStats(t *testing.T) {
	stats := &fakeStats{clock: ntp.ClockState{
		Synchronized: true, Leap: 0, Stratum: 2, Precision: -20,
		RootDelay: 0x0100, RootDispersion: 0x8000, // 1/256 s, 0.5 s
		MaxError: 16 * time.Millisecond, EstError: 250 * time.Microsecond,
	}}
	reg := prometheus.NewPedanticRegistry()
	NewMetrics(reg, stats, MetricsConfig{})
	want := `# HELP ntpexp_client_table_capacity Configured size of the server's client table.
# TYPE ntpexp_client_table_capacity gauge
ntpexp_client_table_capacity 65536
# HELP ntpexp_clients_evicted_total Clients evicted from the full client table.
# TYPE ntpexp_clients_evicted_total counter
ntpexp_clients_evicted_total 5
# HELP ntpexp_clients_tracked Clients currently in the server's client table (rate limiting and interleaved mode state).
# TYPE ntpexp_clients_tracked gauge
ntpexp_clients_tracked 17
# HELP ntpexp_server_clock_estimated_error_seconds Kernel estimated error of the host clock.
# TYPE ntpexp_server_clock_estimated_error_seconds gauge
ntpexp_server_clock_estimated_error_seconds 0.00025
# HELP ntpexp_server_clock_max_error_seconds Kernel maximum error estimate of the host clock.
# TYPE ntpexp_server_clock_max_error_seconds gauge
ntpexp_server_clock_max_error_seconds 0.016
# HELP ntpexp_server_clock_synchronized 1 if the kernel reports the host clock as synchronised, else 0.
# TYPE ntpexp_server_clock_synchronized gauge
ntpexp_server_clock_synchronized 1
# HELP ntpexp_server_leap_indicator Leap indicator advertised in replies (0 none, 1 insert, 2 delete, 3 alarm: clock not synchronised).
# TYPE ntpexp_server_leap_indicator gauge
ntpexp_server_leap_indicator 0
# HELP ntpexp_server_precision_seconds Precision advertised in replies (2^precision).
# TYPE ntpexp_server_precision_seconds gauge
ntpexp_server_precision_seconds 9.5367431640625e-07
# HELP ntpexp_server_root_delay_seconds Root delay advertised in replies.
# TYPE ntpexp_server_root_delay_seconds gauge
ntpexp_server_root_delay_seconds 0.00390625
# HELP ntpexp_server_root_dispersion_seconds Root dispersion advertised in replies.
# TYPE ntpexp_server_root_dispersion_seconds gauge
ntpexp_server_root_dispersion_seconds 0.5
# HELP ntpexp_server_stratum Stratum advertised in replies.
# TYPE ntpexp_server_stratum gauge
ntpexp_server_stratum 2
`
	names := []string{"ntpexp_client_table_capacity", "ntpexp_clients_evicted_total", "ntpexp_clients_tracked",
		"ntpexp_server_clock_estimated_error_seconds", "ntpexp_server_clock_max_error_seconds",
		"ntpexp_server_clock_synchronized", "ntpexp_server_leap_indicator", "ntpexp_server_precision_seconds",
		"ntpexp_server_root_delay_seconds", "ntpexp_server_root_dispersion_seconds", "ntpexp_server_stratum"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	// Read at scrape time: an unsynchronised clock shows at once.
	stats.clock.Synchronized, stats.clock.Leap = false, 3
	want = `# HELP ntpexp_server_clock_synchronized 1 if the kernel reports the host clock as synchronised, else 0.
# TYPE ntpexp_server_clock_synchronized gauge
ntpexp_server_clock_synchronized 0
# HELP ntpexp_server_leap_indicator Leap indicator advertised in replies (0 none, 1 insert, 2 delete, 3 alarm: clock not synchronised).
# TYPE ntpexp_server_leap_indicator gauge
ntpexp_server_leap_indicator 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ntpexp_server_clock_synchronized", "ntpexp_server_leap_indicator"); err != nil {
		t.Error(err)
	}
}

func TestNilStatsRegistersNoServerMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	NewMetrics(reg, nil, MetricsConfig{})
	for _, name := range []string{"ntpexp_clients_tracked", "ntpexp_server_stratum", "ntpexp_clients_evicted_total"} {
		if gatherFamily(t, reg, name) != nil {
			t.Errorf("%s registered without stats", name)
		}
	}
}

func TestRegisterDefault(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := RegisterDefault(reg); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ntpexp_build_info", "go_goroutines", "process_start_time_seconds"} {
		if gatherFamily(t, reg, name) == nil {
			t.Errorf("%s missing", name)
		}
	}
	if err := RegisterDefault(reg); err == nil {
		t.Error("registering twice succeeded")
	}
}

// TestObserveAllocs holds the packet-path rule: Observe allocates nothing
// for clients without per-client series, nor for clients whose series
// already exist.
func TestObserveAllocs(t *testing.T) {
	templates := func() []ntp.Observation {
		a := answered(4, "192.0.2.1:123")
		a.Method, a.Offset, a.Implementation = ntp.MethodApparent, 12*time.Millisecond, ntp.ImplNTPd
		e := answered(4, "192.0.2.1:123")
		e.Method, e.Offset, e.Delay, e.Implementation = ntp.MethodExchange, -3*time.Millisecond, 20*time.Millisecond, ntp.ImplChrony
		d := ntp.Observation{Received: t0, Client: client("192.0.2.1:123"), Length: 48, ReplyLength: 48, Version: 4, Mode: 3, Drop: ntp.DropRateLimit, KoD: true}
		s := ntp.Observation{Received: t0, Length: 0, Drop: ntp.DropTooShort}
		return []ntp.Observation{a, e, d, s}
	}
	for _, tc := range []struct {
		name     string
		cfg      MetricsConfig
		vary     bool // new client address on every call
		wantZero bool
	}{
		{name: "aggregate only", cfg: MetricsConfig{MaxClients: -1}, vary: true},
		{name: "unwatched with only watched series", cfg: MetricsConfig{MaxClients: -1, Watch: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}}, vary: true},
		{name: "tracked client", cfg: MetricsConfig{}},
		{name: "untracked client, places busy", cfg: MetricsConfig{MaxClients: 1}, vary: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics(prometheus.NewRegistry(), &fakeStats{}, tc.cfg)
			obs := templates()
			for i := range obs { // warm up native histogram buckets
				m.Observe(&obs[i])
			}
			var n uint32
			allocs := testing.AllocsPerRun(2000, func() {
				n++
				o := &obs[n%uint32(len(obs))]
				o.Received = t0.Add(time.Duration(n) * 100 * time.Millisecond) // crosses ring slots, stays below ClientMinIdle
				if tc.vary {
					o.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 123)
				}
				m.Observe(o)
			})
			if allocs != 0 {
				t.Errorf("Observe: %v allocs per call, want 0", allocs)
			}
		})
	}
}

func BenchmarkObserve(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  MetricsConfig
		// clients is how many distinct addresses are cycled through.
		clients int
	}{
		{"aggregate", MetricsConfig{MaxClients: -1}, 1 << 16},
		{"tracked", MetricsConfig{}, 64},
		// More clients than places: with the default admission rule the
		// places stay with the first clients; as a plain LRU every
		// request evicts a client and creates series.
		{"churn", MetricsConfig{}, 1 << 16},
		{"churn-lru", MetricsConfig{ClientMinIdle: -1}, 1 << 16},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := NewMetrics(prometheus.NewRegistry(), nil, bc.cfg)
			o := answered(4, "192.0.2.1:123")
			o.Method, o.Offset, o.Delay = ntp.MethodExchange, time.Millisecond, 10*time.Millisecond
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				c := i % bc.clients
				o.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(c >> 8), byte(c)}), 123)
				o.Received = t0.Add(time.Duration(i) * time.Millisecond)
				m.Observe(&o)
			}
		})
	}
}

// TestObserveConcurrent exercises Observe from several goroutines while
// scraping; run it with -race.
func TestObserveConcurrent(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, &fakeStats{}, MetricsConfig{MaxClients: 16, ClientMinIdle: -1})
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 5000 {
				o := answered(4, "192.0.2.1:123")
				o.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(g), byte(i >> 8), byte(i % 40)}), 123)
				o.Received = t0.Add(time.Duration(i) * time.Second)
				o.Method, o.Offset, o.Delay = ntp.MethodExchange, time.Duration(i), time.Millisecond
				m.Observe(&o)
			}
		}()
	}
	for range 20 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		<-done
	}
	if n, err := testutil.GatherAndCount(reg, "ntpexp_client_requests_total"); err != nil || n > 16 {
		t.Errorf("%d per-client series (%v), want at most 16", n, err)
	}
	var total float64
	for _, mt := range gatherFamily(t, reg, "ntpexp_requests_total").GetMetric() {
		total += mt.GetCounter().GetValue()
	}
	if total != 4*5000 {
		t.Errorf("ntpexp_requests_total sums to %g, want %d", total, 4*5000)
	}
}

func TestImplementationRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, nil, MetricsConfig{})
	for _, o := range []ntp.Observation{
		{Length: 48, Version: 4, Mode: 3, ReplyLength: 48, Implementation: ntp.ImplChrony},
		{Length: 48, Version: 4, Mode: 3, ReplyLength: 48, Implementation: ntp.ImplChrony},
		{Length: 48, Version: 4, Mode: 3, Drop: ntp.DropRateLimit, Implementation: ntp.ImplNTPdig},
		{Length: 12, Version: 2, Mode: 6, Drop: ntp.DropControl},
		{Length: 20, Drop: ntp.DropTooShort},
	} {
		m.Observe(&o)
	}
	want := `
# HELP ntpexp_implementation_requests_total Well-formed client requests (answered or rate-limited), by the client implementation recognised from the request.
# TYPE ntpexp_implementation_requests_total counter
ntpexp_implementation_requests_total{implementation="android"} 0
ntpexp_implementation_requests_total{implementation="busybox"} 0
ntpexp_implementation_requests_total{implementation="chrony"} 2
ntpexp_implementation_requests_total{implementation="ntpd"} 0
ntpexp_implementation_requests_total{implementation="ntpdate"} 0
ntpexp_implementation_requests_total{implementation="ntpdig"} 1
ntpexp_implementation_requests_total{implementation="ntpsec"} 0
ntpexp_implementation_requests_total{implementation="sntp"} 0
ntpexp_implementation_requests_total{implementation="timesyncd"} 0
ntpexp_implementation_requests_total{implementation="unknown"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ntpexp_implementation_requests_total"); err != nil {
		t.Fatal(err)
	}
}
