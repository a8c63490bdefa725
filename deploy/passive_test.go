package deploy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

const passiveDropIn = "systemd/passive.conf"

// passiveUnitDir writes the unit and the passive drop-in as systemd would
// find them (ntpexp.service.d/passive.conf next to the unit), with
// ExecStart pointing at the test binary.
func passiveUnitDir(t *testing.T) string {
	t.Helper()
	unit := unitForAnalyze(t)
	dir := filepath.Dir(unit)
	drop := readFile(t, passiveDropIn)
	if !strings.Contains(drop, "ExecStart="+installedBin+" serve --mode=passive") {
		t.Fatalf("%s: ExecStart does not run %s serve --mode=passive", passiveDropIn, installedBin)
	}
	if err := os.MkdirAll(filepath.Join(dir, "ntpexp.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ntpexp.service.d", "passive.conf"),
		[]byte(strings.ReplaceAll(drop, installedBin, ntpexpBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	return unit
}

var passiveExposureRE = regexp.MustCompile(`Overall exposure level for ntpexp\.service with passive\.conf: (\d+\.\d+)`)

// TestPassiveDropIn: the unit with the passive drop-in verifies, systemd
// really merges it (AF_PACKET becomes allowed), and its exposure is the
// one recorded in docs/passive.md.
func TestPassiveDropIn(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	unit := passiveUnitDir(t)
	if out, err := exec.Command(sa, "verify", unit).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify with %s: %v\n%s", passiveDropIn, err, out)
	}
	cmd := exec.Command(sa, "security", "--offline=true", "--no-pager", unit)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	status := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			status[f[1]] = f[0]
		}
	}
	if status["RestrictAddressFamilies=~AF_PACKET"] != "✗" {
		t.Errorf("the drop-in was not merged: AF_PACKET is %q", status["RestrictAddressFamilies=~AF_PACKET"])
	}
	for _, item := range []string{"User=/DynamicUser=", "NoNewPrivileges=", "CapabilityBoundingSet=~CAP_SYS_ADMIN",
		"CapabilityBoundingSet=~CAP_NET_ADMIN", "RestrictAddressFamilies=~AF_NETLINK", "RestrictAddressFamilies=~AF_UNIX"} {
		if status[item] != "✓" {
			t.Errorf("with the passive drop-in, %s is %q, want ✓", item, status[item])
		}
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	got, _ := strconv.ParseFloat(string(m[1]), 64)
	dm := passiveExposureRE.FindStringSubmatch(readFile(t, filepath.Join(repo, "docs/passive.md")))
	if dm == nil {
		t.Fatal("docs/passive.md does not record the exposure level with the drop-in")
	}
	recorded, _ := strconv.ParseFloat(dm[1], 64)
	if got != recorded {
		t.Errorf("exposure with the passive drop-in is %.1f; docs/passive.md records %.1f", got, recorded)
	}
	t.Logf("systemd-analyze security with the passive drop-in: exposure %.1f", got)
}

// TestPassiveDropInSyscalls runs ntpexp --mode=passive under strace as
// user nobody with CAP_NET_RAW only (what the drop-in grants), capturing
// a namespace's interface while NTP packets cross it, and checks the
// unit's system-call filter and the drop-in's socket families allow all of
// it.
func TestPassiveDropInSyscalls(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	strace := need(t, "strace", "strace")
	setpriv := need(t, "setpriv", "util-linux")
	peers.RequireRoot(t, "create a network namespace and drop to nobody with CAP_NET_RAW")
	lines := append(parseUnit(t, readFile(t, unitPath)), parseUnit(t, readFile(t, passiveDropIn))...)
	allowed := allowedSyscalls(t, sa, unitValues(lines, "SystemCallFilter"))
	families := map[string]bool{}
	for _, f := range strings.Fields(strings.Join(unitValues(lines, "RestrictAddressFamilies"), " ")) {
		families[f] = true
	}
	if caps := unitValues(lines, "AmbientCapabilities"); strings.Join(caps, " ") != "CAP_NET_RAW" {
		t.Fatalf("merged AmbientCapabilities = %v, want CAP_NET_RAW only", caps)
	}

	pair := peers.NewNetnsPair(t)
	dir, err := os.MkdirTemp("", "ntpexp-strace-passive")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	trace := filepath.Join(dir, "strace.out")
	web := "127.0.0.1:19124"
	cmd := pair.A.Command(strace, "-f", "-qq", "-o", trace, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all,+net_raw", "--ambient-caps=-all,+net_raw", "--bounding-set=-all,+net_raw",
		ntpexpBin, "serve", "--mode=passive", "--capture.interface="+pair.A.Dev,
		"--database.path="+filepath.Join(dir, "ntpexp.db"), "--web.listen-address="+web, "--database.flush-interval=1")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	var out strings.Builder
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
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "starting ntpexp") {
		select {
		case err := <-done:
			t.Fatalf("passive ntpexp as nobody with CAP_NET_RAW exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not started after 60 s:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// NTP requests into A (nobody answers; the capture sees them anyway).
	// Unconnected: the ICMP port-unreachable answers must not fail the
	// next write.
	conn, err := pair.B.ListenUDP(":0")
	if err != nil {
		t.Fatal(err)
	}
	to := &net.UDPAddr{IP: pair.A.Addr.AsSlice(), Port: 123}
	req := make([]byte, 48)
	req[0] = 0x23
	for i := range 5 {
		req[47] = byte(i)
		if _, err := conn.WriteTo(req, to); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn.Close()
	time.Sleep(2500 * time.Millisecond) // past the reply timeout and a flush
	pid := 0
	for _, p := range pidsOf(t, ntpexpBin) {
		pid = p
	}
	if pid == 0 {
		t.Fatal("cannot find ntpexp's pid")
	}
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("ntpexp did not stop within 60 s of SIGTERM")
	}
	if !strings.Contains(out.String(), "rows_written=5") {
		t.Errorf("expected the 5 captured requests to be stored:\n%s", out.String())
	}
	checkTrace(t, trace, allowed, families, []string{"recvmmsg", "bind", "ioctl", "getsockopt", "pwrite64"})

	// It never sends a packet: no write-type call on a packet socket
	// (the metrics server's TCP writes are on other descriptors).
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	fds, sends, others := packetSocketSends(string(b))
	if len(fds) == 0 {
		t.Fatalf("no socket(AF_PACKET, …) in the trace of ntpexp:\n%s", firstLines(string(b), 20))
	}
	if len(sends) > 0 {
		t.Errorf("passive ntpexp wrote to its AF_PACKET socket (fd %v):\n%s", fds, strings.Join(sends, "\n"))
	}
	t.Logf("AF_PACKET socket fd %v: no write-type system call on it; %d on other descriptors", fds, others)
}

var (
	straceLineRE = regexp.MustCompile(`^(\d+)\s+(?:<\.\.\. ([a-z_0-9]+) resumed>|([a-z_0-9]+)\((.*))`)
	straceRetRE  = regexp.MustCompile(`\)\s+=\s+(-?\d+)`)
	straceFdRE   = regexp.MustCompile(`^(\d+)\b`)
)

// packetSocketSends reads an strace -f output from ntpexp's execve on and
// returns the descriptors of the AF_PACKET sockets it opened (socket(2),
// or a dup of one), the write-type calls made on one of them while it was
// open, and how many write-type calls went to other descriptors. Calls
// split by strace into "<unfinished ...>" and "<... resumed>" lines are
// followed per thread.
func packetSocketSends(trace string) (fds []int, sends []string, others int) {
	writes := map[string]bool{"write": true, "writev": true, "pwrite64": true, "pwritev": true, "pwritev2": true,
		"send": true, "sendto": true, "sendmsg": true, "sendmmsg": true, "sendfile": true, "splice": true}
	open := map[int]bool{}
	// pending: the call a thread has in progress creates a packet socket.
	pending := map[string]bool{}
	started := false
	for _, line := range strings.Split(trace, "\n") {
		if !started {
			if started = strings.Contains(line, "execve(\""+ntpexpBin+"\""); !started {
				continue
			}
		}
		m := straceLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		tid, resumed, call, args := m[1], m[2], m[3], m[4]
		if resumed == "" {
			// A new call: its arguments are on this line.
			fd := -1
			if f := straceFdRE.FindStringSubmatch(args); f != nil {
				fd, _ = strconv.Atoi(f[1])
			}
			switch {
			case call == "socket" && strings.HasPrefix(args, "AF_PACKET"),
				(call == "dup" || call == "dup2" || call == "dup3" || call == "fcntl" && strings.Contains(args, "F_DUPFD")) && open[fd]:
				pending[tid] = true
			case call == "close":
				delete(open, fd)
			case writes[call]:
				if open[fd] {
					sends = append(sends, line)
				} else {
					others++
				}
			}
		}
		if !pending[tid] {
			continue
		}
		if r := straceRetRE.FindStringSubmatch(line); r != nil {
			delete(pending, tid)
			if fd, _ := strconv.Atoi(r[1]); fd >= 0 {
				open[fd] = true
				fds = append(fds, fd)
			}
		}
	}
	return fds, sends, others
}

// TestPacketSocketSendsParser: the trace check finds writes on a packet
// socket, through strace's split lines and a dup, and not on descriptors
// that only share its number before it was opened or after it was closed.
func TestPacketSocketSendsParser(t *testing.T) {
	trace := strings.Join([]string{
		`100 execve("/usr/bin/setpriv", ["setpriv"], 0x7ff /* 2 vars */) = 0`,
		`100 socket(AF_PACKET, SOCK_RAW, 0) = 3`, // before ntpexp: not counted
		`100 execve("` + ntpexpBin + `", ["ntpexp"], 0x7ff /* 2 vars */) = 0`,
		`100 write(7, "x", 1) = 1`, // fd 7 is not a packet socket yet
		`101 socket(AF_PACKET, SOCK_RAW|SOCK_CLOEXEC|SOCK_NONBLOCK, 0 <unfinished ...>`,
		`102 accept4(5, {sa_family=AF_INET}, [16], SOCK_CLOEXEC|SOCK_NONBLOCK) = 8`,
		`101 <... socket resumed>) = 7`,
		`102 write(8, "HTTP/1.1 200 OK", 15) = 15`,
		`101 recvmmsg(7, [], 32, MSG_DONTWAIT|MSG_TRUNC, NULL) = -1 EAGAIN (Resource temporarily unavailable)`,
		`103 sendto(7, "\x00", 1, 0, NULL, 0 <unfinished ...>`,
		`103 <... sendto resumed>) = 1`,
		`101 dup(7) = 9`,
		`101 sendmsg(9, {msg_name=NULL}, 0) = 1`,
		`101 close(7) = 0`,
		`101 close(9) = 0`,
		`102 write(7, "y", 1) = 1`, // fd 7 reused: not a packet socket now
	}, "\n")
	fds, sends, others := packetSocketSends(trace)
	if fmt.Sprint(fds) != "[7 9]" || len(sends) != 2 || !strings.HasPrefix(sends[0], "103 sendto(7,") ||
		!strings.HasPrefix(sends[1], "101 sendmsg(9,") || others != 3 {
		t.Errorf("packet fds %v, sends %q, %d other writes", fds, sends, others)
	}
	if fds, sends, _ := packetSocketSends(strings.ReplaceAll(trace, "sendto(7", "sendto(8")); len(fds) != 2 || len(sends) != 1 {
		t.Errorf("a TCP write counted as a packet send: %v %q", fds, sends)
	}
}

// pidsOf lists the processes running exe.
func pidsOf(t *testing.T, exe string) []int {
	t.Helper()
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && l == exe {
			pids = append(pids, pid)
		}
	}
	return pids
}
