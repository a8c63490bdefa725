// Command sidebyside measures ntpexp, chronyd and a UDP echo server one
// after another under the same load from ntpload, on this machine, in one
// run, and prints a table of ratios. Figures from a shared, noisy machine
// mean little alone; the ratios from one run are what to read.
//
//	go run ./bench/sidebyside -bin DIR   (DIR holds ntpexp, ntpload, udpecho)
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

type pcts struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

type load struct {
	Mode          string  `json:"mode"`
	Offered       float64 `json:"offered_per_second,omitempty"`
	Sent          uint64  `json:"sent"`
	Replies       uint64  `json:"replies"`
	Lost          uint64  `json:"lost"`
	Mismatched    uint64  `json:"mismatched"`
	Invalid       uint64  `json:"invalid"`
	RepliesPerSec float64 `json:"replies_per_second"`
	RTT           pcts    `json:"rtt_seconds"`
	Processing    pcts    `json:"processing_seconds"`
}

type result struct {
	Server string `json:"server"`
	Load   load   `json:"load"`
	// ntpexp only.
	RowsWritten    float64 `json:"rows_written,omitempty"`
	Requests       float64 `json:"requests,omitempty"`
	QueueDrops     float64 `json:"queue_drops,omitempty"`
	AllocsPerReq   float64 `json:"allocs_per_request,omitempty"`
	RSSBytes       float64 `json:"rss_bytes,omitempty"`
	ServerCPUPerRq float64 `json:"server_cpu_seconds_per_request,omitempty"`
	// The load generator's CPU per reply: on a machine whose CPUs it
	// shares with the server, what it uses is not the server's.
	LoadCPUPerRq float64 `json:"load_cpu_seconds_per_request,omitempty"`
	// The -scale run.
	Scale *scaleResult `json:"scale,omitempty"`
}

var (
	binDir   = flag.String("bin", "bin", "directory with ntpexp, ntpload and udpecho")
	duration = flag.Duration("duration", 10*time.Second, "load duration per server")
	rounds   = flag.Int("rounds", 2, "rounds (servers interleaved); the best round of each is reported")
	workers  = flag.Int("workers", 4, "ntpload workers")
	depth    = flag.Int("depth", 16, "ntpload requests in flight per worker")
	pers     = flag.String("personality", "mix", "ntpload client personality")
	readers  = flag.Int("readers", 1, "ntpexp --ntp.readers")
	jsonOut  = flag.String("json", "", "also write the results as JSON to this file")
	equal    = flag.String("equal-load", "0.1,0.25,0.5", "then offer each NTP server the same open-loop loads, these fractions of chronyd's median saturated replies/s, and compare processing times there (empty: skip)")
	eqRate   = flag.String("equal-rate", "", "the equal loads in requests/s, comma-separated (overrides -equal-load)")
	scale    = flag.Int("scale", 0, "after the table, send from this many distinct source addresses to ntpexp and to chronyd, each set to track them all, and report RSS per tracked client (0: skip)")
)

func main() {
	flag.Parse()
	tmp, err := os.MkdirTemp("", "sidebyside")
	check(err)
	defer os.RemoveAll(tmp)
	best := map[string]result{}
	// ntpexp-metrics is ntpexp with its store off (--database.enabled=false):
	// the packet path and metrics alone, to show what the store costs.
	servers := []string{"udpecho", "chronyd", "ntpexp", "ntpexp-metrics"}
	var perRound []map[string]result
	for r := 0; r < *rounds; r++ {
		round := map[string]result{}
		for _, s := range servers {
			res := measure(s, tmp, 0)
			fmt.Fprintf(os.Stderr, "round %d %-14s %8.0f replies/s  T3-T2 p50 %6.1fµs p99 %7.1fµs  CPU %5.2fµs/reply\n", r+1, s,
				res.Load.RepliesPerSec, res.Load.Processing.P50*1e6, res.Load.Processing.P99*1e6, res.ServerCPUPerRq*1e6)
			if b, ok := best[s]; !ok || res.Load.RepliesPerSec > b.Load.RepliesPerSec {
				best[s] = res
			}
			round[s] = res
		}
		perRound = append(perRound, round)
	}
	print(os.Stdout, best)
	printRounds(os.Stdout, perRound)
	printModel(os.Stdout, perRound)
	eq := map[float64][]map[string]result{}
	for _, rate := range equalRates(perRound) {
		eq[rate] = equalLoad(tmp, rate)
		printEqual(os.Stdout, rate, chronydRate(perRound), eq[rate])
	}
	if *scale > 0 {
		n, c := scaleRun("ntpexp", tmp, *scale), scaleRun("chronyd", tmp, *scale)
		printScale(os.Stdout, n, c)
		best["scale-ntpexp"], best["scale-chronyd"] = result{Server: "ntpexp", Scale: &n}, result{Server: "chronyd", Scale: &c}
	}
	if *jsonOut != "" {
		for rate, rounds := range eq {
			for i, round := range rounds {
				for k, v := range round {
					best[fmt.Sprintf("equal-%.0f-%d-%s", rate, i+1, k)] = v
				}
			}
		}
		b, _ := json.MarshalIndent(best, "", "  ")
		check(os.WriteFile(*jsonOut, b, 0o644))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		os.Exit(1)
	}
}

func freePort() int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	check(err)
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func freeTCP() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// scaleResult is memory with many tracked clients.
type scaleResult struct {
	Sources         int     `json:"sources"`
	Sent            int     `json:"sent"`
	RSSBeforeBytes  float64 `json:"rss_before_bytes"`
	RSSAfterBytes   float64 `json:"rss_after_bytes"`
	Tracked         float64 `json:"tracked_clients"`   // ntpexp only
	PerClientSeries int     `json:"per_client_series"` // ntpexp only
	BytesPerClient  float64 `json:"bytes_per_client"`
	EvictedClients  float64 `json:"evicted_clients"` // ntpexp only
	SeriesCap       int     `json:"series_cap"`
}

// scaleRun starts server sized to track n clients, sends one request or
// more from each of n source addresses (127.1.0.1 on, open loop), and
// reports its RSS growth per client.
func scaleRun(server, tmp string, n int) scaleResult {
	port := freePort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir, err := os.MkdirTemp(tmp, "scale-"+server)
	check(err)
	var cmd *exec.Cmd
	web := ""
	switch server {
	case "chronyd":
		// clientloglimit in bytes: room for every client (chrony sizes
		// its table in powers of two up to this limit).
		conf := filepath.Join(dir, "chronyd.conf")
		check(os.WriteFile(conf, []byte(fmt.Sprintf("port %d\nbindaddress 127.0.0.1\nallow 127.0.0.0/8\nlocal stratum 10\ncmdport 0\npidfile %s/pid\ndriftfile %s/drift\nclientloglimit %d\n",
			port, dir, dir, 1<<30)), 0o644))
		cmd = exec.Command("chronyd", "-d", "-x", "-u", "root", "-f", conf)
	case "ntpexp":
		web = fmt.Sprintf("127.0.0.1:%d", freeTCP())
		cmd = ntpexpCmd(addr, web, dir, "--performance.max-cache-size", strconv.Itoa(n))
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	check(err)
	cmd.Stdout, cmd.Stderr = logf, logf
	check(cmd.Start())
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	waitUp(addr, false)
	time.Sleep(2 * time.Second)
	res := scaleResult{Sources: n, SeriesCap: 256, RSSBeforeBytes: rss(cmd.Process.Pid)}
	// 40,000 requests/s, within both servers' capacity, for as long as it
	// takes to visit every source once, plus a second.
	const rate = 40000
	d := time.Duration(float64(n)/rate*float64(time.Second)) + time.Second
	out, err := exec.Command(filepath.Join(*binDir, "ntpload"), "-server", addr, "-json", "-rate", strconv.Itoa(rate), "-arrivals", "uniform",
		"-duration", d.String(), "-workers", "4", "-sources", strconv.Itoa(n), "-personality", "chrony").Output()
	check(err)
	var l load
	check(json.Unmarshal(out, &l))
	res.Sent = int(l.Sent)
	time.Sleep(2 * time.Second)
	res.RSSAfterBytes = rss(cmd.Process.Pid)
	clients := float64(n)
	if web != "" {
		m := scrape(web)
		res.Tracked = m["ntpexp_clients_tracked"]
		res.EvictedClients = m["ntpexp_clients_evicted_total"]
		for k := range m {
			if strings.HasPrefix(k, "ntpexp_client_requests_total{") {
				res.PerClientSeries++
			}
		}
		clients = res.Tracked
	}
	if clients > 0 {
		res.BytesPerClient = (res.RSSAfterBytes - res.RSSBeforeBytes) / clients
	}
	return res
}

func rss(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

func printScale(w io.Writer, n, c scaleResult) {
	fmt.Fprintf(w, "\nscale: %d distinct source addresses (%d requests to ntpexp, %d to chronyd)\n", n.Sources, n.Sent, c.Sent)
	fmt.Fprintf(w, "ntpexp:  %.0f clients tracked (%.0f evicted), RSS %.1f -> %.1f MiB, %.1f bytes per tracked client; per-client series for %d clients (cap %d)\n",
		n.Tracked, n.EvictedClients, n.RSSBeforeBytes/(1<<20), n.RSSAfterBytes/(1<<20), n.BytesPerClient, n.PerClientSeries, n.SeriesCap)
	fmt.Fprintf(w, "chronyd: RSS %.1f -> %.1f MiB, %.1f bytes per client (clientloglimit 1 GiB)\n",
		c.RSSBeforeBytes/(1<<20), c.RSSAfterBytes/(1<<20), c.BytesPerClient)
	if c.BytesPerClient > 0 {
		fmt.Fprintf(w, "ntpexp bytes per client vs chronyd: %.2f×\n", n.BytesPerClient/c.BytesPerClient)
	}
}

// ntpexpCmd is ntpexp serving NTP on addr and metrics on web, with its
// database in dir, rate limiting off, and extra flags.
func ntpexpCmd(addr, web, dir string, extra ...string) *exec.Cmd {
	args := append([]string{"serve", "--ntp.listen-address", addr, "--web.listen-address", web,
		"--database.path", filepath.Join(dir, "ntpexp.db"), "--ntp.ratelimit.enabled=false",
		"--ntp.clock-sync", "assume-synchronized", "--monitoring.log-level", "warn"}, extra...)
	return exec.Command(filepath.Join(*binDir, "ntpexp"), args...)
}

// measure runs one server under a closed loop at saturation (rate 0) or
// an open loop offering rate requests/s.
func measure(server, tmp string, rate float64) result {
	port := freePort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir, err := os.MkdirTemp(tmp, server)
	check(err)
	var cmd *exec.Cmd
	web := ""
	switch server {
	case "udpecho":
		cmd = exec.Command(filepath.Join(*binDir, "udpecho"), "-listen", addr)
	case "chronyd":
		conf := filepath.Join(dir, "chronyd.conf")
		// No ratelimit line: chronyd does not rate-limit.
		check(os.WriteFile(conf, []byte(fmt.Sprintf("port %d\nbindaddress 127.0.0.1\nallow 127.0.0.0/8\nlocal stratum 10\ncmdport 0\npidfile %s/pid\ndriftfile %s/drift\n", port, dir, dir)), 0o644))
		cmd = exec.Command("chronyd", "-d", "-x", "-u", "root", "-f", conf)
	case "ntpexp", "ntpexp-metrics":
		web = fmt.Sprintf("127.0.0.1:%d", freeTCP())
		cmd = ntpexpCmd(addr, web, dir, "--ntp.readers", strconv.Itoa(*readers),
			"--database.enabled="+strconv.FormatBool(server == "ntpexp"))
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	check(err)
	cmd.Stdout, cmd.Stderr = logf, logf
	check(cmd.Start())
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	waitUp(addr, server == "udpecho")
	// Warm up, then measure.
	runLoad(addr, server == "udpecho", time.Second, rate)
	var before map[string]float64
	var cpuBefore float64
	if web != "" {
		before = scrape(web)
	}
	cpuBefore = procCPU(cmd.Process.Pid)
	l, loadCPU := runLoad(addr, server == "udpecho", *duration, rate)
	res := result{Server: server, Load: l}
	cpu := procCPU(cmd.Process.Pid) - cpuBefore
	if res.Load.Replies > 0 {
		res.ServerCPUPerRq = cpu / float64(res.Load.Replies)
		res.LoadCPUPerRq = loadCPU / float64(res.Load.Replies)
	}
	if web != "" {
		// Allocations over the load alone: one scrape at its end (every
		// scrape allocates too, so the drain loop below must not count).
		end := scrape(web)
		dReq := sumPrefix(end, "ntpexp_requests_total") - sumPrefix(before, "ntpexp_requests_total")
		if dReq > 0 {
			res.AllocsPerReq = (end["go_memstats_mallocs_total"] - before["go_memstats_mallocs_total"]) / dReq
		}
		// Let the store drain, then compare rows with requests.
		var after map[string]float64
		for i := 0; i < 300; i++ {
			after = scrape(web)
			if after["ntpexp_store_queue_length"] == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		res.RowsWritten = after["ntpexp_store_rows_written_total"]
		res.Requests = sumPrefix(after, "ntpexp_requests_total")
		res.QueueDrops = after["ntpexp_store_rows_dropped_total"]
		res.RSSBytes = after["process_resident_memory_bytes"]
	}
	return res
}

// procCPU returns the process's user+system CPU seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func waitUp(addr string, echo bool) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("udp4", addr)
		check(err)
		req := make([]byte, 48)
		req[0] = 0x23
		req[47] = 1
		c.Write(req)
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err = c.Read(make([]byte, 128))
		c.Close()
		if err == nil {
			return
		}
	}
	check(fmt.Errorf("%s did not answer within 10 s", addr))
}

// runLoad runs ntpload against addr for d, closed loop (rate 0) or open
// loop at rate requests/s, and returns its result and its CPU seconds.
func runLoad(addr string, echo bool, d time.Duration, rate float64) (load, float64) {
	args := []string{"-server", addr, "-json", "-duration", d.String(), "-workers", strconv.Itoa(*workers),
		"-depth", strconv.Itoa(*depth), "-personality", *pers}
	if rate > 0 {
		args = append(args, "-rate", strconv.FormatFloat(rate, 'f', 0, 64))
	}
	if echo {
		args = append(args, "-echo")
	}
	cmd := exec.Command(filepath.Join(*binDir, "ntpload"), args...)
	out, err := cmd.Output()
	check(err)
	var l load
	check(json.Unmarshal(out, &l))
	return l, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}

func scrape(web string) map[string]float64 {
	resp, err := http.Get("http://" + web + "/metrics")
	check(err)
	defer resp.Body.Close()
	return parse(resp.Body)
}

func parse(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func sumPrefix(m map[string]float64, prefix string) float64 {
	s := 0.0
	for k, v := range m {
		if k == prefix || strings.HasPrefix(k, prefix+"{") {
			s += v
		}
	}
	return s
}

// printRounds prints, for ntpexp and ntpexp-metrics, the median over the
// rounds of each round's ratio to chronyd: both measured minutes apart at
// most, so a steadier comparison on a shared machine than the best rounds
// of the table, which may come from different rounds.
func printRounds(w io.Writer, rounds []map[string]result) {
	fmt.Fprintf(w, "\nratios to chronyd in the same round, median of %d rounds:\n", len(rounds))
	for _, s := range []string{"udpecho", "ntpexp", "ntpexp-metrics"} {
		var rate, cpu []float64
		for _, r := range rounds {
			c, x := r["chronyd"], r[s]
			if c.Load.RepliesPerSec > 0 && c.ServerCPUPerRq > 0 {
				rate = append(rate, x.Load.RepliesPerSec/c.Load.RepliesPerSec)
				cpu = append(cpu, x.ServerCPUPerRq/c.ServerCPUPerRq)
			}
		}
		if len(rate) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-14s replies/s %.2f×, CPU per reply %.2f×\n", s, median(rate), median(cpu))
	}
}

func print(w io.Writer, best map[string]result) {
	e, c, n := best["udpecho"], best["chronyd"], best["ntpexp"]
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\treplies/s\tvs chronyd\tvs echo\tloss\tT3-T2 p50\tT3-T2 p99\tRTT p50\tRTT p99\tCPU µs/reply\tntpload µs/reply\t")
	names := []string{"udpecho", "chronyd", "ntpexp", "ntpexp-metrics"}
	for _, s := range names {
		r := best[s]
		proc50, proc99 := fmt.Sprintf("%.1fµs", r.Load.Processing.P50*1e6), fmt.Sprintf("%.1fµs", r.Load.Processing.P99*1e6)
		if s == "udpecho" {
			proc50, proc99 = "-", "-"
		}
		if _, ok := best[s]; !ok {
			continue
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f×\t%.2f×\t%.3f%%\t%s\t%s\t%.1fµs\t%.1fµs\t%.2f\t%.2f\t\n", s, r.Load.RepliesPerSec,
			r.Load.RepliesPerSec/c.Load.RepliesPerSec, r.Load.RepliesPerSec/e.Load.RepliesPerSec,
			100*float64(r.Load.Lost)/float64(max(r.Load.Sent, 1)), proc50, proc99, r.Load.RTT.P50*1e6, r.Load.RTT.P99*1e6, r.ServerCPUPerRq*1e6, r.LoadCPUPerRq*1e6)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nntpexp processing time vs chronyd at saturation: p50 %.2f×, p99 %.2f× (lower is better; mostly the wait in the socket queue, see the equal load below)\n",
		n.Load.Processing.P50/c.Load.Processing.P50, n.Load.Processing.P99/c.Load.Processing.P99)
	fmt.Fprintf(w, "ntpexp store: %.0f rows written for %.0f requests, %.0f queue drops\n", n.RowsWritten, n.Requests, n.QueueDrops)
	fmt.Fprintf(w, "ntpexp allocations per request in the steady state: %.3f (whole process during the load, incl. the store and one scrape)\n", n.AllocsPerReq)
	fmt.Fprintf(w, "ntpexp RSS: %.1f MiB\n", n.RSSBytes/(1<<20))
	if m, ok := best["ntpexp-metrics"]; ok && m.ServerCPUPerRq > 0 {
		fmt.Fprintf(w, "ntpexp without its store (metrics only): %.2f× chronyd's replies/s; CPU per reply %.2f µs, so the store costs %.2f µs per reply\n",
			m.Load.RepliesPerSec/c.Load.RepliesPerSec, m.ServerCPUPerRq*1e6, (n.ServerCPUPerRq-m.ServerCPUPerRq)*1e6)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// printModel explains the saturated replies/s from CPU per reply. The
// load generator and the server share this machine's CPUs; when both are
// busy, replies/s is the CPUs' time over what one reply costs both
// processes, so a server that spends more per reply answers fewer, in
// proportion to (its CPU + the load generator's) per reply. CPU use near
// 100% says the run was bound by CPU; the rest is time in neither process
// (softirqs run by the kernel's own threads, other tenants of the host).
func printModel(w io.Writer, rounds []map[string]result) {
	ncpu := float64(runtime.NumCPU())
	fmt.Fprintf(w, "\nCPU per reply at saturation (median of %d rounds), server + load generator, on %d CPUs shared by both:\n", len(rounds), runtime.NumCPU())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tserver µs\tntpload µs\tsum µs\tCPU use\tpredicted vs chronyd\tmeasured vs chronyd\t")
	for _, name := range []string{"udpecho", "chronyd", "ntpexp", "ntpexp-metrics"} {
		var sv, lv, use, pred, meas []float64
		for _, r := range rounds {
			x, c := r[name], r["chronyd"]
			if x.ServerCPUPerRq <= 0 || c.ServerCPUPerRq <= 0 || c.Load.RepliesPerSec <= 0 {
				continue
			}
			sum, csum := x.ServerCPUPerRq+x.LoadCPUPerRq, c.ServerCPUPerRq+c.LoadCPUPerRq
			sv, lv = append(sv, x.ServerCPUPerRq*1e6), append(lv, x.LoadCPUPerRq*1e6)
			use = append(use, x.Load.RepliesPerSec*sum/ncpu)
			pred = append(pred, csum/sum)
			meas = append(meas, x.Load.RepliesPerSec/c.Load.RepliesPerSec)
		}
		if len(sv) == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.0f%%\t%.2f×\t%.2f×\t\n", name, median(sv), median(lv),
			median(sv)+median(lv), 100*median(use), median(pred), median(meas))
	}
	tw.Flush()
}

// chronydRate is chronyd's median saturated replies/s over the rounds.
func chronydRate(rounds []map[string]result) float64 {
	var c []float64
	for _, r := range rounds {
		if x := r["chronyd"].Load.RepliesPerSec; x > 0 {
			c = append(c, x)
		}
	}
	return median(c)
}

// equalRates are the open-loop rates of the equal-load comparison.
func equalRates(rounds []map[string]result) []float64 {
	list, scale := *equal, 0.0
	if *eqRate != "" {
		list, scale = *eqRate, 1
	} else {
		scale = chronydRate(rounds)
	}
	var out []float64
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 {
			check(fmt.Errorf("-equal-load/-equal-rate: %q is not a positive number", f))
		}
		if r := math.Round(v * scale); r > 0 {
			out = append(out, r)
		}
	}
	return out
}

// equalLoad offers each NTP server the same open-loop load (Poisson
// arrivals from the same seed), round after round. At saturation a
// closed loop's T3 - T2 is mostly the wait in the socket's queue, which
// Little's law ties to the replies/s (requests in flight / replies/s);
// under the same load below saturation it is what each server adds.
func equalLoad(tmp string, rate float64) []map[string]result {
	var out []map[string]result
	for r := 0; r < *rounds; r++ {
		round := map[string]result{}
		for _, s := range []string{"chronyd", "ntpexp", "ntpexp-metrics"} {
			res := measure(s, tmp, rate)
			fmt.Fprintf(os.Stderr, "equal load %.0f/s round %d %-14s %8.0f replies/s  loss %.3f%%  T3-T2 p50 %6.1fµs p90 %7.1fµs p99 %7.1fµs  CPU %5.2fµs/reply\n",
				rate, r+1, s, res.Load.RepliesPerSec, 100*float64(res.Load.Lost)/float64(max(res.Load.Sent, 1)),
				res.Load.Processing.P50*1e6, res.Load.Processing.P90*1e6, res.Load.Processing.P99*1e6, res.ServerCPUPerRq*1e6)
			round[s] = res
		}
		out = append(out, round)
	}
	return out
}

// printEqual prints the equal-load comparison: each server's medians over
// the rounds, then the medians of each round's ratios to chronyd.
func printEqual(w io.Writer, rate, chronyd float64, rounds []map[string]result) {
	fmt.Fprintf(w, "\nequal load: %.0f requests/s (%.2f× chronyd's saturated replies/s) offered to each server, open loop, Poisson arrivals, %d rounds (medians)\n",
		rate, rate/chronyd, len(rounds))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\treplies/s\tloss\tT3-T2 p50\tT3-T2 p90\tT3-T2 p99\tRTT p50\tRTT p99\tCPU µs/reply\t")
	names := []string{"chronyd", "ntpexp", "ntpexp-metrics"}
	for _, name := range names {
		var rps, loss, p50, p90, p99, r50, r99, cpu []float64
		for _, r := range rounds {
			x := r[name]
			rps = append(rps, x.Load.RepliesPerSec)
			loss = append(loss, float64(x.Load.Lost)/float64(max(x.Load.Sent, 1)))
			p50, p90, p99 = append(p50, x.Load.Processing.P50), append(p90, x.Load.Processing.P90), append(p99, x.Load.Processing.P99)
			r50, r99 = append(r50, x.Load.RTT.P50), append(r99, x.Load.RTT.P99)
			cpu = append(cpu, x.ServerCPUPerRq)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f%%\t%.1fµs\t%.1fµs\t%.1fµs\t%.1fµs\t%.1fµs\t%.2f\t\n", name, median(rps), 100*median(loss),
			median(p50)*1e6, median(p90)*1e6, median(p99)*1e6, median(r50)*1e6, median(r99)*1e6, median(cpu)*1e6)
	}
	tw.Flush()
	for _, name := range names[1:] {
		var p50, p99 []float64
		for _, r := range rounds {
			c, x := r["chronyd"], r[name]
			if c.Load.Processing.P50 > 0 && c.Load.Processing.P99 > 0 {
				p50 = append(p50, x.Load.Processing.P50/c.Load.Processing.P50)
				p99 = append(p99, x.Load.Processing.P99/c.Load.Processing.P99)
			}
		}
		fmt.Fprintf(w, "%s processing time vs chronyd at equal load (median of the rounds' ratios): p50 %.2f×, p99 %.2f× (lower is better)\n",
			name, median(p50), median(p99))
	}
	for i, r := range rounds {
		n := r["ntpexp"]
		fmt.Fprintf(w, "ntpexp store, equal load round %d: %.0f rows written for %.0f requests, %.0f queue drops\n", i+1, n.RowsWritten, n.Requests, n.QueueDrops)
	}
}
