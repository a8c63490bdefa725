package e2e

import (
	"database/sql"
	"errors"
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

	_ "github.com/mattn/go-sqlite3"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func queryInt(t testing.TB, db *sql.DB, q string) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// TestCleanStopUnderLoad: SIGTERM while clients are sending; every
// request ntpexp answered is in the database afterwards.
func TestCleanStopUnderLoad(t *testing.T) {
	d := startDaemon(t, daemonOpts{Args: []string{"--ntp.ratelimit.enabled=false", "--database.flush-interval", "30"}})
	done := make(chan loadResult, 1)
	go func() {
		done <- runLoad(t, d.NTPAddr, "-rate", "8000", "-duration", "4s", "-personality", "mix", "-sources", "2000")
	}()
	time.Sleep(2 * time.Second)
	d.stop()
	load := <-done
	db := openDB(t, d.DB)
	answered := queryInt(t, db, "SELECT count(*) FROM observations WHERE drop_reason = 0")
	total := queryInt(t, db, "SELECT count(*) FROM observations")
	if answered != int64(load.Replies) {
		t.Fatalf("clients got %d replies, the database holds %d answered requests", load.Replies, answered)
	}
	m := regexp.MustCompile(`msg=stopped rows_written=(\d+) rows_dropped=(\d+)`).FindStringSubmatch(d.Proc.Output())
	if m == nil || m[2] != "0" || m[1] != strconv.FormatInt(total, 10) {
		t.Fatalf("stop line %q; database rows %d", m, total)
	}
	t.Logf("SIGTERM after 2 s of 8000 req/s (flush interval 30 s): %d replies received, %d answered rows stored, 0 lost", load.Replies, answered)
}

// TestKillUnderLoad: kill -9 under load leaves a consistent database
// that a restart continues; at most one flush interval is lost.
func TestKillUnderLoad(t *testing.T) {
	const rate, flush = 4000, 1
	d := startDaemon(t, daemonOpts{Args: []string{"--ntp.ratelimit.enabled=false", "--database.flush-interval", strconv.Itoa(flush)}})
	done := make(chan loadResult, 1)
	go func() {
		done <- runLoad(t, d.NTPAddr, "-rate", strconv.Itoa(rate), "-duration", "3s", "-personality", "mix", "-sources", "1000")
	}()
	time.Sleep(2 * time.Second)
	d.Proc.Cmd.Process.Signal(syscall.SIGKILL)
	<-d.Proc.Done()
	load := <-done
	// Read-write, as a restarted ntpexp would: it recovers the WAL.
	db, err := sql.Open("sqlite3", "file:"+d.DB+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	var integrity string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check: %q %v", integrity, err)
	}
	answered := queryInt(t, db, "SELECT count(*) FROM observations WHERE drop_reason = 0")
	lost := int64(load.Replies) - answered
	bound := int64(rate*flush) + 100 // one flush interval, plus a batch in flight
	if lost < 0 || lost > bound {
		t.Fatalf("kill -9: %d replies, %d stored: %d lost, bound %d (one %d s flush interval at %d/s)", load.Replies, answered, lost, bound, flush, rate)
	}
	db.Close()

	// Restart on the same database: it opens and keeps adding rows.
	d2 := startDaemonOn(t, d, []string{"--ntp.ratelimit.enabled=false"})
	after := runLoad(t, d2.NTPAddr, "-rate", "500", "-duration", "1s", "-sources", "10")
	d2.stop()
	db2 := openDB(t, d.DB)
	n2 := queryInt(t, db2, "SELECT count(*) FROM observations WHERE drop_reason = 0")
	if n2 != answered+int64(after.Replies) {
		t.Fatalf("after restart: %d rows, want %d + %d", n2, answered, after.Replies)
	}
	t.Logf("kill -9 at 2 s of %d req/s, flush interval %d s: %d replies, %d stored, %d lost (%.2f s of traffic); integrity ok; restart added %d rows",
		rate, flush, load.Replies, answered, lost, float64(lost)/rate, after.Replies)
}

// startDaemonOn starts a new daemon on a previous one's database.
func startDaemonOn(t *testing.T, prev *daemon, args []string) *daemon {
	t.Helper()
	d := &daemon{t: t, Dir: prev.Dir, DB: prev.DB, NTPAddr: fmt.Sprintf("127.0.0.1:%d", peers.FreeUDPPort(t))}
	d.WebAddr = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cmd := exec.Command(ntpexpBin, append([]string{"serve", "--ntp.listen-address", d.NTPAddr, "--web.listen-address", d.WebAddr,
		"--database.path", d.DB, "--database.flush-interval", "1", "--ntp.clock-sync", "assume-synchronized"}, args...)...)
	d.Proc = peers.StartProc(t, "ntpexp-restart", t.TempDir(), cmd)
	d.waitReady()
	return d
}

// runExpectFail runs ntpexp serve and expects a start-up failure.
func runExpectFail(t *testing.T, cred *syscall.Credential, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(ntpexpBin, args...)
	cmd.Dir = dir
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("ntpexp %v: want a failure, got %v\n%s", args, err, out)
	}
	return ee.ExitCode(), string(out)
}

func TestStartupPortBusy(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dir := t.TempDir()
	code, out := runExpectFail(t, nil, dir, "serve", "--ntp.listen-address", pc.LocalAddr().String(),
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), "--database.path", filepath.Join(dir, "db"))
	port := pc.LocalAddr().(*net.UDPAddr).Port
	for _, want := range []string{"already in use", fmt.Sprintf("ss -ulnp 'sport = :%d'", port), "port 0", "--ntp.listen-address"} {
		if !strings.Contains(out, want) {
			t.Errorf("message lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
}

// nobody returns the credentials of user nobody and a directory it may write.
func nobody(t *testing.T) (*syscall.Credential, string) {
	t.Helper()
	peers.RequireRoot(t, "switch to an unprivileged user")
	// Not t.TempDir(): its parent is 0700, so nobody could not enter it.
	dir, err := os.MkdirTemp("", "ntpexp-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	return &syscall.Credential{Uid: 65534, Gid: 65534}, dir
}

// TestStartupPermissionDenied: an unprivileged user gets a message that
// suggests CAP_NET_BIND_SERVICE, not root.
func TestStartupPermissionDenied(t *testing.T) {
	cred, dir := nobody(t)
	code, out := runExpectFail(t, cred, dir, "serve", "--ntp.listen-address", "127.0.0.1:123",
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), "--database.path", filepath.Join(dir, "db"))
	for _, want := range []string{"permission denied", "CAP_NET_BIND_SERVICE", "AmbientCapabilities", "setcap"} {
		if !strings.Contains(out, want) {
			t.Errorf("message lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "sudo ntpexp") || strings.Contains(out, "run as root") {
		t.Errorf("message suggests root:\n%s", out)
	}
	if code != 1 {
		t.Errorf("exit code %d", code)
	}
}

// TestBindWithCapabilityOnly: as an unprivileged user with only
// CAP_NET_BIND_SERVICE (setcap on the binary), serve binds port 123.
func TestBindWithCapabilityOnly(t *testing.T) {
	_, dir := nobody(t)
	setcap := peers.Require(t, "setcap")
	bin := filepath.Join(dir, "ntpexp")
	raw, err := os.ReadFile(ntpexpBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(setcap, "cap_net_bind_service=+ep", bin).CombinedOutput(); err != nil {
		t.Fatalf("setcap: %v %s", err, out)
	}
	pair := peers.NewNetnsPair(t) // port 123 of a namespace of our own
	web := "127.0.0.1:19123"
	// setpriv drops to nobody inside the namespace; the file capability
	// is then all the privilege the process has.
	cmd := pair.A.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "serve",
		"--ntp.listen-address", pair.A.Addr.String()+":123", "--web.listen-address", web,
		"--database.path", filepath.Join(dir, "db"), "--ntp.clock-sync", "assume-synchronized")
	p := peers.StartProc(t, "ntpexp-nobody", dir, cmd)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), "starting ntpexp") {
		if exited, _ := p.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("ntpexp as nobody with cap_net_bind_service did not start:\n%s", p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := pair.B.DialUDP(pair.A.Addr.String() + ":123")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h, err := peers.Probe(conn, pair.A.Addr.String()+":123", 2*time.Second)
	if err != nil {
		t.Fatalf("no NTP answer from ntpexp running as nobody: %v", err)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err == nil && !strings.Contains(string(st), "Uid:\t65534") {
		// p is `ip netns exec`, which execs setpriv, which execs ntpexp:
		// the same process, so its status shows the final credentials.
		t.Fatalf("ntpexp is not running as nobody:\n%s", st)
	}
	t.Logf("nobody + cap_net_bind_service bound %s:123; reply stratum %d", pair.A.Addr, h.Stratum)
}
