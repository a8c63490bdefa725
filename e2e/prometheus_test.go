package e2e

import (
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// Client addresses of the scenario. ntpdig cannot choose its source
// address, so the skewed client is 127.0.0.1; ntpload sets per-packet
// source addresses in 127.0.0.0/8, and the junk sender binds its own.
const (
	skewedClient   = "127.0.0.1" // ntpdig under faketime +1.5s
	exchangeClient = "127.1.0.1" // first of 16 ntpload ntpd-like clients: full exchanges, delays
	floodClient    = "127.2.0.1" // ntpload SNTP, NTPv3, 200/s: rate limited, KoD
	evictionFirst  = "127.3.0.1" // ntpload chrony-like, 96 addresses through a 64-entry table: evictions
	junkClient     = "127.4.0.1" // raw packets for every junk drop reason
)

// rateInterval stands in for Grafana's $__rate_interval: at least four
// scrape intervals (1 s here), and short enough that the scenario's traffic
// of the last seconds shows.
const rateInterval = "15s"

// Every panel target must parse and return series. zeroOK lists the
// targets (dashboard file / panel title / refId) whose series may all be 0
// or NaN in this scenario, and why; every other target must show at least
// one finite, non-zero value: the scenario produces real data for it.
var zeroOK = map[string]string{
	"ntpexp-overview.json/Rows dropped and write errors/A": "nothing is dropped: the queue never fills",
	"ntpexp-overview.json/Rows dropped and write errors/B": "no write fails",
	"ntpexp-overview.json/Leap indicator/A":                "leap 0 (none): the daemon runs with --ntp.clock-sync assume-synchronized",
	// The advertised root delay is 0 (ntpexp has no upstream); the other
	// targets of the panel carry values.
	"ntpexp-overview.json/Advertised clock quality/A": "root delay 0: ntpexp does not know its upstream",
	"ntpexp-overview.json/Write queue/A":              "the queue may be empty at the instant of the query (flushed every 1 s or 100 rows)",
	// The skewed client only reveals apparent offsets: no exchange, so no
	// delay (checked with the exchange client below).
	"ntpexp-client.json/Mean round-trip delay/A": "ntpdig completes no exchange (checked with " + exchangeClient + ")",
	"ntpexp-client.json/Round-trip delay/A":      "ntpdig completes no exchange (checked with " + exchangeClient + ")",
	"ntpexp-client.json/Round-trip delay/B":      "ntpdig completes no exchange (checked with " + exchangeClient + ")",
	"ntpexp-client.json/Round-trip delay/C":      "ntpdig completes no exchange (checked with " + exchangeClient + ")",
}

// TestPrometheusDashboardsAndAlerts runs a real ntpexp with real clients
// (ntpdig with a clock 1.5 s ahead; ntpload exchange, flood and churn
// clients; junk packets), a real Prometheus that scrapes it and evaluates
// alerts/ntpexp.rules.yml, and a real Alertmanager. Every query of both
// dashboards must parse and return data, every variable query must list
// the scenario's values, every rule must load and evaluate without error,
// and the client-offset alert must fire for the skewed client and reach
// Alertmanager.
func TestPrometheusDashboardsAndAlerts(t *testing.T) {
	peers.Require(t, "prometheus")
	peers.Require(t, "prometheus-alertmanager")
	peers.Require(t, "ntpdig")
	peers.Require(t, "faketime")
	peers.RequireRoot(t, "serve NTP on 127.0.0.1:123 (ntpdig has no port option)")
	start := time.Now()
	dashboards := loadDashboards(t)

	// The shipped rules, with one change: NtpexpClientOffsetHigh waits
	// for: 10m before firing, far beyond a test that should take under a
	// minute, so a copy with its for: line replaced by 5s is loaded
	// instead. Every other rule, and this one's expression, labels and
	// annotations, are the shipped ones; the promtool tests prove the real
	// for: durations.
	rulesSrc := ruleFiles(t)
	if len(rulesSrc) != 1 {
		t.Fatalf("expected one rules file, found %v", rulesSrc)
	}
	text, err := os.ReadFile(rulesSrc[0])
	if err != nil {
		t.Fatal(err)
	}
	short, err := rulesWithFor(string(text), "NtpexpClientOffsetHigh", "5s")
	if err != nil {
		t.Fatal(err)
	}
	rulesFile := filepath.Join(t.TempDir(), "ntpexp.rules.yml")
	writeTestFile(t, rulesFile, short)

	// ntpexp: ntpdig needs port 123. A small client table (64) so that
	// the churn clients evict; rate limiting with a 0.25 s mean interval
	// so that only the flood client is limited; a KoD for every
	// rate-limited request that is not answered anyway.
	d := startDaemon(t, daemonOpts{NTPAddr: "127.0.0.1:123", Args: []string{
		"--metrics.max-clients", "256",
		"--performance.max-cache-size", "64",
		"--ntp.ratelimit.interval=-2",
		"--ntp.ratelimit.kod", "1",
	}})
	amURL, _ := startAlertmanager(t)
	prom := startPrometheus(t, d.WebAddr, rulesFile, amURL)

	// Traffic, all of it running until the test ends. ntpload's open loop
	// sends batches of 16 requests, one per source in turn: 96 chrony-like
	// clients cycling through a 64-entry client table (every request
	// evicts), 16 ntpd-like clients completing an exchange every 2 s, one
	// flood client (batches of 16 back to back: rate limited) and junk.
	startNtpload(t, "ntpload-churn", "-server", d.NTPAddr, "-personality", "chrony", "-workers", "1",
		"-sources", "96", "-first-source", evictionFirst, "-rate", "20", "-duration", "5m")
	startNtpload(t, "ntpload-exchange", "-server", d.NTPAddr, "-personality", "ntpd", "-workers", "1",
		"-sources", "16", "-first-source", exchangeClient, "-rate", "8", "-duration", "5m")
	startNtpload(t, "ntpload-flood", "-server", d.NTPAddr, "-personality", "sntp", "-version", "3",
		"-workers", "1", "-sources", "1", "-first-source", floodClient, "-rate", "200", "-duration", "5m")
	sendJunk(t, d.NTPAddr, junkClient)

	labels := prom.waitTargetUp(30 * time.Second)
	instance := labels["instance"]
	upAfter := time.Since(start)
	// The skewed client once now, so that its per-client series exist
	// (with the count of 1) before its later requests: rate() ignores the
	// value a series is first scraped with.
	ntpdigSkewed(t)
	firstSkewAt := time.Now()

	// Wait until Prometheus holds what the panels show.
	for _, q := range []string{
		fmt.Sprintf(`rate(ntpexp_client_round_trip_delay_seconds_count{client=%q}[%s]) > 0`, exchangeClient, rateInterval),
		fmt.Sprintf(`rate(ntpexp_kod_responses_total[%s]) > 0`, rateInterval),
		fmt.Sprintf(`rate(ntpexp_store_flush_duration_seconds_count[%s]) > 0`, rateInterval),
		`ntpexp_clients_evicted_total > 0`,
		`ntpexp:client_offset_threshold_seconds`,
	} {
		waitNonEmpty(t, prom, q, 30*time.Second)
	}
	// Every junk reason (and rate_limit) was counted under its documented label value.
	for _, reason := range []string{"too_short", "bad_version", "bad_mode", "malformed", "mode_control", "mode_private", "rate_limit"} {
		waitNonEmpty(t, prom, fmt.Sprintf(`ntpexp_drops_total{reason=%q} > 0`, reason), 10*time.Second)
	}

	// The skewed client, last, so that its requests are recent when the
	// panels are queried.
	for i := 0; i < 3; i++ {
		ntpdigSkewed(t)
		time.Sleep(300 * time.Millisecond)
	}

	waitNonEmpty(t, prom, fmt.Sprintf(`ntpexp_client_last_offset_seconds{client=%q} > 1.4`, skewedClient), 15*time.Second)
	waitNonEmpty(t, prom, fmt.Sprintf(`increase(ntpexp_client_requests_total{client=%q}[%s]) >= 3`, skewedClient, rateInterval), 15*time.Second)

	// Variables: label_values queries list the scenario's job, instance and clients.
	vals := map[string]string{
		"job": "ntpexp", "instance": instance, "client": skewedClient,
		"__rate_interval": rateInterval, "__interval": "1s", "__range": "5m", "__range_s": "300",
	}
	for _, db := range dashboards {
		for _, v := range db.Templating.List {
			if v.Type != "query" {
				continue
			}
			m := labelValuesRE.FindStringSubmatch(v.QueryString())
			if m == nil {
				t.Errorf("%s: variable %s: query %q is not label_values", filepath.Base(db.Path), v.Name, v.QueryString())
				continue
			}
			sel, err := substitute(m[1], vals)
			if err != nil {
				t.Error(err)
				continue
			}
			got, err := prom.labelValues(sel, m[2])
			if err != nil {
				t.Errorf("%s: variable %s: %v", filepath.Base(db.Path), v.Name, err)
				continue
			}
			want := []string{vals[v.Name]}
			if v.Name == "client" {
				want = append(want, exchangeClient, floodClient)
			}
			for _, w := range want {
				if !hasString(got, w) {
					t.Errorf("%s: variable %s (%s) lists %v, missing %q", filepath.Base(db.Path), v.Name, v.QueryString(), got, w)
				}
			}
		}
	}

	// Panels: every target parses and returns series; all but the
	// zeroOK ones show real (finite, non-zero) data.
	queried := 0
	checkPanels := func(db *gDashboard, vals map[string]string) map[string][]promSample {
		results := map[string][]promSample{}
		file := filepath.Base(db.Path)
		for _, p := range db.AllPanels() {
			for _, tg := range p.Targets {
				key := file + "/" + p.Title + "/" + tg.RefID
				q, err := substitute(tg.Expr, vals)
				if err != nil {
					t.Errorf("%s: %v", key, err)
					continue
				}
				res, err := prom.query(q)
				queried++
				if err != nil {
					t.Errorf("%s: query failed: %v\n  %s", key, err, q)
					continue
				}
				results[key] = res
				if passiveOnly(tg.Expr) {
					// This scenario serves; TestPassiveWatchesChronyd
					// checks a passive daemon exposes these metrics.
					if len(res) != 0 {
						t.Errorf("%s: passive-mode series in server mode: %v", key, res)
					}
					continue
				}
				if len(res) == 0 {
					t.Errorf("%s: no series\n  %s", key, q)
					continue
				}
				if _, ok := zeroOK[key]; !ok && !anyReal(res) {
					t.Errorf("%s: only zero or NaN values (%d series), but the scenario should show data\n  %s", key, len(res), q)
				}
			}
		}
		return results
	}
	var panelResults []map[string][]promSample
	for _, db := range dashboards {
		panelResults = append(panelResults, checkPanels(db, vals))
	}
	// The per-client dashboard for the exchange client: delays are real.
	for _, db := range dashboards {
		if db.Variable("client") == nil {
			continue
		}
		ex := map[string]string{}
		for k, v := range vals {
			ex[k] = v
		}
		ex["client"] = exchangeClient
		file := filepath.Base(db.Path)
		res := checkPanels(db, ex)
		for _, key := range []string{file + "/Mean round-trip delay/A", file + "/Round-trip delay/A", file + "/Round-trip delay/B"} {
			if r, ok := res[key]; !ok || !anyReal(r) || r[0].Value <= 0 || r[0].Value > 0.1 {
				t.Errorf("%s for %s: %v, want a loopback delay (0 < d <= 100 ms)", key, exchangeClient, r)
			}
		}
	}
	// Spot checks of values the scenario fixes.
	for _, r := range panelResults {
		for key, res := range r {
			if strings.HasSuffix(key, "/Latest offset/A") {
				if len(res) != 1 || math.Abs(res[0].Value-1.5) > 0.01 {
					t.Errorf("%s: %v, want the skewed client's +1.5 s", key, res)
				}
			}
			if strings.HasSuffix(key, "/Offset distribution/A") {
				// All of the skewed client's offsets are in the (1 s, 60 s] bucket.
				in := false
				for _, r := range res {
					le, err := strconv.ParseFloat(r.Metric["le"], 64)
					if err != nil {
						t.Errorf("%s: le %q: %v", key, r.Metric["le"], err)
					}
					if le == 1 && r.Value != 0 {
						t.Errorf("%s: %v/s at or below 1 s: the +1.5 s offsets are not in (1 s, 60 s]", key, r.Value)
					}
					in = in || le == 60 && r.Value > 0
				}
				if !in {
					t.Errorf("%s: %v: no offsets up to 60 s", key, res)
				}
			}
			if strings.HasSuffix(key, "/Top clients by |offset|/A") {
				if len(res) == 0 || res[0].Metric["client"] != skewedClient || math.Abs(res[0].Value-1.5) > 0.01 {
					t.Errorf("%s: %v, want %s first at 1.5 s", key, res, skewedClient)
				}
			}
			if strings.HasSuffix(key, "/Top clients by request rate/A") {
				found := false
				for _, r := range res {
					found = found || r.Metric["client"] == floodClient && r.Value > 10
				}
				if len(res) != 10 || !found {
					t.Errorf("%s: %v, want ten clients including the flood client %s above 10/s", key, res, floodClient)
				}
			}
		}
	}

	// Rules: all loaded by Prometheus, all evaluating without error (a
	// many-to-many match or a bad function would show here), every alert
	// expression parses as a query, and those this scenario triggers
	// return series while the others return none.
	alertNames := map[string]bool{}
	for _, a := range readAlerts(t) {
		alertNames[a.Name] = true
	}
	recordNames := readRecordNames(t)
	var rules []promRule
	deadline := time.Now().Add(15 * time.Second)
	for {
		rules, err = prom.rules()
		if err != nil {
			t.Fatal(err)
		}
		unknown := 0
		for _, r := range rules {
			if r.Health != "ok" {
				unknown++
			}
		}
		if unknown == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	loaded := map[string]bool{}
	for _, r := range rules {
		loaded[r.Name] = true
		if r.Health != "ok" {
			t.Errorf("rule %s: health %q: %s", r.Name, r.Health, r.LastError)
		}
	}
	for name := range alertNames {
		if !loaded[name] {
			t.Errorf("alert %s not loaded by Prometheus", name)
		}
	}
	for _, name := range recordNames {
		if !loaded[name] {
			t.Errorf("recording rule %s not loaded by Prometheus", name)
		}
	}
	// What each alert expression returns in this scenario: "yes" must
	// return series, "no" must not; the spike rule compares with a 1-day
	// average this fresh Prometheus does not have, so it is only parsed.
	expect := map[string]string{
		"NtpexpDown":                      "no",
		"NtpexpTargetMissing":             "no",
		"NtpexpServerClockUnsynchronized": "no",
		"NtpexpClientOffsetHigh":          "yes", // ntpdig at +1.5 s
		"NtpexpClientClockWrongByHours":   "no",
		"NtpexpClientDelayHigh":           "no", // loopback
		"NtpexpRequestRateSpike":          "parse",
		"NtpexpRateLimitingHeavy":         "yes", // the flood client
		"NtpexpMalformedPacketSurge":      "yes", // the junk sender
		"NtpexpStoreDroppingObservations": "no",
		"NtpexpStoreWriteErrors":          "no",
		"NtpexpStoreFallingBehind":        "no",
		"NtpexpStoreStalled":              "no",
		// Server mode has no passive series: these must stay quiet
		// (promtool tests in alerts/ cover them firing).
		"NtpexpPassiveDaemonNotAnswering": "no",
		"NtpexpPassiveUnansweredHigh":     "no",
		"NtpexpCaptureLosingPackets":      "no",
	}
	for _, r := range rules {
		if r.Type != "alerting" {
			continue
		}
		res, err := prom.query(r.Query)
		if err != nil {
			t.Errorf("alert %s: expression does not run as a query: %v\n  %s", r.Name, err, r.Query)
			continue
		}
		switch expect[r.Name] {
		case "yes":
			if len(res) == 0 {
				t.Errorf("alert %s: expression returns nothing, but the scenario triggers it\n  %s", r.Name, r.Query)
			}
		case "no":
			if len(res) != 0 {
				t.Errorf("alert %s: expression returns %v, but the scenario should not trigger it\n  %s", r.Name, res, r.Query)
			}
		case "parse":
		default:
			t.Errorf("alert %s: no expectation in this test; add one", r.Name)
		}
	}

	// The offset alert fires in Prometheus for the skewed client ...
	var fired promAlert
	pollFor(t, 30*time.Second, "NtpexpClientOffsetHigh firing in Prometheus", func() (bool, string) {
		alerts, err := prom.alerts()
		if err != nil {
			return false, err.Error()
		}
		for _, a := range alerts {
			if a.Labels["alertname"] == "NtpexpClientOffsetHigh" && a.Labels["client"] == skewedClient && a.State == "firing" {
				fired = a
				return true, ""
			}
		}
		return false, fmt.Sprint(alerts)
	})
	firedAfter := time.Since(firstSkewAt)
	wantLabels := map[string]string{"alertname": "NtpexpClientOffsetHigh", "client": skewedClient,
		"job": "ntpexp", "instance": instance, "severity": "warning"}
	for k, v := range wantLabels {
		if fired.Labels[k] != v {
			t.Errorf("firing alert label %s=%q, want %q (labels %v)", k, fired.Labels[k], v, fired.Labels)
		}
	}
	var off float64
	if s := fired.Annotations["summary"]; !strings.HasPrefix(s, "NTP client "+skewedClient+" clock is off by ") {
		t.Errorf("summary %q", s)
	} else if _, err := fmt.Sscanf(strings.TrimPrefix(s, "NTP client "+skewedClient+" clock is off by "), "%gs", &off); err != nil || math.Abs(off-1.5) > 0.01 {
		t.Errorf("summary %q: want an offset of 1.5s (%v)", s, err)
	}
	if u := fired.Annotations["runbook_url"]; u != runbookURLPrefix+"ntpexpclientoffsethigh" {
		t.Errorf("runbook_url %q", u)
	}
	// ... and no other alert fires (every other for: is minutes long, and
	// the store alerts without for: must not match).
	alerts, err := prom.alerts()
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, a := range alerts {
		states = append(states, a.Labels["alertname"]+"{client="+a.Labels["client"]+"}="+a.State)
		if a.State == "firing" && a.Labels["alertname"] != "NtpexpClientOffsetHigh" {
			t.Errorf("unexpected firing alert %v", a.Labels)
		}
		if a.Labels["alertname"] == "NtpexpClientOffsetHigh" && a.Labels["client"] != skewedClient {
			t.Errorf("offset alert for a client with a good clock: %v value %s", a.Labels, a.Value)
		}
	}
	sort.Strings(states)

	// ... and reaches Alertmanager with its client label.
	pollFor(t, 30*time.Second, "NtpexpClientOffsetHigh in Alertmanager", func() (bool, string) {
		got, err := alertmanagerAlerts(amURL)
		if err != nil {
			return false, err.Error()
		}
		for _, a := range got {
			if a.Labels["alertname"] == "NtpexpClientOffsetHigh" && a.Labels["client"] == skewedClient {
				if a.Status.State != "active" || a.Annotations["runbook_url"] == "" || a.Labels["severity"] != "warning" {
					return false, fmt.Sprintf("%+v", a)
				}
				return true, ""
			}
		}
		return false, fmt.Sprint(got)
	})
	t.Logf("target up after %v; %d panel queries checked (%d dashboards, the client one for two clients); %d rules loaded and healthy; "+
		"offset alert firing %v after the first skewed request (for: 5s) and in Alertmanager; alerts: %v; total %v",
		upAfter.Round(100*time.Millisecond), queried, len(dashboards), len(rules),
		firedAfter.Round(100*time.Millisecond), states, time.Since(start).Round(100*time.Millisecond))
}

// ntpdigSkewed runs ntpdig with its clock 1.5 s ahead against 127.0.0.1:123.
func ntpdigSkewed(t *testing.T) {
	t.Helper()
	res, err := peers.NTPdig(t, skewedClient, peers.NTPdigOptions{FakeTime: "+1.5s"})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.Offset+1.5) > 5e-3 {
		t.Fatalf("ntpdig under faketime +1.5s measured %v s, want about -1.5", res.Offset)
	}
}

func hasString(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// anyReal reports whether a result holds a finite, non-zero value.
func anyReal(res []promSample) bool {
	for _, s := range res {
		if s.Value != 0 && !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0) {
			return true
		}
	}
	return false
}

func waitNonEmpty(t *testing.T, prom *promServer, q string, timeout time.Duration) {
	t.Helper()
	pollFor(t, timeout, q, func() (bool, string) {
		res, err := prom.query(q)
		if err != nil {
			return false, err.Error()
		}
		return len(res) > 0, "no series"
	})
}

func pollFor(t *testing.T, timeout time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v (last: %s)", what, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// startNtpload runs ntpload in the background until the test ends.
func startNtpload(t *testing.T, name string, args ...string) {
	t.Helper()
	peers.StartProc(t, name, "", exec.Command(ntploadBin, args...))
}

// sendJunk sends, every 20 ms until the test ends, one request for each
// junk drop reason from src to the server at addr: 300 packets/s, so that
// even the 5-minute rate of the alert, computed over the few seconds of
// data a fresh Prometheus holds, is well above 1/s.
func sendJunk(t *testing.T, addr, src string) {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, raddr)
	if err != nil {
		t.Fatal(err)
	}
	header := func(first byte, n int) []byte {
		b := make([]byte, n)
		b[0] = first
		return b
	}
	packets := [][]byte{
		header(0x16, 12),   // too_short: an ntpq header alone (12 bytes)
		header(0x16, 48),   // mode_control: version 2, mode 6
		header(0x17, 48),   // mode_private: version 2, mode 7 (ntpdc)
		header(0x03, 48),   // bad_version: version 0, mode 3
		header(0x24, 48),   // bad_mode: version 4, mode 4 (a server reply)
		header(0x23, 48+6), // malformed: version 4, mode 3, 6 bytes that are neither an extension field nor a MAC
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, p := range packets {
				conn.Write(p)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		wg.Wait()
		conn.Close()
	})
}

// passiveOnly reports whether a panel query reads only metrics that exist
// in passive mode (ntpexp_passive_*, ntpexp_capture_*).
func passiveOnly(expr string) bool {
	names := regexp.MustCompile(`ntpexp_[a-z_]+`).FindAllString(expr, -1)
	for _, n := range names {
		if !strings.HasPrefix(n, "ntpexp_passive_") && !strings.HasPrefix(n, "ntpexp_capture_") {
			return false
		}
	}
	return len(names) > 0
}
