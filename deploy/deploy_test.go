// Package deploy holds the deployment files (systemd unit, example config)
// and checks them, the Makefile's install target and the Dockerfile against
// the real tools: systemd-analyze, strace, make and the ntpexp binary.
//
// Policy (DEVELOPERS.md): a missing tool skips loudly outside CI and fails
// in CI (CI=true). scripts/install-peers.sh installs them.
package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

const (
	unitPath    = "systemd/ntpexp.service"
	examplePath = "config.example.json"
	repo        = ".."
	// installedBin is where the unit expects the binary (make install's default PREFIX).
	installedBin = "/usr/local/bin/ntpexp"
)

var ntpexpBin string

// denyAdjtimexEnv makes the test binary a wrapper: it installs the seccomp
// filter that ProtectClock=yes would add for adjtimex (EPERM), then execs
// its arguments. See TestProtectClockWouldMakeLeapAlarm.
const denyAdjtimexEnv = "NTPEXP_DEPLOY_TEST_DENY_ADJTIMEX"

func TestMain(m *testing.M) {
	if os.Getenv(denyAdjtimexEnv) != "" {
		os.Unsetenv(denyAdjtimexEnv)
		err := denyAdjtimexAndExec(os.Args[1:])
		fmt.Fprintf(os.Stderr, "deny-adjtimex wrapper: %v\n", err)
		os.Exit(3)
	}
	dir, err := os.MkdirTemp("", "ntpexp-deploy-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // the syscall test runs it as nobody
	ntpexpBin = filepath.Join(dir, "ntpexp")
	cmd := exec.Command("go", "build", "-o", ntpexpBin, "../cmd/ntpexp")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building ntpexp: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need returns the path of a tool, or skips loudly (fails in CI).
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, tool)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not installed (Debian package %s)", tool, pkg)
	if peers.InCI() {
		t.Fatalf("FAIL (CI=true, tools must be present): %s", msg)
	}
	t.Skipf("SKIP: %s (in CI, CI=true, this is a failure)", msg)
	return ""
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unitLine is one "Key=Value" line of a unit file.
type unitLine struct{ Section, Key, Value string }

func parseUnit(t *testing.T, text string) []unitLine {
	t.Helper()
	var out []unitLine
	section := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit: bad line %q", line)
		}
		out = append(out, unitLine{section, strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	return out
}

// unitValues returns every value of key in order; an empty assignment
// clears the values before it, as systemd does for list settings (a
// drop-in's "Key=" resets what the unit set).
func unitValues(lines []unitLine, key string) []string {
	var vs []string
	for _, l := range lines {
		if l.Key == key {
			if l.Value == "" {
				vs = nil
				continue
			}
			vs = append(vs, l.Value)
		}
	}
	return vs
}

// unitForAnalyze writes the unit to a temp dir with ExecStart pointing at a
// binary that exists (systemd-analyze verify checks it).
func unitForAnalyze(t *testing.T) string {
	t.Helper()
	text := readFile(t, unitPath)
	if !strings.Contains(text, "ExecStart="+installedBin+" ") {
		t.Fatalf("%s: ExecStart does not run %s (make install rewrites that path)", unitPath, installedBin)
	}
	p := filepath.Join(t.TempDir(), "ntpexp.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(text, installedBin, ntpexpBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnitVerify(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	p := unitForAnalyze(t)
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for ntpexp\.service: (\d+\.\d+)`)

// TestUnitSecurityExposure rates the unit with systemd-analyze security and
// holds it to the score recorded in docs/deployment.md.
func TestUnitSecurityExposure(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	p := unitForAnalyze(t)
	cmd := exec.Command(sa, "security", "--offline=true", "--no-pager", p)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	got, _ := strconv.ParseFloat(string(m[1]), 64)
	doc := readFile(t, filepath.Join(repo, "docs/deployment.md"))
	dm := exposureRE.FindStringSubmatch(doc)
	if dm == nil {
		t.Fatalf("docs/deployment.md does not record the exposure level (a line %q)", "Overall exposure level for ntpexp.service: N.N")
	}
	recorded, _ := strconv.ParseFloat(dm[1], 64)
	t.Logf("systemd-analyze security: exposure %.1f (recorded in docs/deployment.md: %.1f)", got, recorded)
	if got > recorded {
		t.Errorf("exposure %.1f is worse than the %.1f recorded in docs/deployment.md:\n%s", got, recorded, out)
	} else if got < recorded {
		t.Errorf("exposure improved to %.1f: record it in docs/deployment.md (it says %.1f)", got, recorded)
	}
	// Items that must stay green whatever else changes.
	for _, item := range []string{"User=/DynamicUser=", "NoNewPrivileges=", "ProtectSystem=", "ProtectHome=",
		"CapabilityBoundingSet=~CAP_SYS_TIME", "CapabilityBoundingSet=~CAP_SYS_ADMIN", "PrivateDevices=",
		"SystemCallArchitectures=", "RestrictNamespaces=~user", "MemoryDenyWriteExecute=", "UMask=",
		"RestrictAddressFamilies=~AF_PACKET", "RestrictAddressFamilies=~AF_NETLINK"} {
		ok := false
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[1] == item {
				ok = f[0] == "✓"
				break
			}
		}
		if !ok {
			t.Errorf("systemd-analyze security: %s is not ✓", item)
		}
	}
}

// TestUnitDirectives checks what the issue asks of the unit, and that the
// unit, the example config and the Dockerfile agree on the database path.
func TestUnitDirectives(t *testing.T) {
	lines := parseUnit(t, readFile(t, unitPath))
	want := map[string]string{
		"DynamicUser": "yes", "StateDirectory": "ntpexp", "ConfigurationDirectory": "ntpexp", "LogsDirectory": "ntpexp",
		"AmbientCapabilities": "CAP_NET_BIND_SERVICE", "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
		"ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "RestrictNamespaces": "yes",
		"LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "RestrictRealtime": "yes",
		"RestrictSUIDSGID": "yes", "SystemCallArchitectures": "native", "UMask": "0077",
		"Restart": "always", "RestartSec": "10", "MemoryMax": "512M", "CPUQuota": "50%",
		"ExecReload": "/bin/kill -HUP $MAINPID", "StandardOutput": "journal", "StandardError": "journal",
		"Wants": "network-online.target", "After": "network-online.target",
	}
	for k, v := range want {
		got := unitValues(lines, k)
		if len(got) != 1 || got[0] != v {
			t.Errorf("%s: %s = %q, want exactly %q", unitPath, k, got, v)
		}
	}
	if v := unitValues(lines, "ProtectClock"); len(v) > 0 {
		t.Errorf("ProtectClock=%v: it makes the read-only adjtimex() fail (EPERM), and ntpexp would answer leap=alarm", v)
	}
	fams := strings.Fields(strings.Join(unitValues(lines, "RestrictAddressFamilies"), " "))
	sort.Strings(fams)
	if strings.Join(fams, " ") != "AF_INET AF_INET6" {
		t.Errorf("RestrictAddressFamilies = %v, want AF_INET AF_INET6", fams)
	}
	start := unitValues(lines, "ExecStart")
	if len(start) != 1 {
		t.Fatalf("ExecStart = %q", start)
	}
	f := strings.Fields(start[0])
	if len(f) < 2 || f[0] != installedBin || f[1] != "serve" {
		t.Errorf("ExecStart = %q, want %s serve ...", start[0], installedBin)
	}
	var unitDB string
	for _, a := range f {
		if v, ok := strings.CutPrefix(a, "--database.path="); ok {
			unitDB = v
		}
	}
	if unitDB != "/var/lib/ntpexp/ntpexp.db" {
		t.Errorf("ExecStart database path %q, want /var/lib/ntpexp/ntpexp.db (the StateDirectory)", unitDB)
	}
	var ex struct {
		Database struct {
			Path string `json:"path"`
		} `json:"database"`
	}
	if err := json.Unmarshal([]byte(readFile(t, examplePath)), &ex); err != nil {
		t.Fatal(err)
	}
	if ex.Database.Path != unitDB {
		t.Errorf("config.example.json database.path %q differs from the unit's %q: `ntpexp list` would not find the daemon's database", ex.Database.Path, unitDB)
	}
	if !strings.Contains(readFile(t, filepath.Join(repo, "Dockerfile")), "--database.path="+unitDB) {
		t.Errorf("the Dockerfile's CMD does not use --database.path=%s", unitDB)
	}
}

// syscallSet expands systemd syscall groups with systemd-analyze.
type syscallSet struct {
	sa    string
	cache map[string][]string
}

func (s *syscallSet) expand(t *testing.T, name string) []string {
	t.Helper()
	if !strings.HasPrefix(name, "@") {
		return []string{name}
	}
	if v, ok := s.cache[name]; ok {
		return v
	}
	out, err := exec.Command(s.sa, "syscall-filter", "--no-pager", name).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", name, err)
	}
	var calls []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for first := true; sc.Scan(); first = false {
		line := strings.TrimSpace(sc.Text())
		if first || line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		calls = append(calls, s.expand(t, line)...)
	}
	if len(calls) == 0 {
		t.Fatalf("systemd-analyze syscall-filter %s: no system calls", name)
	}
	s.cache[name] = calls
	return calls
}

// allowedSyscalls applies the unit's SystemCallFilter= lines as systemd does:
// the first line decides between allow list and deny list, later lines add
// to or remove from it in order, and an empty assignment resets.
func allowedSyscalls(t *testing.T, sa string, filters []string) (allowed func(string) bool) {
	t.Helper()
	s := &syscallSet{sa: sa, cache: map[string][]string{}}
	set := map[string]bool{}
	mode := "" // "allow" or "deny"
	for _, f := range filters {
		if f == "" {
			set, mode = map[string]bool{}, ""
			continue
		}
		neg := strings.HasPrefix(f, "~")
		if mode == "" {
			mode = map[bool]string{false: "allow", true: "deny"}[neg]
		}
		for _, name := range strings.Fields(strings.TrimPrefix(f, "~")) {
			name, _, _ = strings.Cut(name, ":")
			for _, c := range s.expand(t, name) {
				set[c] = (mode == "allow") != neg
			}
		}
	}
	if mode == "" {
		return func(string) bool { return true }
	}
	return func(c string) bool {
		if mode == "allow" {
			return set[c]
		}
		in, listed := set[c]
		return !listed || !in
	}
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		return peers.FreeUDPPort(t)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// childPid returns the pid of the only child of pid.
func childPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			return c
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			return c
		}
	}
	return 0
}

// waitReady polls http://web/-/ready until it answers 200 (ntpexp binds its
// NTP sockets before the web ones), or done reports the process ended.
// Probing NTP before that would risk a probe socket taking the port.
func waitReady(t *testing.T, web string, done chan error, timeout time.Duration, out func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if resp, err := http.Get("http://" + web + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("ntpexp exited during start: %v\n%s", err, out())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ntpexp not ready after %v\n%s", timeout, out())
		}
	}
}

func httpGet(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

var (
	straceCallRE   = regexp.MustCompile(`^\d+\s+([a-z_][a-z0-9_]*)\(`)
	straceResumeRE = regexp.MustCompile(`^\d+\s+<\.\.\. ([a-z_][a-z0-9_]*) resumed>`)
	straceSocketRE = regexp.MustCompile(`\bsocket\((AF_[A-Z0-9]+)`)
)

// TestUnitSyscallFilterCoversNtpexp runs ntpexp serve under strace, as an
// unprivileged user like the unit's DynamicUser, through start, NTP
// requests, scrapes, API calls, a log reopen (SIGHUP), store maintenance and
// a clean stop, and checks that the unit's SystemCallFilter= allows every
// system call it made and RestrictAddressFamilies= every socket family.
func TestUnitSyscallFilterCoversNtpexp(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	strace := need(t, "strace", "strace")
	lines := parseUnit(t, readFile(t, unitPath))
	allowed := allowedSyscalls(t, sa, unitValues(lines, "SystemCallFilter"))
	families := map[string]bool{}
	for _, f := range strings.Fields(strings.Join(unitValues(lines, "RestrictAddressFamilies"), " ")) {
		families[f] = true
	}

	// Not t.TempDir(): its parent is 0700, and ntpexp runs as nobody here.
	dir, err := os.MkdirTemp("", "ntpexp-strace")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	trace := filepath.Join(dir, "strace.out")
	logFile := filepath.Join(dir, "ntpexp.log")
	ntpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "udp"))
	webAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	args := []string{"-f", "-qq", "-o", trace, ntpexpBin, "serve",
		"--database.path=" + filepath.Join(dir, "ntpexp.db"),
		"--ntp.listen-address=" + ntpAddr, "--web.listen-address=" + webAddr,
		"--monitoring.log-file=" + logFile, "--database.flush-interval=1", "--performance.cleanup-interval=1"}
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// As the unit's DynamicUser: not root, no capabilities.
		cmd = exec.Command(need(t, "setpriv", "util-linux"), append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", strace}, args...)...)
	} else {
		cmd = exec.Command(strace, args...)
	}
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})

	waitReady(t, webAddr, done, 60*time.Second, func() string { return out.String() + "\nlog:\n" + readFileOr(logFile) })
	pid := childPid(cmd.Process.Pid)
	if pid == 0 {
		t.Fatal("cannot find ntpexp's pid under strace")
	}
	for i := 0; i < 5; i++ {
		if _, err := peers.Probe(nil, ntpAddr, 2*time.Second); err != nil {
			t.Fatalf("NTP request %d: %v", i, err)
		}
	}
	for _, path := range []string{"/metrics", "/-/healthy", "/-/ready", "/api/clients", "/"} {
		if code := httpGet(t, "http://"+webAddr+path); code != 200 {
			t.Errorf("GET %s: %d", path, code)
		}
	}
	// logrotate: move the file away, SIGHUP, and the daemon writes a new one.
	if err := os.Rename(logFile, logFile+".1"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // a flush and a maintenance run (cleanup-interval 1 s)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ntpexp under strace: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("ntpexp did not stop within 60 s of SIGTERM")
	}
	if _, err := os.Stat(logFile); err != nil {
		t.Errorf("no new log file after SIGHUP: %v", err)
	}
	log := readFileOr(logFile + ".1")
	if !strings.Contains(log, "starting ntpexp") {
		t.Errorf("log file before rotation lacks the start message:\n%s", log)
	}

	checkTrace(t, trace, allowed, families, []string{"adjtimex", "recvmmsg", "accept4", "pwrite64", "fsync"})
}

// checkTrace reads an strace -f output from ntpexp's execve on and checks
// that every system call it made is allowed and every socket family it
// opened is in families. must are calls the workload has to exercise.
func checkTrace(t *testing.T, trace string, allowed func(string) bool, families map[string]bool, must []string) {
	t.Helper()
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	badFamilies := map[string]bool{}
	started := false
	for _, line := range strings.Split(string(b), "\n") {
		if !started {
			// Count from ntpexp's execve on (the filter applies from there).
			started = strings.Contains(line, "execve(\""+ntpexpBin+"\"")
			if !started {
				continue
			}
		}
		if m := straceCallRE.FindStringSubmatch(line); m != nil {
			seen[m[1]]++
		} else if m := straceResumeRE.FindStringSubmatch(line); m != nil {
			seen[m[1]]++
		}
		if m := straceSocketRE.FindStringSubmatch(line); m != nil && !families[m[1]] {
			badFamilies[m[1]] = true
		}
	}
	if !started || len(seen) < 20 {
		t.Fatalf("strace recorded %d distinct system calls; trace starts:\n%s", len(seen), firstLines(string(b), 10))
	}
	for _, must := range must {
		if seen[must] == 0 {
			t.Errorf("the workload did not exercise %s (trace has %d distinct calls)", must, len(seen))
		}
	}
	var names, denied []string
	for c := range seen {
		names = append(names, c)
		if !allowed(c) {
			denied = append(denied, c)
		}
	}
	sort.Strings(names)
	sort.Strings(denied)
	t.Logf("ntpexp made %d distinct system calls: %s", len(names), strings.Join(names, " "))
	if len(denied) > 0 {
		t.Errorf("the unit's SystemCallFilter= would refuse (EPERM) these calls ntpexp made: %s", strings.Join(denied, " "))
	}
	for f := range badFamilies {
		t.Errorf("ntpexp opened an %s socket, which RestrictAddressFamilies= refuses", f)
	}
}

func readFileOr(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

func firstLines(s string, n int) string {
	parts := strings.SplitN(s, "\n", n+1)
	if len(parts) > n {
		parts = parts[:n]
	}
	return strings.Join(parts, "\n")
}

// flatten returns the dotted keys of a JSON config ("database.batch_size").
func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			flatten(prefix+k+".", sub, out)
			continue
		}
		out[prefix+k] = v
	}
}

// effectiveConfig runs check-config and returns its stdout (the effective
// configuration as JSON).
func effectiveConfig(t *testing.T, args ...string) map[string]any {
	t.Helper()
	cmd := exec.Command(ntpexpBin, append([]string{"check-config"}, args...)...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ntpexp check-config %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "configuration is valid") {
		t.Errorf("check-config said: %s", stderr.String())
	}
	var m map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		t.Fatalf("check-config output: %v\n%s", err, stdout.String())
	}
	keys := map[string]any{}
	flatten("", m, keys)
	return keys
}

// cleanEnv is the environment without NTPEXP_* settings.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "NTPEXP_") {
			env = append(env, e)
		}
	}
	return env
}

// TestExampleConfig: the example is valid, complete (every setting), keeps
// the old tool's keys, and spells out the defaults except where a systemd
// deployment differs.
func TestExampleConfig(t *testing.T) {
	example := effectiveConfig(t, "--config", examplePath)
	defaults := effectiveConfig(t, "--config", writeTemp(t, "empty.json", "{}"))
	var raw map[string]any
	if err := json.Unmarshal([]byte(readFile(t, examplePath)), &raw); err != nil {
		t.Fatal(err)
	}
	written := map[string]any{}
	flatten("", raw, written)
	for k := range defaults {
		if _, ok := written[k]; !ok {
			t.Errorf("config.example.json lacks %q (every setting belongs in the example)", k)
		}
	}
	for _, k := range []string{"database.path", "database.batch_size", "database.flush_interval", "monitoring.ntp_port",
		"monitoring.log_level", "monitoring.log_file", "performance.max_cache_size", "performance.cleanup_interval",
		"performance.retention_days"} {
		if _, ok := written[k]; !ok {
			t.Errorf("config.example.json lacks the old tool's key %q", k)
		}
	}
	for k, v := range example {
		if k == "database.path" || k == "ntp.listen_address" || k == "metrics.watch" || k == "capture.interface" {
			continue
		}
		if fmt.Sprint(v) != fmt.Sprint(defaults[k]) {
			t.Errorf("config.example.json: %s = %v, the default is %v (the example documents the defaults)", k, v, defaults[k])
		}
	}
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	helpFlagRE = regexp.MustCompile(`^\s+(?:-\w, )?--(?:\[no-\])?([a-z][a-z0-9.-]*)`)
	helpEnvRE  = regexp.MustCompile(`\$(NTPEXP_[A-Z0-9_]+)`)
)

// TestConfigurationDocCoversEverySetting: docs/configuration.md names every
// file key, flag and environment variable that `ntpexp --help` and
// check-config know.
func TestConfigurationDocCoversEverySetting(t *testing.T) {
	doc := readFile(t, filepath.Join(repo, "docs/configuration.md"))
	cmd := exec.Command(ntpexpBin, "--help")
	cmd.Env = cleanEnv()
	help, err := cmd.Output()
	if err != nil {
		t.Fatalf("ntpexp --help: %v", err)
	}
	var flags, envs []string
	sc := bufio.NewScanner(bytes.NewReader(help))
	for sc.Scan() {
		if m := helpFlagRE.FindStringSubmatch(sc.Text()); m != nil && m[1] != "help" {
			flags = append(flags, "--"+m[1])
		}
		for _, m := range helpEnvRE.FindAllStringSubmatch(sc.Text(), -1) {
			envs = append(envs, m[1])
		}
	}
	if len(flags) < 20 || len(envs) < 20 {
		t.Fatalf("parsed only %d flags and %d environment variables from --help:\n%s", len(flags), len(envs), help)
	}
	for _, f := range flags {
		if !strings.Contains(doc, "`"+f+"`") {
			t.Errorf("docs/configuration.md does not name the flag `%s`", f)
		}
	}
	for _, e := range envs {
		if !strings.Contains(doc, "`"+e+"`") {
			t.Errorf("docs/configuration.md does not name the environment variable `%s`", e)
		}
	}
	for k := range effectiveConfig(t, "--config", writeTemp(t, "empty.json", "{}")) {
		if !strings.Contains(doc, "`"+k+"`") {
			t.Errorf("docs/configuration.md does not name the file key `%s`", k)
		}
	}
}

// makeEnv is the environment for a make run that must not inherit the
// outer make's flags (go test may run under `make test`).
func makeEnv() []string {
	var env []string
	for _, e := range cleanEnv() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR", "PREFIX", "BINDIR":
			continue
		}
		env = append(env, e)
	}
	return env
}

// TestMakeInstall runs make install into a DESTDIR and checks the tree.
func TestMakeInstall(t *testing.T) {
	mk := need(t, "make", "make")
	dest := t.TempDir()
	bindir := t.TempDir()
	cmd := exec.Command(mk, "-C", repo, "install", "DESTDIR="+dest, "PREFIX=/usr", "BINDIR="+bindir)
	cmd.Env = makeEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	var files []string
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dest, p)
			files = append(files, "/"+rel)
		}
		return nil
	})
	sort.Strings(files)
	t.Logf("installed:\n%s", strings.Join(files, "\n"))

	want := map[string]os.FileMode{
		"/usr/bin/ntpexp":                           0o755,
		"/usr/lib/systemd/system/ntpexp.service":    0o644,
		"/usr/share/ntpexp/config.example.json":     0o644,
		"/usr/share/ntpexp/alerts/ntpexp.rules.yml": 0o644,
	}
	dash, _ := filepath.Glob(filepath.Join(repo, "dashboards/*.json"))
	if len(dash) == 0 {
		t.Error("no dashboards/*.json in the repository")
	}
	for _, d := range dash {
		want["/usr/share/ntpexp/dashboards/"+filepath.Base(d)] = 0o644
	}
	for p, mode := range want {
		fi, err := os.Stat(filepath.Join(dest, p))
		if err != nil {
			t.Errorf("not installed: %s", p)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
	for _, f := range files {
		if _, ok := want[f]; !ok {
			t.Errorf("unexpected file installed: %s (tests and other files stay out)", f)
		}
		if !strings.HasPrefix(f, "/usr/") {
			t.Errorf("installed outside PREFIX: %s (make install never touches /etc)", f)
		}
	}
	unit := readFile(t, filepath.Join(dest, "usr/lib/systemd/system/ntpexp.service"))
	if wantUnit := strings.ReplaceAll(readFile(t, unitPath), installedBin, "/usr/bin/ntpexp"); unit != wantUnit {
		t.Errorf("installed unit is not deploy/systemd/ntpexp.service with ExecStart=/usr/bin/ntpexp:\n%s", unit)
	}
	if got, wantEx := readFile(t, filepath.Join(dest, "usr/share/ntpexp/config.example.json")), readFile(t, examplePath); got != wantEx {
		t.Error("installed config.example.json differs from deploy/config.example.json")
	}
	out, err := exec.Command(filepath.Join(dest, "usr/bin/ntpexp"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ntpexp") {
		t.Errorf("installed ntpexp version: %v\n%s", err, out)
	}

	// The default prefix is /usr/local, where systemd also looks for units.
	cmd = exec.Command(mk, "-C", repo, "-n", "install", "DESTDIR=/DEST")
	cmd.Env = makeEnv()
	dry, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n install: %v\n%s", err, dry)
	}
	for _, s := range []string{"/DEST/usr/local/bin/ntpexp", "/DEST/usr/local/lib/systemd/system/ntpexp.service",
		"/DEST/usr/local/share/ntpexp/config.example.json"} {
		if !bytes.Contains(dry, []byte(s)) {
			t.Errorf("make -n install DESTDIR=/DEST does not install %s:\n%s", s, dry)
		}
	}
}

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	Cmd, Args string
	Stage     int
}

func parseDockerfile(t *testing.T, text string) []dockerInstr {
	t.Helper()
	var out []dockerInstr
	stage := -1
	var cur strings.Builder
	flush := func() {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return
		}
		cmd, args, _ := strings.Cut(s, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerInstr{cmd, strings.TrimSpace(args), stage})
	}
	for _, line := range strings.Split(text, "\n") {
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "#") {
			continue
		}
		if strings.HasSuffix(trim, "\\") {
			cur.WriteString(strings.TrimSuffix(trim, "\\") + " ")
			continue
		}
		cur.WriteString(trim)
		flush()
	}
	flush()
	return out
}

var (
	goLineRE      = regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`)
	builderRE     = regexp.MustCompile(`^golang:(\d+)\.(\d+)-bookworm\s+AS\s+builder$`)
	makeVarRE     = regexp.MustCompile(`\$\{(\w+):\+"(\w+)=\$(\w+)"\}`)
	makeDefaultRE = regexp.MustCompile(`(?m)^(\w+)\s*\?=`)
)

// TestDockerfile checks statically (Docker cannot run here) that the image
// is built by the Makefile's own build command with the Go of go.mod, and
// runs as a non-root user with the ports, volume and health check.
func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t, readFile(t, filepath.Join(repo, "Dockerfile")))
	makefile := readFile(t, filepath.Join(repo, "Makefile"))
	gomod := readFile(t, filepath.Join(repo, "go.mod"))

	var froms []dockerInstr
	for _, in := range df {
		if in.Cmd == "FROM" {
			froms = append(froms, in)
		}
	}
	if len(froms) != 2 {
		t.Fatalf("want a two-stage build (builder, runtime), got FROM %v", froms)
	}
	gm := goLineRE.FindStringSubmatch(gomod)
	bm := builderRE.FindStringSubmatch(froms[0].Args)
	if gm == nil || bm == nil || gm[1] != bm[1] || gm[2] != bm[2] {
		t.Errorf("builder image %q does not match go.mod's go %s.%s (want golang:%s.%s-bookworm AS builder)", froms[0].Args, gm[1], gm[2], gm[1], gm[2])
	}
	if froms[1].Args != "debian:bookworm-slim" {
		t.Errorf("runtime image %q, want debian:bookworm-slim", froms[1].Args)
	}

	// The build: exactly `make build`, passing only the version variables
	// the Makefile lets one override, each a build ARG.
	makeDefaults := map[string]bool{}
	for _, m := range makeDefaultRE.FindAllStringSubmatch(makefile, -1) {
		makeDefaults[m[1]] = true
	}
	args := map[string]bool{}
	var builds []string
	for _, in := range df {
		if in.Stage == 0 && in.Cmd == "ARG" {
			args[strings.SplitN(in.Args, "=", 2)[0]] = true
		}
		if in.Cmd == "RUN" && regexp.MustCompile(`\bgo\s+build\b`).MatchString(in.Args) {
			t.Errorf("the Dockerfile runs go build itself (%q): run `make build` so the command is the Makefile's", in.Args)
		}
		if in.Cmd == "RUN" && strings.Contains(in.Args, "make ") {
			builds = append(builds, in.Args)
			if in.Stage != 0 {
				t.Errorf("make runs outside the builder stage: %q", in.Args)
			}
		}
	}
	if len(builds) != 1 {
		t.Fatalf("want exactly one RUN make build, got %q", builds)
	}
	rest := strings.TrimSpace(makeVarRE.ReplaceAllStringFunc(builds[0], func(s string) string {
		m := makeVarRE.FindStringSubmatch(s)
		if m[1] != m[2] || m[2] != m[3] {
			t.Errorf("make variable passed inconsistently: %s", s)
		}
		if !makeDefaults[m[1]] {
			t.Errorf("the Dockerfile passes %s to make, which the Makefile does not define with ?=", m[1])
		}
		if !args[m[1]] {
			t.Errorf("the Dockerfile passes %s to make but declares no ARG %s", m[1], m[1])
		}
		delete(args, m[1])
		return ""
	}))
	if rest != "make build" {
		t.Errorf("the build step is %q; after the version variables it must be exactly `make build`, got %q", builds[0], rest)
	}
	for a := range args {
		t.Errorf("ARG %s is declared but not passed to make build", a)
	}
	if !strings.Contains(makefile, "\nbuild:\n\tCGO_ENABLED=1 $(GO) build") {
		t.Error("the Makefile's build recipe is not the cgo `$(GO) build` this test expects; check the Dockerfile still builds the same way")
	}
	// make docker passes the same variables.
	for _, v := range []string{"VERSION", "REVISION", "BRANCH", "BUILDDATE", "BUILDUSER"} {
		if !strings.Contains(makefile, "--build-arg "+v+"=$("+v+")") {
			t.Errorf("the Makefile's docker build does not pass --build-arg %s=$(%s)", v, v)
		}
	}

	all := map[string][]string{}
	var copies []dockerInstr
	for _, in := range df {
		if in.Stage == 1 {
			all[in.Cmd] = append(all[in.Cmd], in.Args)
			if in.Cmd == "COPY" {
				copies = append(copies, in)
			}
		}
		if in.Stage == 0 && in.Cmd == "RUN" && strings.Contains(in.Args, "setcap") &&
			!strings.Contains(in.Args, "cap_net_bind_service=+ep") {
			t.Errorf("setcap without cap_net_bind_service=+ep: %q", in.Args)
		}
	}
	if !strings.Contains(readFile(t, filepath.Join(repo, "Dockerfile")), "setcap cap_net_bind_service=+ep /out/usr/local/bin/ntpexp") {
		t.Error("the binary gets no cap_net_bind_service file capability")
	}
	for _, c := range copies {
		if strings.Contains(c.Args, "--chown") {
			t.Errorf("COPY %s: a chown clears the binary's file capability", c.Args)
		}
	}
	users := all["USER"]
	if len(users) != 1 || strings.HasPrefix(users[0], "0") || strings.HasPrefix(users[0], "root") {
		t.Errorf("runtime USER %q: want one non-root user", users)
	}
	expose := strings.Fields(strings.Join(all["EXPOSE"], " "))
	sort.Strings(expose)
	if strings.Join(expose, " ") != "10123/tcp 123/udp" {
		t.Errorf("EXPOSE %v, want 123/udp and 10123/tcp", expose)
	}
	if v := all["VOLUME"]; len(v) != 1 || v[0] != "/var/lib/ntpexp" {
		t.Errorf("VOLUME %v, want /var/lib/ntpexp", v)
	}
	if v := all["ENTRYPOINT"]; len(v) != 1 || v[0] != `["/usr/local/bin/ntpexp"]` {
		t.Errorf("ENTRYPOINT %v", v)
	}
	var cmdArgs []string
	if v := all["CMD"]; len(v) != 1 || json.Unmarshal([]byte(v[0]), &cmdArgs) != nil ||
		len(cmdArgs) < 2 || cmdArgs[0] != "serve" || cmdArgs[1] != "--database.path=/var/lib/ntpexp/ntpexp.db" {
		t.Errorf("CMD %v, want [\"serve\", \"--database.path=/var/lib/ntpexp/ntpexp.db\"] (the database in the volume)", v)
	}
	if hc := healthcheck(t, all["HEALTHCHECK"]); len(hc) == 0 || hc[0] != "/bin/bash" {
		t.Errorf("HEALTHCHECK %v: want an exec-form command run by /bin/bash (the slim image has no curl)", hc)
	}
}

// healthcheck returns the exec-form command of the HEALTHCHECK instruction.
func healthcheck(t *testing.T, hcs []string) []string {
	t.Helper()
	if len(hcs) != 1 {
		t.Fatalf("HEALTHCHECK %q: want one", hcs)
	}
	_, form, ok := strings.Cut(hcs[0], "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %q has no CMD", hcs[0])
	}
	var argv []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(form)), &argv); err != nil {
		// Docker silently falls back to shell form on invalid JSON.
		t.Fatalf("HEALTHCHECK CMD is not valid JSON (Docker would run it as a shell string): %v: %s", err, form)
	}
	return argv
}

// TestDockerHealthcheck runs the image's health check command against a
// real ntpexp (on a free port instead of 10123) and against a closed port.
func TestDockerHealthcheck(t *testing.T) {
	df := parseDockerfile(t, readFile(t, filepath.Join(repo, "Dockerfile")))
	var hcs []string
	for _, in := range df {
		if in.Cmd == "HEALTHCHECK" {
			hcs = append(hcs, in.Args)
		}
	}
	argv := healthcheck(t, hcs)
	if len(argv) != 3 || argv[1] != "-c" || !strings.Contains(argv[2], "/dev/tcp/127.0.0.1/10123") {
		t.Fatalf("HEALTHCHECK %q: want bash -c '... /dev/tcp/127.0.0.1/10123 ...'", argv)
	}
	need(t, "bash", "bash")
	run := func(port int) error {
		cmd := exec.Command("bash", "-c", strings.ReplaceAll(argv[2], "10123", strconv.Itoa(port)))
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			return err
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second): // the HEALTHCHECK --timeout
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("timed out")
		}
	}
	closed := freePort(t, "tcp")
	if err := run(closed); err == nil {
		t.Error("the health check passes against a closed port")
	}
	dir := t.TempDir()
	web := freePort(t, "tcp")
	cmd := exec.Command(ntpexpBin, "serve", "--database.path="+filepath.Join(dir, "ntpexp.db"),
		fmt.Sprintf("--ntp.listen-address=127.0.0.1:%d", freePort(t, "udp")), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", web))
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = run(web); err == nil {
			return
		}
	}
	t.Fatalf("the health check fails against a running ntpexp: %v\n%s", err, out.String())
}

// TestDockerignoreKeepsBuildInputs: every file the build reads (Go files,
// embedded files, go.mod, Makefile, VERSION, the example config) is in the
// build context.
func TestDockerignoreKeepsBuildInputs(t *testing.T) {
	var patterns []string
	for _, line := range strings.Split(readFile(t, filepath.Join(repo, ".dockerignore")), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: this test does not understand exceptions (%s)", line)
		}
		patterns = append(patterns, strings.TrimPrefix(line, "/"))
	}
	excluded := func(rel string) string {
		parts := strings.Split(rel, "/")
		for _, p := range patterns {
			for i := 1; i <= len(parts); i++ {
				prefix := strings.Join(parts[:i], "/")
				if ok, _ := filepath.Match(p, prefix); ok {
					return p
				}
				if q, ok := strings.CutPrefix(p, "**/"); ok {
					if ok, _ := filepath.Match(q, parts[i-1]); ok {
						return p
					}
				}
			}
		}
		return ""
	}
	root, err := filepath.Abs(repo)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if not .Standard}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .CgoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}`, "./cmd/...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	inputs := []string{"go.mod", "go.sum", "Makefile", "VERSION", "deploy/config.example.json"}
	for _, f := range strings.Split(string(out), "\n") {
		if rel, ok := strings.CutPrefix(f, root+"/"); ok {
			inputs = append(inputs, rel)
		}
	}
	if len(inputs) < 20 {
		t.Fatalf("go list found only %d build inputs", len(inputs))
	}
	for _, f := range inputs {
		if p := excluded(f); p != "" {
			t.Errorf(".dockerignore pattern %q leaves the build input %s out of the context", p, f)
		}
	}
}

// auditArch is the seccomp architecture of this build, for the filter.
var auditArch = map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}

// denyAdjtimexAndExec makes adjtimex and clock_adjtime fail with EPERM, as
// systemd's ProtectClock=yes does whatever their arguments, and execs argv.
func denyAdjtimexAndExec(argv []string) error {
	arch, ok := auditArch[runtime.GOARCH]
	if !ok || len(argv) == 0 {
		return fmt.Errorf("unsupported (GOARCH %s, argv %q)", runtime.GOARCH, argv)
	}
	// The filter applies to this thread, and execve keeps it.
	runtime.LockOSThread()
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	prog := []unix.SockFilter{
		{Code: ld, K: 4}, // seccomp_data.arch
		{Code: jeq, Jt: 0, Jf: 4, K: arch},
		{Code: ld, K: 0}, // seccomp_data.nr
		{Code: jeq, Jt: 1, Jf: 0, K: unix.SYS_ADJTIMEX},
		{Code: jeq, Jt: 0, Jf: 1, K: unix.SYS_CLOCK_ADJTIME},
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	var tx unix.Timex
	if _, err := unix.Adjtimex(&tx); err != unix.EPERM {
		return fmt.Errorf("adjtimex under the filter: %v, want EPERM", err)
	}
	return syscall.Exec(argv[0], argv, os.Environ())
}

// TestProtectClockWouldMakeLeapAlarm shows why the unit must not set
// ProtectClock=yes: under the seccomp filter it adds (adjtimex and
// clock_adjtime fail with EPERM, even for reading), ntpexp cannot learn the
// kernel's clock state and tells every client that its clock is
// unsynchronised (leap indicator 3, stratum 0), whatever the truth.
func TestProtectClockWouldMakeLeapAlarm(t *testing.T) {
	if _, ok := auditArch[runtime.GOARCH]; !ok {
		t.Skipf("no seccomp architecture for GOARCH %s in this test", runtime.GOARCH)
	}
	dir := t.TempDir()
	ntpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "udp"))
	webAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	cmd := exec.Command(os.Args[0], ntpexpBin, "serve", "--ntp.clock-sync=kernel",
		"--database.path="+filepath.Join(dir, "ntpexp.db"), "--ntp.listen-address="+ntpAddr, "--web.listen-address="+webAddr)
	cmd.Env = append(cleanEnv(), denyAdjtimexEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
	}()
	waitReady(t, webAddr, done, 15*time.Second, out.String)
	h, err := peers.Probe(nil, ntpAddr, 2*time.Second)
	if err != nil {
		t.Fatalf("no NTP answer: %v\n%s", err, out.String())
	}
	if h.Leap != 3 || h.Stratum != 0 {
		t.Errorf("under ProtectClock's filter: leap %d stratum %d; expected the alarm (3, 0) that makes ProtectClock unusable", h.Leap, h.Stratum)
	}
	resp, err := http.Get("http://" + webAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	found := false
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ntpexp_server_clock_synchronized "); ok {
			found = true
			if v != "0" {
				t.Errorf("ntpexp_server_clock_synchronized %s under ProtectClock's filter, expected 0", v)
			}
		}
	}
	if !found {
		t.Error("no ntpexp_server_clock_synchronized in /metrics")
	}
	if !strings.Contains(out.String(), "host clock is not synchronised according to the kernel") {
		t.Errorf("no start-up warning:\n%s", out.String())
	}
}
