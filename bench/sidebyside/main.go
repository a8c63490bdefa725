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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

type pcts struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

type load struct {
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
			res := measure(s, tmp)
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
	if *scale > 0 {
		n, c := scaleRun("ntpexp", tmp, *scale), scaleRun("chronyd", tmp, *scale)
		printScale(os.Stdout, n, c)
		best["scale-ntpexp"], best["scale-chronyd"] = result{Server: "ntpexp", Scale: &n}, result{Server: "chronyd", Scale: &c}
	}
	if *jsonOut != "" {
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
	out, err := exec.Command(filepath.Join(*binDir, "ntpload"), "-server", addr, "-json", "-rate", strconv.Itoa(rate),
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

func measure(server, tmp string) result {
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
	runLoad(addr, server == "udpecho", time.Second)
	var before map[string]float64
	var cpuBefore float64
	if web != "" {
		before = scrape(web)
	}
	cpuBefore = procCPU(cmd.Process.Pid)
	res := result{Server: server, Load: runLoad(addr, server == "udpecho", *duration)}
	cpu := procCPU(cmd.Process.Pid) - cpuBefore
	if res.Load.Replies > 0 {
		res.ServerCPUPerRq = cpu / float64(res.Load.Replies)
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

func runLoad(addr string, echo bool, d time.Duration) load {
	args := []string{"-server", addr, "-json", "-duration", d.String(), "-workers", strconv.Itoa(*workers),
		"-depth", strconv.Itoa(*depth), "-personality", *pers}
	if echo {
		args = append(args, "-echo")
	}
	out, err := exec.Command(filepath.Join(*binDir, "ntpload"), args...).Output()
	check(err)
	var l load
	check(json.Unmarshal(out, &l))
	return l
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
	median := func(v []float64) float64 {
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
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
	fmt.Fprintln(tw, "server\treplies/s\tvs chronyd\tvs echo\tloss\tT3-T2 p50\tT3-T2 p99\tRTT p50\tRTT p99\tCPU µs/reply\t")
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
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f×\t%.2f×\t%.3f%%\t%s\t%s\t%.1fµs\t%.1fµs\t%.2f\t\n", s, r.Load.RepliesPerSec,
			r.Load.RepliesPerSec/c.Load.RepliesPerSec, r.Load.RepliesPerSec/e.Load.RepliesPerSec,
			100*float64(r.Load.Lost)/float64(max(r.Load.Sent, 1)), proc50, proc99, r.Load.RTT.P50*1e6, r.Load.RTT.P99*1e6, r.ServerCPUPerRq*1e6)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nntpexp processing time vs chronyd: p50 %.2f×, p99 %.2f× (lower is better)\n",
		n.Load.Processing.P50/c.Load.Processing.P50, n.Load.Processing.P99/c.Load.Processing.P99)
	fmt.Fprintf(w, "ntpexp store: %.0f rows written for %.0f requests, %.0f queue drops\n", n.RowsWritten, n.Requests, n.QueueDrops)
	fmt.Fprintf(w, "ntpexp allocations per request in the steady state: %.3f (whole process during the load, incl. the store and one scrape)\n", n.AllocsPerReq)
	fmt.Fprintf(w, "ntpexp RSS: %.1f MiB\n", n.RSSBytes/(1<<20))
	if m, ok := best["ntpexp-metrics"]; ok && m.ServerCPUPerRq > 0 {
		fmt.Fprintf(w, "ntpexp without its store (metrics only): %.2f× chronyd's replies/s; CPU per reply %.2f µs, so the store costs %.2f µs per reply\n",
			m.Load.RepliesPerSec/c.Load.RepliesPerSec, m.ServerCPUPerRq*1e6, (n.ServerCPUPerRq-m.ServerCPUPerRq)*1e6)
	}
}
