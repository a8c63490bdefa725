package peers

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Chronyd is a running chronyd (client or server), always started with -x (never touches the
// clock), -d (foreground) and -u root, with its config, pid, drift and logs in Dir and its
// command socket at Socket (so chronyc works; cmdport 0: no UDP command port).
type Chronyd struct {
	Dir    string // 0700, short path; holds chronyd.conf, chronyd.sock, logs
	Conf   string
	Socket string
	Proc   *Proc
	Netns  *Netns // nil: the host's namespace

	// For a server: where it listens. For a client: the server it polls.
	Addr netip.AddrPort

	t testing.TB
}

// ChronydClientConfig configures a chronyd client of one server.
type ChronydClientConfig struct {
	// Server is the address polled; 127.0.0.1 when empty.
	Server string
	// Port of the server; required (123 is not assumed).
	Port int
	// ServerOptions replaces the default "iburst minpoll -4 maxpoll -4" (a request every 1/16 s).
	ServerOptions string
	// XLeave adds "xleave" (interleaved mode) to the server line.
	XLeave bool
	// Extra config lines.
	Extra []string
	// RawMeasurements logs every received packet ("log rawmeasurements"), not only those that
	// passed tests 1-7 ("log measurements").
	RawMeasurements bool
	// Netns runs chronyd inside this namespace.
	Netns *Netns
}

// StartChronydClient starts `chronyd -d -x -u root -f conf` polling one server, with
// `log measurements` so Measurements returns the client's own view of every exchange.
func StartChronydClient(t testing.TB, cfg ChronydClientConfig) *Chronyd {
	t.Helper()
	bin := Require(t, "chronyd")
	RequireRoot(t, "run chronyd (it refuses to start otherwise)")
	if cfg.Port == 0 {
		t.Fatalf("chronyd client: Port is required")
	}
	if cfg.Server == "" {
		cfg.Server = "127.0.0.1"
	}
	opts := cfg.ServerOptions
	if opts == "" {
		opts = "iburst minpoll -4 maxpoll -4"
	}
	if cfg.XLeave {
		opts += " xleave"
	}
	c := newChronyd(t, cfg.Netns)
	logWhat := "measurements"
	if cfg.RawMeasurements {
		logWhat = "rawmeasurements"
	}
	lines := []string{
		fmt.Sprintf("server %s port %d %s", cfg.Server, cfg.Port, opts),
		"port 0",
		"logbanner 0",
		"log " + logWhat,
	}
	lines = append(lines, cfg.Extra...)
	c.write(t, lines)
	addr, err := netip.ParseAddr(cfg.Server)
	if err == nil {
		c.Addr = netip.AddrPortFrom(addr, uint16(cfg.Port))
	}
	c.start(t, bin, "chronyd-client")
	return c
}

// RateLimit is chrony's ratelimit directive: interval is log2 seconds (default 3), burst the
// bucket size (8), leak the log2 of the fraction of over-limit requests still answered (2).
// chrony 4.3 has no KoD option (it drops over-limit requests, answering about 1 in 2^leak).
type RateLimit struct {
	Interval, Burst, Leak int
}

// ChronydServerConfig configures chronyd as an NTP server, to compare the product against.
type ChronydServerConfig struct {
	// Addr to bind; 127.0.0.1 when empty (the namespace's address when Netns is set).
	Addr string
	// Port; a free loopback port when 0 (123 must be asked for).
	Port int
	// Allow is the allowed client subnet; when empty 127.0.0.0/8 and, with Netns, the pair's /24.
	Allow string
	// Stratum for "local stratum N"; 10 when 0.
	Stratum int
	// RateLimit adds "ratelimit interval I burst B leak L"; none (no rate limiting) when nil.
	RateLimit *RateLimit
	// Extra config lines.
	Extra []string
	// Netns runs chronyd inside this namespace.
	Netns *Netns
}

// StartChronydServer starts `chronyd -d -x -u root -f conf` serving its own clock as
// `local stratum 10` and waits until it answers.
func StartChronydServer(t testing.TB, cfg ChronydServerConfig) *Chronyd {
	t.Helper()
	bin := Require(t, "chronyd")
	RequireRoot(t, "run chronyd (it refuses to start otherwise)")
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1"
		if cfg.Netns != nil {
			cfg.Addr = cfg.Netns.Addr.String()
		}
	}
	allow := []string{cfg.Allow}
	if cfg.Allow == "" {
		allow = []string{"127.0.0.0/8"}
		if cfg.Netns != nil {
			allow = append(allow, netip.PrefixFrom(cfg.Netns.Addr, 24).Masked().String())
		}
	}
	if cfg.Port == 0 {
		if cfg.Netns != nil {
			cfg.Port = 123
		} else {
			cfg.Port = FreeUDPPort(t)
		}
	}
	if cfg.Stratum == 0 {
		cfg.Stratum = 10
	}
	addr, err := netip.ParseAddr(cfg.Addr)
	if err != nil {
		t.Fatalf("chronyd server: Addr %q: %v", cfg.Addr, err)
	}
	c := newChronyd(t, cfg.Netns)
	c.Addr = netip.AddrPortFrom(addr, uint16(cfg.Port))
	lines := []string{
		fmt.Sprintf("port %d", cfg.Port),
		"bindaddress " + cfg.Addr,
		fmt.Sprintf("local stratum %d", cfg.Stratum),
	}
	for _, a := range allow {
		lines = append(lines, "allow "+a)
	}
	if rl := cfg.RateLimit; rl != nil {
		lines = append(lines, fmt.Sprintf("ratelimit interval %d burst %d leak %d", rl.Interval, rl.Burst, rl.Leak))
	}
	lines = append(lines, cfg.Extra...)
	c.write(t, lines)
	c.start(t, bin, "chronyd-server")
	var dial func() (*net.UDPConn, error)
	if cfg.Netns != nil {
		// Probe from inside the namespace (its own address is reachable there).
		dial = func() (*net.UDPConn, error) { return cfg.Netns.DialUDP(c.Addr.String()) }
	}
	if err := waitServing(c.Proc, dial, c.Addr.String(), 10*time.Second); err != nil {
		t.Fatalf("chronyd server on %s not answering: %v", c.Addr, err)
	}
	return c
}

func newChronyd(t testing.TB, ns *Netns) *Chronyd {
	dir := shortTempDir(t, "chronyd-")
	return &Chronyd{
		Dir:    dir,
		Conf:   filepath.Join(dir, "chronyd.conf"),
		Socket: filepath.Join(dir, "chronyd.sock"),
		Netns:  ns,
		t:      t,
	}
}

func (c *Chronyd) write(t testing.TB, lines []string) {
	t.Helper()
	common := []string{
		"cmdport 0",
		"bindcmdaddress " + c.Socket,
		"pidfile " + filepath.Join(c.Dir, "chronyd.pid"),
		"driftfile " + filepath.Join(c.Dir, "chronyd.drift"),
		"logdir " + c.Dir,
	}
	body := strings.Join(append(lines, common...), "\n") + "\n"
	if err := os.WriteFile(c.Conf, []byte(body), 0o644); err != nil {
		t.Fatalf("chronyd config: %v", err)
	}
}

func (c *Chronyd) start(t testing.TB, bin, name string) {
	t.Helper()
	args := []string{"-d", "-x", "-u", "root", "-f", c.Conf}
	cmd := execIn(c.Netns, bin, args...)
	c.Proc = StartProc(t, name, c.Dir, cmd)
}

// Stop stops chronyd (also done on cleanup).
func (c *Chronyd) Stop() error { return c.Proc.Stop() }

// Chronyc runs `chronyc -h SOCKET -n ARGS...` and returns its output.
func (c *Chronyd) Chronyc(args ...string) (string, error) {
	bin := Lookup("chronyc")
	if bin == "" {
		return "", fmt.Errorf("chronyc not installed; run `%s`", InstallScript)
	}
	return run(10*time.Second, bin, append([]string{"-h", c.Socket, "-n"}, args...)...)
}

// Source is one line of `chronyc -c sources`.
type Source struct {
	Mode    string // ^ server, = peer, # refclock
	State   string // * selected, + combined, - not combined, ? unusable, x falseticker, ~ too variable
	Name    string
	Stratum int
	Poll    int
	Reach   int // octal register as an integer
	LastRx  int
	// Offsets and error in seconds, as chronyc prints them.
	AdjustedOffset, MeasuredOffset, Error float64
}

// Sources returns `chronyc -c sources`.
func (c *Chronyd) Sources() ([]Source, error) {
	out, err := c.Chronyc("-c", "sources")
	if err != nil {
		return nil, err
	}
	var srcs []Source
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 10 {
			continue
		}
		s := Source{Mode: f[0], State: f[1], Name: f[2]}
		s.Stratum, _ = strconv.Atoi(f[3])
		s.Poll, _ = strconv.Atoi(f[4])
		if r, err := strconv.ParseInt(f[5], 8, 32); err == nil {
			s.Reach = int(r)
		}
		s.LastRx, _ = strconv.Atoi(f[6])
		s.AdjustedOffset, _ = strconv.ParseFloat(f[7], 64)
		s.MeasuredOffset, _ = strconv.ParseFloat(f[8], 64)
		s.Error, _ = strconv.ParseFloat(f[9], 64)
		srcs = append(srcs, s)
	}
	return srcs, nil
}

// Selected reports whether chronyd has selected the source named name ("127.0.0.1") for
// synchronisation ('*' in chronyc sources).
func (c *Chronyd) Selected(name string) (bool, error) {
	srcs, err := c.Sources()
	if err != nil {
		return false, err
	}
	for _, s := range srcs {
		if s.Name == name && s.State == "*" {
			return true, nil
		}
	}
	return false, nil
}

// WaitSelected waits until the source is selected.
func (c *Chronyd) WaitSelected(name string, timeout time.Duration) error {
	return poll(c.Proc, timeout, 100*time.Millisecond, func() (bool, error) {
		ok, _ := c.Selected(name) // chronyc fails until the socket exists
		return ok, nil
	})
}

// NTPData returns `chronyc ntpdata [addr]` as key/value pairs ("Interleaved": "Yes", ...).
func (c *Chronyd) NTPData(addr string) (map[string]string, error) {
	args := []string{"ntpdata"}
	if addr != "" {
		args = append(args, addr)
	}
	out, err := c.Chronyc(args...)
	if err != nil {
		return nil, err
	}
	return parseKV(out), nil
}

// Tracking returns `chronyc tracking` as key/value pairs.
func (c *Chronyd) Tracking() (map[string]string, error) {
	out, err := c.Chronyc("tracking")
	if err != nil {
		return nil, err
	}
	return parseKV(out), nil
}

func parseKV(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}

// Measurement is one line of chrony's measurements.log (chrony 4.x layout):
//
//	Date (UTC) Time     IP Address   L St 123 567 ABCD  LP RP Score    Offset  Peer del. Peer disp.  Root del. Root disp. Refid     MTxRx
//	2026-12-03 16:25:04 127.0.0.1    N 10 111 111 1111  -4 -4 0.81 -5.153e-06  8.862e-05  4.114e-07  0.000e+00  0.000e+00 7F7F0101 4B K K
type Measurement struct {
	Time    time.Time // UTC, whole seconds
	IP      string
	Leap    string // N normal, + insert, - delete, ? unsynchronised
	Stratum int
	// RFC 5905 tests 1-3, 5-7, and chrony's maximum delay / ratio / dev-ratio / sync loop tests
	// (1 = pass).
	Tests123, Tests567, TestsABCD string
	LocalPoll, RemotePoll         int
	Score                         float64
	// Offset is theta: positive when the local (client) clock is behind the server.
	Offset    float64
	PeerDelay float64 // delta
	PeerDisp  float64 // epsilon
	RootDelay float64
	RootDisp  float64
	RefID     uint32
	Mode      string // "4B": mode 4, basic; "4I": interleaved
	TxSource  string // D daemon, K kernel, H hardware
	RxSource  string
}

// Interleaved reports whether the measurement came from an interleaved exchange.
func (m Measurement) Interleaved() bool { return strings.HasSuffix(m.Mode, "I") }

// Valid reports whether all of chrony's tests passed.
func (m Measurement) Valid() bool {
	return !strings.Contains(m.Tests123+m.Tests567+m.TestsABCD, "0")
}

// ParseMeasurements parses measurements.log content; banner lines are skipped.
func ParseMeasurements(s string) ([]Measurement, error) {
	var ms []Measurement
	sc := bufio.NewScanner(strings.NewReader(s))
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "=") || strings.HasPrefix(line, "   Date") || f[0] == "Date" {
			continue
		}
		if len(f) < 20 {
			return ms, fmt.Errorf("measurements.log line %d: %d fields: %q", ln, len(f), line)
		}
		var m Measurement
		var err error
		if m.Time, err = time.Parse("2006-01-02 15:04:05", f[0]+" "+f[1]); err != nil {
			return ms, fmt.Errorf("line %d: %w", ln, err)
		}
		m.IP, m.Leap = f[2], f[3]
		ints := []struct {
			dst *int
			s   string
		}{{&m.Stratum, f[4]}, {&m.LocalPoll, f[8]}, {&m.RemotePoll, f[9]}}
		for _, x := range ints {
			if *x.dst, err = strconv.Atoi(x.s); err != nil {
				return ms, fmt.Errorf("line %d: %w", ln, err)
			}
		}
		m.Tests123, m.Tests567, m.TestsABCD = f[5], f[6], f[7]
		floats := []struct {
			dst *float64
			s   string
		}{{&m.Score, f[10]}, {&m.Offset, f[11]}, {&m.PeerDelay, f[12]}, {&m.PeerDisp, f[13]}, {&m.RootDelay, f[14]}, {&m.RootDisp, f[15]}}
		for _, x := range floats {
			if *x.dst, err = strconv.ParseFloat(x.s, 64); err != nil {
				return ms, fmt.Errorf("line %d: %w", ln, err)
			}
		}
		ref, err := strconv.ParseUint(f[16], 16, 32)
		if err != nil {
			return ms, fmt.Errorf("line %d: refid: %w", ln, err)
		}
		m.RefID = uint32(ref)
		m.Mode, m.TxSource, m.RxSource = f[17], f[18], f[19]
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

// MeasurementsPath is where chronyd writes measurements (both log measurements and
// log rawmeasurements write measurements.log).
func (c *Chronyd) MeasurementsPath() string { return filepath.Join(c.Dir, "measurements.log") }

// Measurements parses measurements.log so far (empty before the first measurement).
func (c *Chronyd) Measurements() ([]Measurement, error) {
	b, err := os.ReadFile(c.MeasurementsPath())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// The last line may be partially written: parse complete lines only.
	s := string(b)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i+1]
	} else {
		s = ""
	}
	return ParseMeasurements(s)
}

// WaitMeasurements waits until measurements.log has at least n measurements.
func (c *Chronyd) WaitMeasurements(n int, timeout time.Duration) ([]Measurement, error) {
	var ms []Measurement
	err := poll(c.Proc, timeout, 100*time.Millisecond, func() (bool, error) {
		var err error
		ms, err = c.Measurements()
		return len(ms) >= n, err
	})
	return ms, err
}

// FreeUDPPort returns a UDP port that was free on 127.0.0.1 a moment ago.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
