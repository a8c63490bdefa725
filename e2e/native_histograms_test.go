package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// The per-request histograms that --metrics.native-histograms turns into
// native histograms as well.
var nativeOptionHistograms = []string{
	"ntpexp_client_offset_seconds",
	"ntpexp_client_delay_seconds",
	"ntpexp_processing_seconds",
	"ntpexp_client_clock_offset_seconds",
	"ntpexp_client_round_trip_delay_seconds",
}

// nativeSkew is the clock error of the load generator's clients: every
// offset the exporter records is about this much.
const nativeSkew = 250 * time.Millisecond

// TestNativeHistograms runs a real ntpexp, real NTP clients (ntpload's
// ntpd-like clients with clocks 250 ms ahead: apparent offsets, then full
// exchanges with delays) and a real Prometheus that negotiates native
// histograms when it scrapes.
//
// on: with --metrics.native-histograms, Prometheus stores each of the five
// per-request histograms as a native histogram whose count and sum are
// those of the daemon's classic series, whose count is the number of
// answered requests, and whose mean offset is the clients' 250 ms; a
// second, default Prometheus scraping the same daemon still stores the
// classic _bucket/_count/_sum series with the same counts.
//
// off (the default): the same native-scraping Prometheus holds no native
// histogram under these names (while it does for the always-native
// ntpexp_store_flush_duration_seconds of the same target, so it did
// negotiate them), only the classic series.
func TestNativeHistograms(t *testing.T) {
	peers.Require(t, "prometheus")
	for _, tc := range []struct {
		name   string
		native bool
	}{{"on", true}, {"off", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testNativeHistograms(t, tc.native)
		})
	}
}

func testNativeHistograms(t *testing.T, native bool) {
	start := time.Now()
	args := []string{"--ntp.ratelimit.enabled=false", "--metrics.max-clients", "64"}
	if native {
		args = append(args, "--metrics.native-histograms")
	}
	d := startDaemon(t, daemonOpts{Args: args})
	prom := startPrometheusNativeHistograms(t, d.WebAddr)
	var classic *promServer
	if native {
		classic = startPrometheus(t, d.WebAddr, "", "")
	}
	prom.waitTargetUp(15 * time.Second)
	if classic != nil {
		classic.waitTargetUp(15 * time.Second)
	}

	// 4 ntpd-like clients, 25 requests each over one second.
	const sources = 4
	first := "127.5.0.1"
	out, err := exec.Command(ntploadBin, "-server", d.NTPAddr, "-personality", "ntpd", "-workers", "1",
		"-sources", strconv.Itoa(sources), "-first-source", first, "-rate", "100", "-duration", "1s",
		"-skew", nativeSkew.String(), "-json").Output()
	if err != nil {
		t.Fatalf("ntpload: %v: %s", err, out)
	}
	var load struct {
		Sent, Replies, KoD uint64
	}
	if err := json.Unmarshal(out, &load); err != nil {
		t.Fatalf("ntpload output %q: %v", out, err)
	}
	if load.Sent < 50 || load.Replies < load.Sent*9/10 || load.KoD != 0 {
		t.Fatalf("ntpload: %s: want at least 50 requests sent, 90%% answered, no KoD", out)
	}

	// The daemon's own (text, classic) view once the load has stopped;
	// Prometheus must catch up with it.
	var text map[string]float64
	answered := 0.0
	pollFor(t, 10*time.Second, "Prometheus scraped every answered request", func() (bool, string) {
		text = d.metrics()
		answered = text["ntpexp_responses_total"]
		res, err := prom.query("ntpexp_responses_total")
		if err != nil {
			return false, err.Error()
		}
		if len(res) != 1 || res[0].Value != answered || answered == 0 {
			return false, fmt.Sprintf("Prometheus %v, daemon %v", res, answered)
		}
		if classic != nil {
			res, err := classic.query("ntpexp_responses_total")
			if err != nil {
				return false, err.Error()
			}
			if len(res) != 1 || res[0].Value != answered {
				return false, fmt.Sprintf("classic Prometheus %v, daemon %v", res, answered)
			}
		}
		return true, ""
	})
	if answered < float64(load.Replies) || answered > float64(load.Sent) {
		t.Errorf("ntpexp_responses_total %v: ntpload sent %d and got %d replies", answered, load.Sent, load.Replies)
	}
	// The classic buckets are exposed whatever the option.
	for _, name := range nativeOptionHistograms {
		if n := countKeys(text, name+"_bucket{"); n == 0 {
			t.Errorf("the daemon's /metrics has no %s_bucket series", name)
		}
	}
	if got := text["ntpexp_processing_seconds_count"]; got != answered {
		t.Errorf("daemon: ntpexp_processing_seconds_count %v, ntpexp_responses_total %v", got, answered)
	}

	if native {
		checkNativeStored(t, prom, text, answered, sources)
		for _, name := range nativeOptionHistograms {
			checkClassicStored(t, classic, name, text)
		}
	} else {
		// Native histograms are negotiated with this target: the store's
		// flush histogram, always native, is one ...
		res, err := prom.queryNative("ntpexp_store_flush_duration_seconds")
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || res[0].Histogram == nil {
			t.Fatalf("ntpexp_store_flush_duration_seconds: %+v, want one native histogram: Prometheus does not scrape native histograms", res)
		}
		// ... but none of the per-request histograms is.
		for _, name := range nativeOptionHistograms {
			res, err := prom.queryNative(fmt.Sprintf(`{__name__=%q}`, name))
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 0 {
				t.Errorf("%s: %d series stored under the bare name (%+v), want no native histogram", name, len(res), res[0])
			}
			checkClassicStored(t, prom, name, text)
		}
	}
	t.Logf("%d requests sent, %d replies, %v answered; checked in %v", load.Sent, load.Replies, answered,
		time.Since(start).Round(100*time.Millisecond))
}

// checkNativeStored checks that Prometheus holds each per-request histogram
// as native histograms only, agreeing with the daemon's classic series.
func checkNativeStored(t *testing.T, prom *promServer, text map[string]float64, answered float64, sources int) {
	t.Helper()
	got := map[string][]nativeSample{}
	for _, name := range nativeOptionHistograms {
		res, err := prom.queryNative(fmt.Sprintf(`{__name__=%q}`, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(res) == 0 {
			t.Errorf("%s: no native histogram stored", name)
		}
		// Series of labels not seen (an implementation no client is) are
		// empty; some must not be.
		nonEmpty := 0
		for _, s := range res {
			h := s.Histogram
			key := name + exposedLabels(s.Metric)
			if h == nil {
				t.Errorf("%s: a float sample %v, want a native histogram", key, s.Value)
				continue
			}
			if h.Count > 0 {
				nonEmpty++
			}
			// The native buckets add up to the count ...
			var inBuckets float64
			for _, b := range h.Buckets {
				inBuckets += b.Count
			}
			if inBuckets != h.Count {
				t.Errorf("%s: native buckets hold %v observations, count %v", key, inBuckets, h.Count)
			}
			// ... and count and sum are those of the classic series.
			if c := text[name+"_count"+exposedLabels(s.Metric)]; c != h.Count {
				t.Errorf("%s: native count %v, classic _count %v", key, h.Count, c)
			}
			if sum := text[name+"_sum"+exposedLabels(s.Metric)]; math.Abs(sum-h.Sum) > 1e-9*math.Max(1, math.Abs(sum)) {
				t.Errorf("%s: native sum %v, classic _sum %v", key, h.Sum, sum)
			}
		}
		if len(res) > 0 && nonEmpty == 0 {
			t.Errorf("%s: %d native histograms, all empty", name, len(res))
		}
		got[name] = res
	}
	total := func(name string, match func(map[string]string) bool) (count, sum float64, n int) {
		for _, s := range got[name] {
			if s.Histogram != nil && (match == nil || match(s.Metric)) {
				count += s.Histogram.Count
				sum += s.Histogram.Sum
				n++
			}
		}
		return count, sum, n
	}
	// One processing observation per answered request, also through PromQL.
	if c, _, _ := total("ntpexp_processing_seconds", nil); c != answered {
		t.Errorf("ntpexp_processing_seconds: native count %v, %v requests answered", c, answered)
	}
	if res, err := prom.query("histogram_count(ntpexp_processing_seconds)"); err != nil {
		t.Error(err)
	} else if len(res) != 1 || res[0].Value != answered {
		t.Errorf("histogram_count(ntpexp_processing_seconds) = %v, want %v", res, answered)
	}
	if res, err := prom.query("histogram_quantile(0.5, ntpexp_processing_seconds)"); err != nil {
		t.Error(err)
	} else if len(res) != 1 || !(res[0].Value > 0 && res[0].Value < 0.1) {
		t.Errorf("histogram_quantile(0.5, ntpexp_processing_seconds) = %v, want a processing time in (0, 100 ms)", res)
	}
	// Every answered request revealed an offset, apparent or exchange,
	// of about the clients' skew.
	offCount, offSum, _ := total("ntpexp_client_offset_seconds", nil)
	if offCount != answered {
		t.Errorf("ntpexp_client_offset_seconds: native count %v, %v requests answered", offCount, answered)
	}
	if mean := offSum / offCount; math.Abs(mean-nativeSkew.Seconds()) > 0.02 {
		t.Errorf("ntpexp_client_offset_seconds: mean %v s, want the clients' %v", mean, nativeSkew)
	}
	// Full exchanges: one delay per exchange offset, also per client.
	exCount, _, _ := total("ntpexp_client_offset_seconds", func(m map[string]string) bool { return m["method"] == "exchange" })
	delayCount, delaySum, _ := total("ntpexp_client_delay_seconds", nil)
	if exCount == 0 || delayCount != exCount {
		t.Errorf("ntpexp_client_delay_seconds: native count %v, %v exchange offsets", delayCount, exCount)
	} else if mean := delaySum / delayCount; !(mean > 0 && mean < 0.1) {
		t.Errorf("ntpexp_client_delay_seconds: mean %v s, want a loopback delay", mean)
	}
	rtCount, _, rtClients := total("ntpexp_client_round_trip_delay_seconds", nil)
	if rtCount != delayCount || rtClients != sources {
		t.Errorf("ntpexp_client_round_trip_delay_seconds: %v observations for %d clients, want %v for %d",
			rtCount, rtClients, delayCount, sources)
	}
	coCount, coSum, coClients := total("ntpexp_client_clock_offset_seconds", nil)
	if coClients != sources || coCount < exCount || coCount > offCount {
		t.Errorf("ntpexp_client_clock_offset_seconds: %v observations for %d clients, want between %v and %v for %d",
			coCount, coClients, exCount, offCount, sources)
	} else if mean := coSum / coCount; math.Abs(mean-nativeSkew.Seconds()) > 0.02 {
		t.Errorf("ntpexp_client_clock_offset_seconds: mean %v s, want the clients' %v", mean, nativeSkew)
	}
}

// checkClassicStored checks that Prometheus holds the classic series of a
// histogram, with the daemon's counts: _bucket series up to le="+Inf",
// _count and _sum, and nothing native among them.
func checkClassicStored(t *testing.T, prom *promServer, name string, text map[string]float64) {
	t.Helper()
	buckets, err := prom.queryNative(fmt.Sprintf(`{__name__=%q}`, name+"_bucket"))
	if err != nil {
		t.Fatal(err)
	}
	counts, err := prom.queryNative(fmt.Sprintf(`{__name__=%q}`, name+"_count"))
	if err != nil {
		t.Fatal(err)
	}
	sums, err := prom.queryNative(fmt.Sprintf(`{__name__=%q}`, name+"_sum"))
	if err != nil {
		t.Fatal(err)
	}
	if len(buckets) == 0 || len(counts) == 0 || len(sums) != len(counts) {
		t.Errorf("%s: Prometheus holds %d _bucket, %d _count and %d _sum series, want classic series",
			name, len(buckets), len(counts), len(sums))
		return
	}
	inf := map[string]float64{}
	for _, b := range append(append(buckets, counts...), sums...) {
		if b.Histogram != nil {
			t.Errorf("%s: a native histogram %v", name+exposedLabels(b.Metric), b.Metric)
		}
	}
	for _, b := range buckets {
		if b.Metric["le"] == "+Inf" {
			l := copyWithout(b.Metric, "le")
			inf[exposedLabels(l)] = b.Value
		}
	}
	var total float64
	for _, c := range counts {
		key := exposedLabels(c.Metric)
		if v, ok := inf[key]; !ok || v != c.Value {
			t.Errorf("%s_count%s = %v, le=\"+Inf\" bucket %v (found: %v)", name, key, c.Value, v, ok)
		}
		if want := text[name+"_count"+key]; c.Value != want {
			t.Errorf("%s_count%s = %v in Prometheus, %v in the daemon", name, key, c.Value, want)
		}
		total += c.Value
	}
	if total == 0 {
		t.Errorf("%s: all _count series are 0: no observation", name)
	}
}

// nativeSample is an instant query's result element: a float or a native
// histogram.
type nativeSample struct {
	Metric    map[string]string
	Value     float64
	Histogram *nativeHistogram
}

type nativeHistogram struct {
	Count, Sum float64
	Buckets    []nativeBucket
}

type nativeBucket struct {
	Lower, Upper, Count float64
}

// queryNative runs an instant query whose result may hold native
// histograms (the "histogram" field of the query API instead of "value").
func (s *promServer) queryNative(q string) ([]nativeSample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric    map[string]string `json:"metric"`
			Value     []json.RawMessage `json:"value"`
			Histogram []json.RawMessage `json:"histogram"`
		} `json:"result"`
	}
	if err := s.api("/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %q, want vector", q, data.ResultType)
	}
	num := func(raw json.RawMessage) (float64, error) {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, err
		}
		return strconv.ParseFloat(str, 64)
	}
	var out []nativeSample
	for _, r := range data.Result {
		smp := nativeSample{Metric: r.Metric}
		switch {
		case len(r.Value) == 2 && r.Histogram == nil:
			v, err := num(r.Value[1])
			if err != nil {
				return nil, fmt.Errorf("query %q: value %s: %v", q, r.Value[1], err)
			}
			smp.Value = v
		case len(r.Histogram) == 2 && r.Value == nil:
			var h struct {
				Count   json.RawMessage     `json:"count"`
				Sum     json.RawMessage     `json:"sum"`
				Buckets [][]json.RawMessage `json:"buckets"`
			}
			if err := json.Unmarshal(r.Histogram[1], &h); err != nil {
				return nil, fmt.Errorf("query %q: histogram %s: %v", q, r.Histogram[1], err)
			}
			nh := &nativeHistogram{}
			var err error
			if nh.Count, err = num(h.Count); err != nil {
				return nil, fmt.Errorf("query %q: histogram count %s: %v", q, h.Count, err)
			}
			if nh.Sum, err = num(h.Sum); err != nil {
				return nil, fmt.Errorf("query %q: histogram sum %s: %v", q, h.Sum, err)
			}
			for _, b := range h.Buckets {
				// [boundary rule, lower, upper, count]
				if len(b) != 4 {
					return nil, fmt.Errorf("query %q: histogram bucket %s", q, b)
				}
				var nb nativeBucket
				for i, p := range []*float64{&nb.Lower, &nb.Upper, &nb.Count} {
					if *p, err = num(b[i+1]); err != nil {
						return nil, fmt.Errorf("query %q: histogram bucket %s: %v", q, b, err)
					}
				}
				nh.Buckets = append(nh.Buckets, nb)
			}
			smp.Histogram = nh
		default:
			return nil, fmt.Errorf("query %q: a result with value %s and histogram %s", q, r.Value, r.Histogram)
		}
		out = append(out, smp)
	}
	return out, nil
}

// exposedLabels formats a series' labels as the text exposition does
// (sorted, `{a="x",b="y"}`, "" for none), leaving out the name and the
// labels Prometheus adds.
func exposedLabels(m map[string]string) string {
	var names []string
	for k := range m {
		if k != "__name__" && k != "job" && k != "instance" {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s=%q", k, m[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func copyWithout(m map[string]string, drop string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != drop {
			out[k] = v
		}
	}
	return out
}

func countKeys(m map[string]float64, prefix string) int {
	n := 0
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

var promVersionRE = regexp.MustCompile(`(?m)^prometheus, version (\d+)\.(\d+)\.`)

// startPrometheusNativeHistograms is startPrometheus (no rules, no
// Alertmanager) with native-histogram scraping on: the native-histograms
// feature flag up to Prometheus 3.7, scrape_native_histograms from 3.8
// (where native histograms are stable and the flag does nothing).
func startPrometheusNativeHistograms(t testing.TB, target string) *promServer {
	t.Helper()
	bin := peers.Require(t, "prometheus")
	out, err := exec.Command(bin, "--version").CombinedOutput()
	m := promVersionRE.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("%s --version: %v: %s", bin, err, out)
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	var flags []string
	global := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
	switch {
	case major == 2 && minor < 40:
		t.Fatalf("Prometheus %d.%d cannot scrape native histograms (2.40 or later)", major, minor)
	case major < 3 || major == 3 && minor < 8:
		flags = append(flags, "--enable-feature=native-histograms")
	default:
		global += "  scrape_native_histograms: true\n"
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	writeTestFile(t, conf, global+fmt.Sprintf("scrape_configs:\n  - job_name: ntpexp\n    static_configs:\n      - targets: [%q]\n", target))
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	args := append([]string{"--config.file=" + conf, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr}, flags...)
	p := peers.StartProc(t, "prometheus-native", dir, exec.Command(bin, args...))
	s := &promServer{t: t, URL: "http://" + addr, Proc: p, Dir: dir}
	waitHTTP200(t, p, s.URL+"/-/ready", 30*time.Second)
	t.Logf("Prometheus %d.%d scraping native histograms (%s)", major, minor, strings.TrimSpace(strings.Join(flags, " ")+" "+
		map[bool]string{true: "", false: "scrape_native_histograms: true"}[len(flags) > 0]))
	return s
}
