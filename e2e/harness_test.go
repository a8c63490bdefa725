// Package e2e runs ntpexp as a real process against real NTP clients,
// Prometheus and Alertmanager. Peers are installed by scripts/install-peers.sh
// (make test does it); outside CI a missing peer skips loudly, in CI it fails.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

var ntpexpBin, ntploadBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ntpexp-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	ntpexpBin = filepath.Join(dir, "ntpexp")
	ntploadBin = filepath.Join(dir, "ntpload")
	for bin, pkg := range map[string]string{ntpexpBin: "../cmd/ntpexp", ntploadBin: "../cmd/ntpload"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running `ntpexp serve`.
type daemon struct {
	t       testing.TB
	Proc    *peers.Proc
	Dir     string
	DB      string
	NTPAddr string // host:port
	WebAddr string // host:port ("" inside a namespace)
	// NetnsWebAddr is the web address inside Netns (see nsMetrics).
	NetnsWebAddr string
	Netns        *peers.Netns
}

type daemonOpts struct {
	NTPAddr string // default 127.0.0.1:<free>
	Netns   *peers.Netns
	Args    []string
	// Env is added to the test's environment.
	Env []string
	// NoWait skips waiting for readiness.
	NoWait bool
}

func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDaemon starts ntpexp serve with a database in a temp dir, the host
// clock assumed synchronised (this test machine's kernel says it is not)
// and a 1 s flush interval.
func startDaemon(t testing.TB, o daemonOpts) *daemon {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	d := &daemon{t: t, Dir: dir, DB: filepath.Join(dir, "ntpexp.db"), Netns: o.Netns}
	d.NTPAddr = o.NTPAddr
	if d.NTPAddr == "" {
		d.NTPAddr = fmt.Sprintf("127.0.0.1:%d", peers.FreeUDPPort(t))
	}
	web := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	args := []string{"serve",
		"--ntp.listen-address", d.NTPAddr,
		"--web.listen-address", web,
		"--database.path", d.DB,
		"--database.flush-interval", "1",
		"--ntp.clock-sync", "assume-synchronized",
	}
	args = append(args, o.Args...)
	var cmd *exec.Cmd
	if o.Netns != nil {
		cmd = o.Netns.Command(ntpexpBin, args...)
		d.NetnsWebAddr = web
	} else {
		cmd = exec.Command(ntpexpBin, args...)
		d.WebAddr = web
	}
	if len(o.Env) > 0 {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	d.Proc = peers.StartProc(t, "ntpexp", dir, cmd)
	if !o.NoWait {
		d.waitReady()
	}
	return d
}

func (d *daemon) waitReady() {
	d.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if exited, _ := d.Proc.Exited(); exited {
			d.t.Fatalf("ntpexp exited during start:\n%s", d.Proc.Output())
		}
		if d.WebAddr == "" {
			if strings.Contains(d.Proc.Output(), "starting ntpexp") {
				return
			}
		} else if resp, err := http.Get("http://" + d.WebAddr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("ntpexp not ready after 15 s:\n%s", d.Proc.Output())
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	d.Proc.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.Proc.Done():
	case <-time.After(60 * time.Second):
		d.t.Fatalf("ntpexp did not stop within 60 s of SIGTERM")
	}
	if code := d.Proc.Cmd.ProcessState.ExitCode(); code != 0 {
		d.t.Fatalf("ntpexp exit code %d after SIGTERM:\n%s", code, d.Proc.Output())
	}
}

// metrics scrapes /metrics and returns sample lines by metric name with labels.
func (d *daemon) metrics() map[string]float64 {
	d.t.Helper()
	resp, err := http.Get("http://" + d.WebAddr + "/metrics")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	return parseExposition(d.t, resp.Body)
}

func parseExposition(t testing.TB, r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// ctl runs an ntpexp command (list, export, …) against the daemon's database.
func (d *daemon) ctl(args ...string) (string, error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ntpexpBin, append(args, "--database.path", d.DB)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("ntpexp %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// exportRow is one row of `ntpexp export --format ndjson` (the field contract).
type exportRow struct {
	Time           string   `json:"time"`
	ClientIP       string   `json:"client_ip"`
	ClientPort     int      `json:"client_port"`
	LocalIP        string   `json:"local_ip"`
	Version        int      `json:"version"`
	Mode           int      `json:"mode"`
	Stratum        int      `json:"stratum"`
	Poll           int      `json:"poll"`
	DropReason     string   `json:"drop_reason"`
	Processing     float64  `json:"processing_seconds"`
	Offset         *float64 `json:"offset_seconds"`
	OffsetMethod   string   `json:"offset_method"`
	Delay          *float64 `json:"delay_seconds"`
	Interleaved    bool     `json:"interleaved"`
	Implementation string   `json:"implementation"`
	Origin         string   `json:"origin"`
	Receive        string   `json:"receive"`
}

// export returns every stored observation.
func (d *daemon) export(extra ...string) []exportRow {
	d.t.Helper()
	out, err := d.ctl(append([]string{"export", "--format", "ndjson", "--hours", "24"}, extra...)...)
	if err != nil {
		d.t.Fatal(err)
	}
	var rows []exportRow
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r exportRow
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			d.t.Fatalf("export line %q: %v", line, err)
		}
		rows = append(rows, r)
	}
	return rows
}

// waitRows waits until the store holds at least n observations matching f.
func (d *daemon) waitRows(n int, timeout time.Duration, f func(exportRow) bool) []exportRow {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var got []exportRow
	for time.Now().Before(deadline) {
		got = got[:0]
		for _, r := range d.export() {
			if f == nil || f(r) {
				got = append(got, r)
			}
		}
		if len(got) >= n {
			return got
		}
		time.Sleep(500 * time.Millisecond)
	}
	d.t.Fatalf("only %d of %d matching observations after %v", len(got), n, timeout)
	return nil
}
