package peers

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NTPsecConfig configures an NTPsec ntpd client of one server.
//
// ntpd always binds UDP 123 (the wildcard address and each interface), so it cannot share a
// network namespace with a server on 127.0.0.1:123: run it in one namespace of a NetnsPair
// and the server in the other (Server = pair.A.Addr, Netns = pair.B).
type NTPsecConfig struct {
	// Server is the server's address (port 123 is implied); 127.0.0.1 when empty.
	Server string
	// Version is 3 (the default, when 0): requests carry Origin = T3 and Receive = T4 of the
	// previous reply, RFC 5905 style; or 4: NTPsec's default, no "version" option on the
	// server line (T1 random, Origin/Receive zero).
	Version int
	// MinPoll and MaxPoll (log2 s); 3 when 0. iburst sends the first 8 requests 2 s apart.
	MinPoll, MaxPoll int
	// ServerOptions replaces "iburst minpoll M maxpoll M [version 3]" entirely.
	ServerOptions string
	// Extra config lines.
	Extra []string
	// Netns runs ntpd inside this namespace.
	Netns *Netns
}

// NTPsecd is a running NTPsec ntpd (the unpacked package; see scripts/install-peers.sh).
type NTPsecd struct {
	Dir      string
	Conf     string
	StatsDir string
	Proc     *Proc
	Netns    *Netns
	Server   string
}

// StartNTPsecd starts `ntpd -n -c conf -p pidfile` with `disable ntp` and `disable kernel`
// (it never touches the clock), and peerstats/rawstats in StatsDir.
func StartNTPsecd(t testing.TB, cfg NTPsecConfig) *NTPsecd {
	t.Helper()
	bin := Require(t, NTPsecNtpd)
	RequireRoot(t, "run NTPsec ntpd (it binds UDP 123)")
	if cfg.Server == "" {
		cfg.Server = "127.0.0.1"
	}
	if cfg.Version == 0 {
		cfg.Version = 3
	}
	if cfg.MinPoll == 0 {
		cfg.MinPoll = 3
	}
	if cfg.MaxPoll == 0 {
		cfg.MaxPoll = cfg.MinPoll
	}
	opts := cfg.ServerOptions
	if opts == "" {
		opts = fmt.Sprintf("iburst minpoll %d maxpoll %d", cfg.MinPoll, cfg.MaxPoll)
		if cfg.Version != 4 {
			opts += fmt.Sprintf(" version %d", cfg.Version)
		}
	}
	dir := shortTempDir(t, "ntpsecd-")
	n := &NTPsecd{
		Dir:      dir,
		Conf:     filepath.Join(dir, "ntp.conf"),
		StatsDir: filepath.Join(dir, "stats") + "/",
		Netns:    cfg.Netns,
		Server:   cfg.Server,
	}
	if err := os.Mkdir(n.StatsDir, 0o755); err != nil {
		t.Fatalf("ntpsecd: %v", err)
	}
	lines := []string{
		"disable ntp",
		"disable kernel",
		"driftfile " + filepath.Join(dir, "ntp.drift"),
		"statsdir " + n.StatsDir,
		"statistics peerstats rawstats",
		"filegen peerstats file peerstats type none enable",
		"filegen rawstats file rawstats type none enable",
		fmt.Sprintf("server %s %s", cfg.Server, opts),
	}
	lines = append(lines, cfg.Extra...)
	if err := os.WriteFile(n.Conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatalf("ntpsecd config: %v", err)
	}
	cmd := execIn(cfg.Netns, bin, "-n", "-c", n.Conf, "-p", filepath.Join(dir, "ntpd.pid"))
	n.Proc = StartProc(t, "ntpsec-ntpd", dir, cmd)
	return n
}

// Stop stops ntpd (also done on cleanup).
func (n *NTPsecd) Stop() error { return n.Proc.Stop() }

// PeerStat is one line of NTPsec's peerstats: one valid update from a peer.
//
//	61377 59152.791 10.99.7.1 b014 0.000104990 0.000570204 7.937500064 0.000000000
type PeerStat struct {
	MJD        int
	Seconds    float64 // past UTC midnight
	Address    string
	Status     uint16  // peer status word
	Offset     float64 // theta, server minus client, s
	Delay      float64 // s
	Dispersion float64 // s
	Jitter     float64 // s
}

// Time is the record's time.
func (p PeerStat) Time() time.Time { return mjdTime(p.MJD, p.Seconds) }

func mjdTime(mjd int, secs float64) time.Time {
	const unixMJD = 40587
	return time.Unix(int64(mjd-unixMJD)*86400, 0).Add(time.Duration(secs * float64(time.Second))).UTC()
}

// RawStat is one line of NTPsec's rawstats: one packet received from a peer, with its
// timestamps (NTP seconds as "s.fraction" strings converted to 64-bit NTP format).
//
//	61377 59152.791 10.99.7.1 10.99.7.2 4005303952.790548139 4005303952.790938230 4005303952.791278632 4005303952.791458744 0 3 4 10 3 -26 0.000000 0.000000 127.127.1.1 0 0 0
type RawStat struct {
	MJD                                    int
	Seconds                                float64
	Src, Dst                               string
	Origin, Receive, Transmit, Destination uint64 // T1, T2, T3, T4 of this exchange
	Leap, Version, Mode, Stratum           int
	Poll, Precision                        int
	RootDelay, RootDisp                    float64
	RefID                                  string
}

// ParsePeerStats parses peerstats content.
func ParsePeerStats(s string) ([]PeerStat, error) {
	var out []PeerStat
	sc := bufio.NewScanner(strings.NewReader(s))
	for ln := 1; sc.Scan(); ln++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return out, fmt.Errorf("peerstats line %d: %d fields", ln, len(f))
		}
		var p PeerStat
		var err error
		if p.MJD, err = strconv.Atoi(f[0]); err != nil {
			return out, fmt.Errorf("peerstats line %d: %w", ln, err)
		}
		st, err := strconv.ParseUint(f[3], 16, 16)
		if err != nil {
			return out, fmt.Errorf("peerstats line %d: status: %w", ln, err)
		}
		p.Address, p.Status = f[2], uint16(st)
		for i, dst := range []*float64{&p.Seconds, &p.Offset, &p.Delay, &p.Dispersion, &p.Jitter} {
			src := []string{f[1], f[4], f[5], f[6], f[7]}[i]
			if *dst, err = strconv.ParseFloat(src, 64); err != nil {
				return out, fmt.Errorf("peerstats line %d: %w", ln, err)
			}
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

// parseNTPDecimal converts "4005303952.790548139" to a 64-bit NTP timestamp.
func parseNTPDecimal(s string) (uint64, error) {
	sec, frac, _ := strings.Cut(s, ".")
	secs, err := strconv.ParseUint(sec, 10, 32)
	if err != nil {
		return 0, err
	}
	var f uint64
	if frac != "" {
		for len(frac) < 9 {
			frac += "0"
		}
		ns, err := strconv.ParseUint(frac[:9], 10, 32)
		if err != nil {
			return 0, err
		}
		f = (ns<<32 + 500000000) / 1e9
	}
	return secs<<32 + f, nil
}

// ParseRawStats parses rawstats content.
func ParseRawStats(s string) ([]RawStat, error) {
	var out []RawStat
	sc := bufio.NewScanner(strings.NewReader(s))
	for ln := 1; sc.Scan(); ln++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 17 {
			return out, fmt.Errorf("rawstats line %d: %d fields", ln, len(f))
		}
		var r RawStat
		var err error
		fail := func(err error) ([]RawStat, error) { return out, fmt.Errorf("rawstats line %d: %w", ln, err) }
		if r.MJD, err = strconv.Atoi(f[0]); err != nil {
			return fail(err)
		}
		if r.Seconds, err = strconv.ParseFloat(f[1], 64); err != nil {
			return fail(err)
		}
		r.Src, r.Dst = f[2], f[3]
		for i, dst := range []*uint64{&r.Origin, &r.Receive, &r.Transmit, &r.Destination} {
			if *dst, err = parseNTPDecimal(f[4+i]); err != nil {
				return fail(err)
			}
		}
		for i, dst := range []*int{&r.Leap, &r.Version, &r.Mode, &r.Stratum, &r.Poll, &r.Precision} {
			if *dst, err = strconv.Atoi(f[8+i]); err != nil {
				return fail(err)
			}
		}
		if r.RootDelay, err = strconv.ParseFloat(f[14], 64); err != nil {
			return fail(err)
		}
		if r.RootDisp, err = strconv.ParseFloat(f[15], 64); err != nil {
			return fail(err)
		}
		r.RefID = f[16]
		out = append(out, r)
	}
	return out, sc.Err()
}

func completeLines(path string) (string, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, '\n')
	return s[:i+1], nil
}

// PeerStats parses the peerstats file so far.
func (n *NTPsecd) PeerStats() ([]PeerStat, error) {
	s, err := completeLines(filepath.Join(n.StatsDir, "peerstats"))
	if err != nil {
		return nil, err
	}
	return ParsePeerStats(s)
}

// RawStats parses the rawstats file so far.
func (n *NTPsecd) RawStats() ([]RawStat, error) {
	s, err := completeLines(filepath.Join(n.StatsDir, "rawstats"))
	if err != nil {
		return nil, err
	}
	return ParseRawStats(s)
}

// WaitPeerStats waits until peerstats has at least count lines. With iburst the first lines
// come about 2 s apart, the first about 1 s after start.
func (n *NTPsecd) WaitPeerStats(count int, timeout time.Duration) ([]PeerStat, error) {
	var ps []PeerStat
	err := poll(n.Proc, timeout, 100*time.Millisecond, func() (bool, error) {
		var err error
		ps, err = n.PeerStats()
		return len(ps) >= count, err
	})
	return ps, err
}
