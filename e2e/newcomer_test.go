package e2e

// A newcomer's first minutes: clone the repository and type the README's
// quick start exactly as written.

import (
	"bufio"
	"context"
	"errors"
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

// quickStart returns the commands of the README's "Quick start" code block,
// without their comments.
func quickStart(t *testing.T, readme string) []string {
	t.Helper()
	var cmds []string
	in, block := false, false
	for _, line := range strings.Split(readme, "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			if in {
				return cmds
			}
			in = strings.HasPrefix(line, "## Quick start")
		case in && strings.HasPrefix(line, "```"):
			if block {
				return cmds // the first code block only
			}
			block = true
		case in && block:
			cmd, _, _ := strings.Cut(line, "#")
			if cmd = strings.TrimSpace(cmd); cmd != "" {
				cmds = append(cmds, cmd)
			}
		}
	}
	if !in {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	return cmds
}

// processGroup lists the live processes of process group pgid.
func processGroup(pgid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		f := strings.Fields(st[strings.LastIndexByte(st, ')')+1:])
		// state ppid pgrp ...; a zombie has ended.
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// newcomerEnv is the caller's environment without ntpexp settings and
// without the flags of an outer make (go test may run under `make test`).
func newcomerEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		if strings.HasPrefix(k, "NTPEXP_") {
			continue
		}
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES":
			continue
		}
		env = append(env, e)
	}
	return env
}

// TestNewcomerQuickStart clones the committed repository (uncommitted work
// is not in the clone: CI runs on committed main), takes the two commands
// of the README's quick start and runs the first, `make run`, as written:
// it must build and serve NTP on port 123 and metrics on :10123 with the
// built-in defaults, answer the README's own checks, and stop cleanly on
// SIGTERM. The second, `make test`, is what CI runs (.ci/run); running it
// here would recurse, so the test checks that it is exactly that.
func TestNewcomerQuickStart(t *testing.T) {
	peers.RequireRoot(t, "run the README's `make run`, which serves NTP on port 123")
	git := peers.Require(t, "git")
	peers.Require(t, "make")
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not in PATH: %v", err)
	}
	if _, err := os.Stat("/etc/ntpexp/config.json"); err == nil {
		// make run would read it, and it is not the built-in configuration the README promises.
		msg := "/etc/ntpexp/config.json exists on this machine; the quick start assumes a fresh machine"
		if peers.InCI() {
			t.Fatalf("FAIL (CI=true): %s", msg)
		}
		t.Skipf("SKIP: %s (in CI, CI=true, this is a failure)", msg)
	}

	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(t.TempDir(), "ntpexp")
	// safe.directory: CI may check the repository out as another user than root.
	if out, err := exec.Command(git, "-c", "safe.directory=*", "clone", "--quiet", root, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone %s: %v\n%s", root, err, out)
	}
	readme, err := os.ReadFile(filepath.Join(clone, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := quickStart(t, string(readme))
	var run, test string
	for _, c := range cmds {
		switch {
		case strings.HasPrefix(c, "make run"):
			run = c
		case strings.HasPrefix(c, "make test"):
			test = c
		}
	}
	if run == "" || test == "" || len(cmds) != 2 {
		t.Fatalf("the README's quick start is %q; want the two commands `make run` and `make test`", cmds)
	}
	if test != "make test" {
		t.Errorf("the quick start's test command is %q; CI runs `make test` (.ci/run)", test)
	}
	ci, err := os.ReadFile(filepath.Join(clone, ".ci/run"))
	if err != nil {
		t.Fatalf(".ci/run: %v", err)
	}
	ciRuns := false
	for _, line := range strings.Split(string(ci), "\n") {
		ciRuns = ciRuns || strings.TrimSpace(line) == "make test"
	}
	if !ciRuns {
		t.Errorf(".ci/run does not run `make test`, the README's test command:\n%s", ci)
	}

	// The README's command binds :123 and :10123 as written; they must be free.
	if l, err := net.Listen("tcp", ":10123"); err != nil {
		out, _ := exec.Command("ss", "-tlnp", "sport = :10123").CombinedOutput()
		t.Fatalf("TCP port 10123 is in use, and the README's `%s` serves metrics there: %v\n%s", run, err, out)
	} else {
		l.Close()
	}
	waitUDPPortFree(t, "udp4", "0.0.0.0:123")
	waitUDPPortFree(t, "udp6", "[::]:123")

	start := time.Now()
	cmd := exec.Command("/bin/sh", "-c", run)
	cmd.Dir = clone
	cmd.Env = newcomerEnv()
	// make finds go in PATH, as the newcomer's shell does.
	if !strings.Contains(":"+os.Getenv("PATH")+":", ":"+filepath.Dir(gobin)+":") {
		cmd.Env = append(cmd.Env, "PATH="+filepath.Dir(gobin)+":"+os.Getenv("PATH"))
	}
	p := peers.StartProc(t, "make-run", t.TempDir(), cmd)

	// Ready: metrics on :10123, as the README says.
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(5 * time.Minute) // a cold build compiles SQLite first
	for {
		if exited, err := p.Exited(); exited {
			t.Fatalf("`%s` exited (%v) before serving:\n%s", run, err, p.Output())
		}
		if resp, err := client.Get("http://localhost:10123/metrics"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("`%s`: no metrics on :10123 after 5 minutes:\n%s", run, p.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("`%s` served after %v", run, time.Since(start).Round(time.Millisecond))

	// An NTP answer on 127.0.0.1:123.
	h, err := peers.Probe(nil, "127.0.0.1:123", 3*time.Second)
	if err != nil {
		t.Fatalf("no NTP answer on 127.0.0.1:123 from `%s`: %v\n%s", run, err, p.Output())
	}
	synced, _ := kernelClock(t)
	t.Logf("NTP reply: %s (kernel clock synchronised: %v)", h, synced)

	// The README's checks: ntpdig 127.0.0.1, and ntpexp_requests_total in the metrics.
	if peers.Lookup("ntpdig") != "" {
		res, err := peers.NTPdig(t, "127.0.0.1", peers.NTPdigOptions{})
		switch {
		case synced && err != nil:
			t.Errorf("README check `ntpdig 127.0.0.1` failed: %v", err)
		case !synced && err == nil:
			t.Errorf("ntpdig accepted an answer from a host whose clock the kernel calls unsynchronised: %+v", res)
		case !synced:
			// docs/troubleshooting.md tells the newcomer what this means.
			if !strings.Contains(res.Stderr+err.Error(), "stratum 0") {
				t.Errorf("ntpdig's refusal does not say what docs/troubleshooting.md quotes (\"stratum 0, probable KOD packet\"): %v", err)
			}
		default:
			t.Logf("ntpdig 127.0.0.1: offset %+.6f s, stratum %d", res.Offset, res.Stratum)
		}
	}
	resp, err := client.Get("http://localhost:10123/metrics")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		found = found || strings.HasPrefix(sc.Text(), "ntpexp_requests_total")
	}
	resp.Body.Close()
	if !found {
		t.Errorf("README check `curl -s localhost:10123/metrics | grep ^ntpexp_requests_total` finds nothing")
	}

	// Stop it as a terminal would: signal the whole process group (make
	// exits at once; ntpexp drains and closes its store), and wait for every
	// process of the group to end.
	if len(processGroup(p.Pid())) < 2 {
		t.Fatalf("expected make and ntpexp in process group %d, found %v", p.Pid(), processGroup(p.Pid()))
	}
	if err := syscall.Kill(-p.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for stopBy := time.Now().Add(60 * time.Second); len(processGroup(p.Pid())) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(stopBy) {
			t.Fatalf("`%s` did not stop within 60 s of SIGTERM (left: %v):\n%s", run, processGroup(p.Pid()), p.Output())
		}
	}
	<-p.Done()
	if out := p.Output(); !strings.Contains(out, `msg=stopped`) {
		t.Errorf("ntpexp did not stop cleanly on SIGTERM:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(clone, "ntpexp.db")); err != nil {
		t.Errorf("the README promises the database in ./ntpexp.db: %v", err)
	}
	// Nothing is left holding the ports.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		c, err := net.ListenPacket("udp4", "0.0.0.0:123")
		if err == nil {
			c.Close()
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("UDP port 123 is still held after `%s` stopped", run)
}
