package e2e

import (
	"bufio"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/ntpexp/ntpexp/e2e/peers"
	"github.com/ntpexp/ntpexp/ntp"
)

// Passive mode (issue 9): ntpexp watches the traffic of a daemon that owns
// port 123 in namespace A, captured on A's veth; real clients run in B.

func startPassive(t *testing.T, ns *peers.Netns, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"--mode=passive", "--capture.interface", ns.Dev, "--capture.reply-timeout", "0.5"}, extra...)
	return startDaemon(t, daemonOpts{Netns: ns, Args: args})
}

// nsMetrics scrapes a daemon's /metrics inside its namespace. The TCP
// connection is opened on a thread in the namespace (http.Client would
// dial from another goroutine, outside it).
func (d *daemon) nsMetrics() map[string]float64 {
	d.t.Helper()
	var m map[string]float64
	err := d.Netns.Do(func() error {
		c, err := net.DialTimeout("tcp", d.NetnsWebAddr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		m = parseExposition(d.t, resp.Body)
		return nil
	})
	if err != nil {
		d.t.Fatalf("scraping %s in %s: %v", d.NetnsWebAddr, d.Netns.Name, err)
	}
	return m
}

func netipPort(host string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(host), port)
}

// hasSeries reports whether the scrape has a series of the metric name
// (histogram and summary suffixes included).
func hasSeries(m map[string]float64, name string) bool {
	for k := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			return true
		}
	}
	return false
}

func sumMetricFamily(m map[string]float64, name string) float64 {
	return sumMetric(m, name) + sumMetric(m, name+"_count")
}

func sumMetric(m map[string]float64, prefix string) float64 {
	s := 0.0
	for k, v := range m {
		if k == prefix || strings.HasPrefix(k, prefix+"{") {
			s += v
		}
	}
	return s
}

// udpSocketsOf lists the UDP and raw IP sockets a process owns, from its
// file descriptors and its namespace's socket tables: passive mode must
// have none (it never sends a packet; AF_PACKET sockets are not listed).
func udpSocketsOf(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var found []string
	for _, table := range []string{"udp", "udp6", "raw", "raw6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 && inodes[f[9]] {
				found = append(found, table+" "+f[1])
			}
		}
	}
	return found
}

// TestPassiveMatchesServerMode: ntpexp in server mode is the daemon, a
// second ntpexp watches it passively, and real clients (ntpdig, ntpdig
// 1.5 s ahead, NTPsec ntpd with version 3, chronyd) use it. Both must
// store the same observations: same requests, same offsets, delays,
// methods, implementations and processing times.
func TestPassiveMatchesServerMode(t *testing.T) {
	pair := peers.NewNetnsPair(t)
	srv := startDaemon(t, daemonOpts{NTPAddr: pair.A.Addr.String() + ":123", Netns: pair.A, Args: []string{"--ntp.ratelimit.enabled=false"}})
	pas := startPassive(t, pair.A)

	// One client at a time: they share B's address, and a client's
	// exchange is recognised per address (as in server mode).
	c := peers.StartChronydClient(t, peers.ChronydClientConfig{Server: pair.A.Addr.String(), Port: 123,
		ServerOptions: "iburst minpoll -2 maxpoll -2", Netns: pair.B})
	if _, err := c.WaitMeasurements(8, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	for _, ft := range []string{"", "+1.5s", ""} {
		if _, err := peers.NTPdig(t, pair.A.Addr.String(), peers.NTPdigOptions{FakeTime: ft, Netns: pair.B}); err != nil {
			t.Fatal(err)
		}
	}
	n := peers.StartNTPsecd(t, peers.NTPsecConfig{Server: pair.A.Addr.String(), Version: 3, Netns: pair.B})
	if _, err := waitRaw(n, 4, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	n.Stop()
	time.Sleep(time.Second) // past the reply timeout of the last request
	if s := udpSocketsOf(t, pas.Proc.Pid()); len(s) > 0 {
		t.Errorf("passive ntpexp owns UDP/raw sockets %v", s)
	}
	m := pas.nsMetrics()
	srv.stop()
	pas.stop()

	want, got := srv.export(), pas.export()
	type key struct{ ip, origin, receive string }
	byKey := map[key][]exportRow{}
	for _, r := range got {
		k := key{r.ClientIP + ":" + strconv.Itoa(r.ClientPort), r.Origin, r.Receive}
		byKey[k] = append(byKey[k], r)
	}
	methods := map[string]int{}
	for _, w := range want {
		k := key{w.ClientIP + ":" + strconv.Itoa(w.ClientPort), w.Origin, w.Receive}
		var match *exportRow
		for i, r := range byKey[k] {
			if sameInstant(t, r.Time, w.Time, time.Microsecond) {
				match = &byKey[k][i]
				byKey[k] = append(byKey[k][:i], byKey[k][i+1:]...)
				break
			}
		}
		if match == nil {
			t.Errorf("server-mode observation with no passive twin: %+v", w)
			continue
		}
		methods[w.Implementation+"/"+w.OffsetMethod]++
		if match.DropReason != w.DropReason || match.OffsetMethod != w.OffsetMethod || match.Implementation != w.Implementation ||
			match.Version != w.Version || match.Mode != w.Mode || match.Stratum != w.Stratum || match.Poll != w.Poll ||
			match.Interleaved != w.Interleaved || !closeTo(match.Offset, w.Offset, 2e-9) || !closeTo(match.Delay, w.Delay, 2e-9) ||
			math.Abs(match.Processing-w.Processing) > 2e-9 {
			t.Errorf("passive %+v\nserver  %+v", *match, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("passive stored %d observations, server mode %d", len(got), len(want))
	}
	for _, need := range []string{"ntpd/exchange", "ntpdig/apparent", "chrony/none"} {
		if methods[need] == 0 {
			t.Errorf("no %s observation among %v", need, methods)
		}
	}
	if m["ntpexp_passive_unanswered_total"] != 0 || m["ntpexp_capture_kernel_drops_total"] != 0 || m[`ntpexp_passive_replies_total{result="unmatched"}`] != 0 {
		t.Errorf("passive metrics: unanswered %v, kernel drops %v, unmatched replies %v", m["ntpexp_passive_unanswered_total"],
			m["ntpexp_capture_kernel_drops_total"], m[`ntpexp_passive_replies_total{result="unmatched"}`])
	}
	t.Logf("%d observations in both modes, identical (%v)", len(want), methods)
}

func sameInstant(t *testing.T, a, b string, tol time.Duration) bool {
	ta, err1 := time.Parse(time.RFC3339Nano, a)
	tb, err2 := time.Parse(time.RFC3339Nano, b)
	if err1 != nil || err2 != nil {
		t.Fatalf("bad times %q %q", a, b)
	}
	d := ta.Sub(tb)
	return d >= -tol && d <= tol
}

func closeTo(a, b *float64, tol float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return math.Abs(*a-*b) <= tol
}

// TestPassiveWatchesChronyd: chronyd is the daemon, serving on two
// addresses of A's interface. NTPsec ntpd (version 3) gives exchange
// offsets that must equal ntpd's own computation from its rawstats within
// 1 µs; ntpdig's apparent offsets must agree with what ntpdig itself
// computed; every exchange the chronyd client measured must be seen;
// requests to each address are recorded with that local_ip; chronyd's
// processing time is recorded.
func TestPassiveWatchesChronyd(t *testing.T) {
	pair := peers.NewNetnsPair(t)
	// A second address on the daemon's interface; chronyd listens on all
	// and answers each request from the address it was sent to.
	second := pair.A.Addr.Next().Next()
	if out, err := pair.A.Exec(10*time.Second, "ip", "addr", "add", second.String()+"/24", "dev", pair.A.Dev); err != nil {
		t.Fatalf("adding %s to %s: %v %s", second, pair.A.Dev, err, out)
	}
	peers.StartChronydServer(t, peers.ChronydServerConfig{Netns: pair.A, Addr: "0.0.0.0"})
	pas := startPassive(t, pair.A)
	// One client at a time (they share B's address; see above).
	c := peers.StartChronydClient(t, peers.ChronydClientConfig{Server: pair.A.Addr.String(), Port: 123,
		ServerOptions: "iburst minpoll -2 maxpoll -2", Netns: pair.B})
	if err := c.WaitSelected(pair.A.Addr.String(), 30*time.Second); err != nil {
		t.Fatalf("chronyd client did not select the chronyd server: %v", err)
	}
	c.Stop()
	measured, err := c.Measurements()
	if err != nil {
		t.Fatal(err)
	}
	digs := map[string]peers.NTPdigResult{}
	for _, addr := range []string{pair.A.Addr.String(), second.String()} {
		dig, err := peers.NTPdig(t, addr, peers.NTPdigOptions{Netns: pair.B})
		if err != nil {
			t.Fatal(err)
		}
		digs[addr] = dig
	}
	n := peers.StartNTPsecd(t, peers.NTPsecConfig{Server: pair.A.Addr.String(), Version: 3, Netns: pair.B})
	raws, err := waitRaw(n, 5, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rows := pas.waitRows(3, 30*time.Second, func(r exportRow) bool { return r.OffsetMethod == "exchange" })
	if raws, err = n.RawStats(); err != nil { // every exchange so far
		t.Fatal(err)
	}
	byT3 := map[uint64][2]float64{}
	for _, r := range raws {
		t1, t2, t3, t4 := r.Origin, r.Receive, r.Transmit, r.Destination
		byT3[t3] = [2]float64{-(fixed(t2-t1) + fixed(t3-t4)) / 2, fixed(t4-t1) - fixed(t3-t2)}
	}
	matched := 0
	var unmatched []string
	for _, r := range rows {
		t3, _ := strconv.ParseUint(r.Origin, 16, 64)
		// ntpd's rawstats print timestamps in decimal, rounded, while
		// chronyd fills the bits below its precision with noise: match
		// within 2^-22 s (0.24 µs).
		var v [2]float64
		ok := false
		for rt3, rv := range byT3 {
			if d := int64(rt3 - t3); d > -1024 && d < 1024 {
				v, ok = rv, true
			}
		}
		if !ok {
			unmatched = append(unmatched, fmt.Sprintf("%s origin %s", r.Time, r.Origin))
			continue
		}
		matched++
		if math.Abs(*r.Offset-v[0]) > 1e-6 || math.Abs(*r.Delay-v[1]) > 1e-6 {
			t.Errorf("exchange T3=%x: passive offset %.9f delay %.9f, ntpd %.9f %.9f", t3, *r.Offset, *r.Delay, v[0], v[1])
		}
	}
	// Each exchange row completes an exchange whose reply ntpd received
	// (and logged) before it sent the request the row was made from: all
	// should match. At least 80% must, and 3.
	if matched < 3 || 5*len(unmatched) > len(rows) {
		for _, r := range raws {
			t.Logf("rawstats T1 %x T2 %x T3 %x T4 %x", r.Origin, r.Receive, r.Transmit, r.Destination)
		}
		for _, r := range pas.export() {
			t.Logf("row %s %s origin %s receive %s method %s", r.Time, r.Implementation, r.Origin, r.Receive, r.OffsetMethod)
		}
		t.Fatalf("%d of %d exchange observations matched ntpd's rawstats (%d rawstats), want at least 80%% and 3; unmatched: %v",
			matched, len(rows), len(raws), unmatched)
	}
	all := pas.export()
	impls := map[string]int{}
	byLocal := map[string]map[string]int{}
	var procs []float64
	var answered []time.Time
	var digNotes []string
	for _, r := range all {
		impls[r.Implementation]++
		if byLocal[r.LocalIP] == nil {
			byLocal[r.LocalIP] = map[string]int{}
		}
		byLocal[r.LocalIP][r.Implementation]++
		if r.DropReason != "" {
			t.Errorf("chronyd without rate limiting left a request unanswered: %+v", r)
		}
		procs = append(procs, r.Processing)
		if r.Processing <= 0 || r.Processing > 0.05 {
			t.Errorf("chronyd processing time %v s", r.Processing)
		}
		if r.DropReason == "" {
			at, err := time.Parse(time.RFC3339Nano, r.Time)
			if err != nil {
				t.Fatal(err)
			}
			answered = append(answered, at)
		}
		// ntpdig: the passive apparent offset is T1 − T2 (client minus
		// server), ntpdig's offset θ = ((T2 − T1) + (T3 − T4)) / 2
		// (server minus client), from the same wire timestamps: so
		// offset + θ = −δ/2 exactly, where δ is ntpdig's round-trip
		// delay, and ntpdig reports δ/2 + ε ≥ δ/2 as "precision".
		// ntpdig prints both with 6 decimals (±0.5 µs each): allow 2 µs.
		if r.Implementation == "ntpdig" {
			dig, ok := digs[r.LocalIP]
			if !ok {
				t.Errorf("ntpdig row for local_ip %s, which it did not query: %+v", r.LocalIP, r)
				continue
			}
			if r.OffsetMethod != "apparent" || r.Offset == nil {
				t.Errorf("ntpdig to %s: method %q offset %v, want an apparent offset", r.LocalIP, r.OffsetMethod, r.Offset)
				continue
			}
			if sum := *r.Offset + dig.Offset; sum > 2e-6 || sum < -dig.SyncDistance-2e-6 {
				t.Errorf("ntpdig to %s: passive offset %.9f s, ntpdig's own %.6f s (sync distance %.6f s): passive + ntpdig = %.9f, want within [−%.6f, 0] ± 2 µs",
					r.LocalIP, *r.Offset, dig.Offset, dig.SyncDistance, sum, dig.SyncDistance)
			}
			digNotes = append(digNotes, fmt.Sprintf("%s: passive %+.6f, ntpdig %+.6f, sync distance %.6f", r.LocalIP, *r.Offset, dig.Offset, dig.SyncDistance))
			delete(digs, r.LocalIP) // one request each
		}
	}
	for addr := range digs {
		t.Errorf("no passive observation of ntpdig's request to %s", addr)
	}
	// Both server addresses, each with the requests sent to it.
	if a, b := byLocal[pair.A.Addr.String()], byLocal[second.String()]; len(byLocal) != 2 || a["chrony"] == 0 || a["ntpd"] == 0 ||
		a["ntpdig"] != 1 || b["ntpdig"] != 1 || len(b) != 1 {
		t.Errorf("observations by local_ip: %v; want chrony, ntpd and ntpdig at %s and ntpdig only at %s", byLocal, pair.A.Addr, second)
	}
	// Every exchange the chronyd client measured was seen answered, at
	// the same time (measurements.log has whole seconds), each by its own
	// row. (Its first request is not yet recognised as chrony's: match
	// any answered row; ntpdig and ntpd ran after it.)
	sort.Slice(answered, func(i, j int) bool { return answered[i].Before(answered[j]) })
	next := 0
	for _, m := range measured {
		if m.IP != pair.A.Addr.String() {
			continue
		}
		for next < len(answered) && answered[next].Before(m.Time.Add(-time.Second)) {
			next++
		}
		if next == len(answered) || answered[next].After(m.Time.Add(time.Second)) {
			t.Errorf("chronyd measured an exchange at %s that passive mode did not record (answered rows at %v)", m.Time.Format(time.TimeOnly), answered)
			continue
		}
		next++
	}
	if len(measured) == 0 {
		t.Error("the chronyd client logged no measurement")
	}
	if impls["chrony"] == 0 || impls["ntpdig"] != 2 || impls["ntpd"] == 0 {
		t.Errorf("implementations seen: %v", impls)
	}
	m := pas.nsMetrics()
	// The dashboards work unchanged: every metric their panels query is
	// exposed by passive ntpexp too.
	metricRE := regexp.MustCompile(`ntpexp_[a-z_]+`)
	missing := map[string]bool{}
	for _, d := range loadDashboards(t) {
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				for _, name := range metricRE.FindAllString(tg.Expr, -1) {
					if sumMetricFamily(m, name) == 0 && !hasSeries(m, name) {
						missing[name] = true
					}
				}
			}
		}
	}
	if len(missing) > 0 {
		t.Errorf("dashboard metrics absent in passive mode: %v", missing)
	}
	if m["ntpexp_server_stratum"] != 10 {
		t.Errorf("ntpexp_server_stratum %v, want chronyd's local stratum 10", m["ntpexp_server_stratum"])
	}
	if sumMetric(m, "ntpexp_processing_seconds_count") == 0 {
		t.Error("no processing-time observations")
	}
	pas.stop()
	t.Logf("%d of %d exchange observations equal ntpd's rawstats within 1 µs; ntpdig offsets (s) %v; %d chronyd measurements seen; %d observations %v by local_ip %v; chronyd T3−T2 %s",
		matched, len(rows), digNotes, len(measured), len(all), impls, byLocal, fmtRange(procs))
}

func fmtRange(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%.1f–%.1f µs", lo*1e6, hi*1e6)
}

// TestPassiveUnanswered: a rate-limited chronyd leaves requests
// unanswered. What the client saw (replies received) and what passive
// mode recorded must agree exactly.
func TestPassiveUnanswered(t *testing.T) {
	pair := peers.NewNetnsPair(t)
	peers.StartChronydServer(t, peers.ChronydServerConfig{Netns: pair.A, RateLimit: &peers.RateLimit{Interval: 3, Burst: 1, Leak: 2}})
	pas := startPassive(t, pair.A)
	const n = 200
	replies := 0
	err := pair.B.Do(func() error {
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netipPort(pair.A.Addr.String(), 123)))
		if err != nil {
			return err
		}
		defer conn.Close()
		var mu sync.Mutex
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 512)
			for {
				conn.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := conn.Read(buf); err != nil {
					return
				}
				mu.Lock()
				replies++
				mu.Unlock()
			}
		}()
		req := make([]byte, 48)
		for range n {
			req[0] = 0x23 // v4 client
			for i := 40; i < 48; i++ {
				req[i] = byte(rand.Uint32())
			}
			if _, err := conn.Write(req); err != nil {
				return err
			}
			time.Sleep(2 * time.Millisecond)
		}
		<-done
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	m := pas.nsMetrics()
	pas.stop()
	rows := pas.export()
	unanswered, answered := 0, 0
	for _, r := range rows {
		switch r.DropReason {
		case "unanswered":
			unanswered++
		case "":
			answered++
		default:
			t.Errorf("drop reason %q", r.DropReason)
		}
	}
	if len(rows) != n || answered != replies || unanswered != n-replies || replies == 0 || replies == n {
		t.Fatalf("client sent %d, got %d replies; passive stored %d rows: %d answered, %d unanswered", n, replies, len(rows), answered, unanswered)
	}
	if got := m["ntpexp_passive_unanswered_total"]; got != float64(unanswered) {
		t.Errorf("ntpexp_passive_unanswered_total %v, want %d", got, unanswered)
	}
	if got := m[`ntpexp_drops_total{reason="unanswered"}`]; got != float64(unanswered) {
		t.Errorf(`ntpexp_drops_total{reason="unanswered"} %v, want %d`, got, unanswered)
	}
	t.Logf("rate-limited chronyd answered %d of %d; passive: %d answered, %d unanswered", replies, n, answered, unanswered)
}

// TestPassiveFloodBounded: a flood of requests from many source ports and
// of garbage on the captured interface, to a rate-limited chronyd that
// answers few. The flood must overflow the pending table (counted); once
// it is over every captured request is accounted for exactly once; the Go
// heap and RSS stay within what the configured sizes allow; ntpexp keeps
// running.
func TestPassiveFloodBounded(t *testing.T) {
	const queueSize, maxPending, maxClients = 100000, 2048, 1000
	pair := peers.NewNetnsPair(t)
	peers.StartChronydServer(t, peers.ChronydServerConfig{Netns: pair.A, RateLimit: &peers.RateLimit{Interval: 3, Burst: 1, Leak: 4}})
	pas := startPassive(t, pair.A, "--capture.max-pending", strconv.Itoa(maxPending), "--performance.max-cache-size", strconv.Itoa(maxClients),
		"--database.queue-size", strconv.Itoa(queueSize))
	// 64 client addresses in B: 10.99.X.100-163.
	b4 := pair.B.Addr.As4()
	first := netip.AddrFrom4([4]byte{b4[0], b4[1], b4[2], 100})
	for i, a := 0, first; i < 64; i, a = i+1, a.Next() {
		if out, err := pair.B.Exec(10*time.Second, "ip", "addr", "add", a.String()+"/24", "dev", pair.B.Dev); err != nil {
			t.Fatalf("adding %s: %v %s", a, err, out)
		}
	}
	rss0 := rssBytes(t, pas.Proc.Pid())
	flood := func(d time.Duration) {
		out, err := pair.B.Exec(d+30*time.Second, ntploadBin, "-server", pair.A.Addr.String()+":123", "-rate", "20000",
			"-duration", d.String(), "-sources", "64", "-first-source", first.String(), "-workers", "4", "-personality", "mix")
		if err != nil {
			t.Fatalf("ntpload: %v\n%s", err, out)
		}
	}
	flood(4 * time.Second)
	m := pas.nsMetrics()
	rssMid := rssBytes(t, pas.Proc.Pid())
	// Garbage: short, mode 6/7, random bytes.
	if err := pair.B.Do(func() error {
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netipPort(pair.A.Addr.String(), 123)))
		if err != nil {
			return err
		}
		defer conn.Close()
		b := make([]byte, 600)
		for i := range 20000 {
			l := rand.IntN(len(b))
			for j := range l {
				b[j] = byte(rand.Uint32())
			}
			conn.Write(b[:l])
			if i%64 == 0 {
				time.Sleep(200 * time.Microsecond)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	flood(4 * time.Second)
	// Wait until the capture has caught up and every request has had its
	// reply timeout: nothing pending, and the count no longer moving.
	var m2 map[string]float64
	deadline := time.Now().Add(30 * time.Second)
	for prev := -1.0; ; {
		time.Sleep(700 * time.Millisecond)
		m2 = pas.nsMetrics()
		reqs := m2["ntpexp_passive_requests_total"]
		if m2["ntpexp_passive_pending_requests"] == 0 && reqs == prev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the capture did not settle within 30 s after the flood: %v requests, %v pending", reqs, m2["ntpexp_passive_pending_requests"])
		}
		prev = reqs
	}
	rss1 := rssBytes(t, pas.Proc.Pid())
	if exited, _ := pas.Proc.Exited(); exited {
		t.Fatalf("ntpexp died:\n%s", pas.Proc.Output())
	}
	reqs := m2["ntpexp_passive_requests_total"]
	// 160,000 offered at 20,000/s; a loaded machine may send fewer.
	if reqs < 80000 {
		t.Errorf("only %v requests captured", reqs)
	}
	// The flood overflowed the pending table: 20,000/s (or the 10,000/s
	// of a slow run) with a 0.5 s reply timeout needs 10,000 (5,000)
	// slots; there are 2048. Every request pushed out is capture_lost.
	overflows, lost := m2["ntpexp_passive_pending_overflows_total"], m2["ntpexp_passive_fate_unknown_total"]
	if overflows == 0 || lost < overflows {
		t.Errorf("pending overflows %v, fate unknown %v: the flood should have overflowed the %d-slot pending table", overflows, lost, maxPending)
	}
	// Every captured request was recorded exactly once: paired with a
	// reply, unanswered, capture_lost, or refused at once as server mode
	// would (too short, bad version or mode, modes 6 and 7, malformed).
	matched, unanswered := m2[`ntpexp_passive_replies_total{result="matched"}`], m2["ntpexp_passive_unanswered_total"]
	refused := 0.0
	for _, r := range []string{"too_short", "bad_version", "bad_mode", "mode_control", "mode_private", "malformed"} {
		refused += m2[`ntpexp_drops_total{reason="`+r+`"}`]
	}
	if observed := sumMetric(m2, "ntpexp_requests_total"); observed != reqs {
		t.Errorf("%v requests captured, %v observations recorded", reqs, observed)
	}
	if got := matched + unanswered + lost + refused; got != reqs {
		t.Errorf("requests %v ≠ matched %v + unanswered %v + fate unknown %v + refused %v = %v", reqs, matched, unanswered, lost, refused, got)
	}
	if d := m2[`ntpexp_drops_total{reason="unanswered"}`]; d != unanswered {
		t.Errorf(`ntpexp_drops_total{reason="unanswered"} %v, ntpexp_passive_unanswered_total %v`, d, unanswered)
	}
	if d := m2[`ntpexp_drops_total{reason="capture_lost"}`]; d != lost {
		t.Errorf(`ntpexp_drops_total{reason="capture_lost"} %v, ntpexp_passive_fate_unknown_total %v`, d, lost)
	}
	if refused == 0 || unanswered == 0 || matched == 0 {
		t.Errorf("the flood and the garbage should give replies, unanswered and refused requests: %v, %v, %v", matched, unanswered, refused)
	}
	// Memory: what the configuration lets grow is the store queue (a ring
	// of observations) and the writer's batch (at most as many), the
	// pending table (about 420 bytes a slot with its index,
	// docs/passive.md) and the client table (276 bytes a client,
	// docs/performance.md), all allocated at start, and the
	// writer's SQLite page cache (64 MiB, sqlitestore/db.go, outside the
	// Go heap). The heap live after a collection holds those tables and
	// at most 16 MiB of everything else (registry, buffers, a write
	// batch); its goal, go_memstats_next_gc_bytes, is twice the live heap
	// (GOGC=100), and bounds what the heap takes between collections.
	structures := 2*float64(queueSize)*float64(unsafe.Sizeof(ntp.Observation{})) + maxPending*420 + maxClients*276
	const sqliteCache, other = 64 << 20, 16 << 20
	goal := m2["go_memstats_next_gc_bytes"]
	if goal == 0 || goal/2 > structures+other {
		t.Errorf("Go heap live after the flood %.0f MiB (goal %.0f MiB), over the %.0f MiB of configured tables + %d MiB",
			goal/2/(1<<20), goal/(1<<20), structures/(1<<20), other>>20)
	}
	rssBound := float64(rss0) + 2*(structures+other) + sqliteCache
	if float64(rss1) > rssBound {
		t.Errorf("RSS %d MiB at start, %d MiB after the first flood, %d MiB after the second: over the %.0f MiB the configured sizes allow",
			rss0>>20, rssMid>>20, rss1>>20, rssBound/(1<<20))
	}
	if s := udpSocketsOf(t, pas.Proc.Pid()); len(s) > 0 {
		t.Errorf("passive ntpexp owns UDP/raw sockets %v", s)
	}
	pas.stop()
	t.Logf("%.0f requests captured (%.0f after the first flood): %.0f matched, %.0f unanswered, %.0f fate unknown, %.0f refused; %.0f pending overflows, %.0f kernel drops, %.0f invalid frames; Go heap live %.0f MiB (tables %.0f MiB + %d); RSS %d → %d → %d MiB (bound %.0f)",
		reqs, m["ntpexp_passive_requests_total"], matched, unanswered, lost, refused, overflows, m2["ntpexp_capture_kernel_drops_total"],
		m2["ntpexp_capture_invalid_frames_total"], goal/2/(1<<20), structures/(1<<20), other>>20,
		rss0>>20, rssMid>>20, rss1>>20, rssBound/(1<<20))
}
