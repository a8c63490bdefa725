package e2e

// ntpexp next to the host's own time daemon, as docs/deployment.md sets it
// up: chronyd as a client only (`port 0`) keeps the clock, ntpexp owns UDP
// port 123; and how ntpexp reports a host clock the kernel calls
// unsynchronised.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// waitUDPPortFree waits until addr can be bound (another test, or another
// user of the machine, may hold port 123 for a while), and fails naming the
// holder if it stays busy.
func waitUDPPortFree(t *testing.T, network, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.ListenPacket(network, addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command("ss", "-ulnp", "sport = :"+addr[strings.LastIndexByte(addr, ':')+1:]).CombinedOutput()
			t.Fatalf("UDP %s stays busy for 60 s (%v); held by:\n%s", addr, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// udpPortsOf returns the local UDP ports of the sockets process pid holds.
func udpPortsOf(t *testing.T, pid int) []int {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("sockets of pid %d: %v", pid, err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"udp", "udp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			local := fields[1]
			port, err := strconv.ParseUint(local[strings.LastIndexByte(local, ':')+1:], 16, 16)
			if err == nil {
				ports = append(ports, int(port))
			}
		}
		f.Close()
	}
	return ports
}

// TestAlongsideHostTimeDaemon runs the deployment guide's setup: the host's
// chronyd, a client only (`port 0`, and -x so that it never touches this
// machine's clock), polls its upstream server while ntpexp serves
// 127.0.0.1:123. Both run; chronyd holds no port 123; ntpdig gets its
// answer from ntpexp.
func TestAlongsideHostTimeDaemon(t *testing.T) {
	peers.RequireRoot(t, "serve NTP on 127.0.0.1:123 next to chronyd (ntpdig has no port option)")
	peers.Require(t, "chronyd")
	peers.Require(t, "ntpdig")

	// The host's upstream time source, on a high loopback port.
	upstream := peers.StartChronydServer(t, peers.ChronydServerConfig{})

	waitUDPPortFree(t, "udp", "127.0.0.1:123")
	d := startDaemon(t, daemonOpts{NTPAddr: "127.0.0.1:123"})

	// The host's own time daemon, configured as docs/deployment.md says:
	// StartChronydClient writes `port 0`.
	host := peers.StartChronydClient(t, peers.ChronydClientConfig{Port: int(upstream.Addr.Port())})
	conf, err := os.ReadFile(host.Conf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains("\n"+string(conf), "\nport 0\n") {
		t.Fatalf("the host chronyd is not a client only; its configuration:\n%s", conf)
	}
	if err := host.WaitSelected("127.0.0.1", 60*time.Second); err != nil {
		t.Fatalf("the host's chronyd did not select its upstream %s next to ntpexp: %v", upstream.Addr, err)
	}
	ms, err := host.Measurements()
	if err != nil || len(ms) == 0 {
		t.Fatalf("the host's chronyd measured nothing: %v", err)
	}
	t.Logf("host chronyd: %d measurements of its upstream, last offset %.6f s", len(ms), ms[len(ms)-1].Offset)

	for _, p := range udpPortsOf(t, host.Proc.Pid()) {
		if p == 123 {
			t.Errorf("the client-only chronyd holds UDP port 123")
		}
	}
	ports := udpPortsOf(t, d.Proc.Pid())
	has123 := false
	for _, p := range ports {
		has123 = has123 || p == 123
	}
	if !has123 {
		t.Errorf("ntpexp's UDP sockets are on ports %v, none on 123", ports)
	}

	res, err := peers.NTPdig(t, "127.0.0.1", peers.NTPdigOptions{})
	if err != nil {
		t.Fatalf("ntpdig 127.0.0.1 next to chronyd: %v", err)
	}
	if res.IP != "127.0.0.1" || res.Stratum != 2 {
		t.Errorf("ntpdig: answer from %s stratum %d, want ntpexp's (127.0.0.1, stratum 2)", res.IP, res.Stratum)
	}
	requests := 0.0
	for k, v := range d.metrics() {
		if strings.HasPrefix(k, "ntpexp_requests_total") {
			requests += v
		}
	}
	if requests < 1 {
		t.Errorf("ntpexp counted no request, so the answer ntpdig got was not ntpexp's")
	}
	for _, p := range []*peers.Proc{host.Proc, d.Proc, upstream.Proc} {
		if exited, err := p.Exited(); exited {
			t.Errorf("%s exited while running alongside: %v\n%s", p.Name, err, p.Output())
		}
	}
	d.stop()
}

// kernelClock reads what the kernel says about the host clock, as ntpexp
// does with ntp.clock_sync=kernel: synchronised, and a pending leap second.
func kernelClock(t *testing.T) (synced bool, leap uint8) {
	t.Helper()
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		t.Fatalf("adjtimex: %v", err)
	}
	synced = state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0
	switch {
	case !synced:
		leap = 3
	case state == unix.TIME_INS || tx.Status&unix.STA_INS != 0:
		leap = 1
	case state == unix.TIME_DEL || tx.Status&unix.STA_DEL != 0:
		leap = 2
	}
	return synced, leap
}

// rawNTPRequest sends one mode 3 request with net.Dial and returns the
// reply's first two bytes: leap/version/mode and stratum.
func rawNTPRequest(t *testing.T, addr string) (leap, version, mode, stratum uint8) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := make([]byte, 48)
	req[0] = 0<<6 | 4<<3 | 3 // LI 0, VN 4, mode 3 (client)
	if _, err := rand.Read(req[40:48]); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no reply from %s: %v", addr, err)
		}
		// Ours if Origin echoes our Transmit.
		if n >= 48 && binary.BigEndian.Uint64(buf[24:32]) == binary.BigEndian.Uint64(req[40:48]) {
			return buf[0] >> 6, (buf[0] >> 3) & 7, buf[0] & 7, buf[1]
		}
	}
}

// TestAlongsideUnsynchronisedHostReported starts ntpexp with the production
// default --ntp.clock-sync kernel and checks that it tells clients and
// Prometheus what the kernel says about this machine's clock: leap
// indicator 3 (alarm), stratum 0 and ntpexp_server_clock_synchronized 0 when
// the kernel reports it unsynchronised (TIME_ERROR or STA_UNSYNC); leap 0
// (or a pending leap second), stratum 2 and 1 when synchronised. Which of the
// two this machine shows is read with adjtimex first.
func TestAlongsideUnsynchronisedHostReported(t *testing.T) {
	d := startDaemon(t, daemonOpts{Args: []string{"--ntp.clock-sync", "kernel"}})
	var synced bool
	var wantLeap, leap, version, mode, stratum uint8
	for attempt := 0; ; attempt++ {
		synced, wantLeap = kernelClock(t)
		time.Sleep(1100 * time.Millisecond) // ntpexp rereads the kernel state every second
		leap, version, mode, stratum = rawNTPRequest(t, d.NTPAddr)
		if after, afterLeap := kernelClock(t); after == synced && afterLeap == wantLeap {
			break
		} else if attempt == 2 {
			t.Fatalf("the kernel's clock state keeps changing (synchronised %v, then %v)", synced, after)
		}
	}
	m := d.metrics()
	t.Logf("kernel: synchronised=%v; reply: leap=%d version=%d mode=%d stratum=%d; ntpexp_server_clock_synchronized=%v",
		synced, leap, version, mode, stratum, m["ntpexp_server_clock_synchronized"])
	if mode != 4 || version != 4 {
		t.Fatalf("reply mode %d version %d, want a mode 4 version 4 server reply", mode, version)
	}
	if leap != wantLeap {
		t.Errorf("reply leap indicator %d, want %d (kernel synchronised: %v)", leap, wantLeap, synced)
	}
	wantSync, wantStratum := 1.0, uint8(2)
	if !synced {
		wantSync, wantStratum = 0, 0
		if !strings.Contains(d.Proc.Output(), "host clock is not synchronised according to the kernel") {
			t.Errorf("no start-up warning about the unsynchronised host clock:\n%s", d.Proc.Output())
		}
	}
	if stratum != wantStratum {
		t.Errorf("reply stratum %d, want %d (kernel synchronised: %v)", stratum, wantStratum, synced)
	}
	if got, ok := m["ntpexp_server_clock_synchronized"]; !ok || got != wantSync {
		t.Errorf("ntpexp_server_clock_synchronized = %v (present: %v), want %v", got, ok, wantSync)
	}
	if got := m["ntpexp_server_leap_indicator"]; got != float64(wantLeap) {
		t.Errorf("ntpexp_server_leap_indicator = %v, want %d", got, wantLeap)
	}
	d.stop()
}
