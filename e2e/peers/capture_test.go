package peers

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCaptureRealClients points real clients at a minimal Responder and checks what their
// requests look like (the facts in shared/notes/ntp-clients.md, on this machine's versions).
// With -update-captures it also writes the packets to testdata/captures (see its README.md):
//
//	go test ./e2e/peers -run TestCaptureRealClients -update-captures
var updateCaptures = flag.Bool("update-captures", false, "write captured client packets to testdata/captures")

const capturesDir = "../../testdata/captures"

type capture struct {
	file    string // without .hex
	client  string // classifier label
	version string
	req     Request
}

var (
	capMu sync.Mutex
	caps  []capture
)

func record(t *testing.T, file, client, version string, r Request) {
	t.Helper()
	t.Logf("%s from %v at %s: %v", file, r.From, r.At.UTC().Format(time.RFC3339Nano), r.Header())
	capMu.Lock()
	caps = append(caps, capture{file, client, version, r})
	capMu.Unlock()
}

func logAll(t *testing.T, reqs []Request) {
	t.Helper()
	for i, r := range reqs {
		t.Logf("#%d from %v at %s len %d: %v", i, r.From, r.At.UTC().Format("15:04:05.000000"), len(r.Data), r.Header())
	}
}

func TestCaptureRealClients(t *testing.T) {
	t.Parallel()
	capMu.Lock()
	caps = nil
	capMu.Unlock()
	t.Run("group", func(t *testing.T) {
		t.Run("chrony-basic", captureChronyBasic)
		t.Run("chrony-xleave", captureChronyXleave)
		t.Run("ntpsec-v4", func(t *testing.T) { captureNTPsec(t, 4) })
		t.Run("ntpsec-v3", func(t *testing.T) { captureNTPsec(t, 3) })
		t.Run("ntpdig", captureNTPdig)
	})
	if *updateCaptures && !t.Failed() {
		writeCaptures(t)
	}
}

func captureChronyBasic(t *testing.T) {
	t.Parallel()
	r := ListenResponder(t, "127.0.0.1:0", ResponderOptions{})
	StartChronydClient(t, ChronydClientConfig{Port: int(r.Addr.Port()), ServerOptions: "iburst"})
	reqs, err := r.WaitRequests(4, 15*time.Second)
	logAll(t, reqs)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[uint16]bool{}
	for _, q := range reqs {
		h := q.Header()
		checkZeroState(t, q, 0, 4, 32)
		if h.Poll != 6 {
			t.Errorf("chrony poll %d, want 6 (default minpoll)", h.Poll)
		}
		if h.Origin != 0 || h.Receive != 0 {
			t.Errorf("chrony basic: origin/receive not zero: %v", h)
		}
		checkRandomTransmit(t, q)
		ports[q.From.Port()] = true
	}
	if len(ports) < len(reqs)-1 {
		t.Errorf("chrony: %d source ports for %d requests, want a new random port per request", len(ports), len(reqs))
	}
	record(t, "chrony-4.3-basic", "chrony", "chrony 4.3", reqs[0])
}

func captureChronyXleave(t *testing.T) {
	t.Parallel()
	r := ListenResponder(t, "127.0.0.1:0", ResponderOptions{})
	StartChronydClient(t, ChronydClientConfig{Port: int(r.Addr.Port()), ServerOptions: "iburst", XLeave: true})
	reqs, err := r.WaitRequests(4, 15*time.Second)
	logAll(t, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, q := range reqs {
		checkZeroState(t, q, 0, 4, 32)
		checkRandomTransmit(t, q)
		h := q.Header()
		if i == 0 {
			if h.Origin != 0 || h.Receive != 0 {
				t.Errorf("chrony xleave first request: origin/receive not zero: %v", h)
			}
			continue
		}
		// Origin = the server's Receive (T2) of the previous exchange; Receive is random.
		prev, _ := ParseHeader(reqs[i-1].Reply)
		if h.Origin != prev.Receive {
			t.Errorf("chrony xleave request %d: origin %#x, want previous reply's receive %#x", i, h.Origin, prev.Receive)
		}
		if d := NTPDiff(h.Receive, NTPTime(q.At)); d > -24*time.Hour && d < 24*time.Hour {
			t.Errorf("chrony xleave receive %#x looks like a clock reading", h.Receive)
		}
	}
	record(t, "chrony-4.3-xleave-1st", "chrony-xleave", "chrony 4.3", reqs[0])
	record(t, "chrony-4.3-xleave-2nd", "chrony-xleave", "chrony 4.3", reqs[1])
}

func captureNTPsec(t *testing.T, version int) {
	t.Parallel()
	pair := NewNetnsPair(t)
	c, err := pair.A.ListenUDP(pair.A.Addr.String() + ":123")
	if err != nil {
		t.Fatal(err)
	}
	r := StartResponder(t, c, ResponderOptions{})
	opts := "iburst"
	if version == 3 {
		opts += " version 3"
	}
	StartNTPsecd(t, NTPsecConfig{Server: pair.A.Addr.String(), ServerOptions: opts, Netns: pair.B})
	reqs, err := r.WaitRequests(3, 15*time.Second)
	logAll(t, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range reqs {
		if q.From.Port() != 123 {
			t.Errorf("ntpd source port %d, want 123", q.From.Port())
		}
	}
	if version == 4 {
		for _, q := range reqs {
			checkZeroState(t, q, 0, 4, 32)
			checkRandomTransmit(t, q)
			if h := q.Header(); h.Poll != 0 || h.Origin != 0 || h.Receive != 0 {
				t.Errorf("ntpsec v4: poll/origin/receive not zero: %v", h)
			}
		}
		record(t, "ntpsec-1.2-v4", "ntpsec-v4", "NTPsec 1.2.2", reqs[0])
		return
	}
	for i, q := range reqs {
		h := q.Header()
		// The client's own (unsynchronised, since `disable ntp`) state: LI 3, refid INIT.
		if h.Leap != 3 || h.Version != 3 || h.Stratum != 0 || h.Poll != 6 || h.Precision >= 0 || h.RefID != 0x494e4954 {
			t.Errorf("ntpsec v3 request %d: %v", i, h)
		}
		checkClockTransmit(t, q, 0, 250*time.Millisecond)
		if i == 0 {
			if h.Origin != 0 || h.Receive != 0 {
				t.Errorf("ntpsec v3 first request: origin/receive not zero: %v", h)
			}
			continue
		}
		// Origin = T3 and Receive = T4 of the previous reply (RFC 5905).
		prev, _ := ParseHeader(reqs[i-1].Reply)
		if h.Origin != prev.Transmit {
			t.Errorf("ntpsec v3 request %d: origin %#x, want previous reply's transmit %#x", i, h.Origin, prev.Transmit)
		}
		if d := NTPDiff(h.Receive, prev.Transmit); d < 0 || d > 100*time.Millisecond {
			t.Errorf("ntpsec v3 request %d: receive - previous T3 = %v, want T4 a little after T3", i, d)
		}
	}
	record(t, "ntpsec-1.2-v3-1st", "ntpsec-v3", "NTPsec 1.2.2", reqs[0])
	record(t, "ntpsec-1.2-v3-2nd", "ntpsec-v3", "NTPsec 1.2.2", reqs[1])
}

func captureNTPdig(t *testing.T) {
	t.Parallel()
	Require(t, "ntpdig")
	Require(t, "faketime")
	pair := NewNetnsPair(t)
	c, err := pair.A.ListenUDP(pair.A.Addr.String() + ":123")
	if err != nil {
		t.Fatal(err)
	}
	r := StartResponder(t, c, ResponderOptions{})
	for i := 0; i < 3; i++ {
		if res, err := NTPdig(t, pair.A.Addr.String(), NTPdigOptions{Netns: pair.B}); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("ntpdig: %+v", res)
		}
	}
	res, err := NTPdig(t, pair.A.Addr.String(), NTPdigOptions{Netns: pair.B, FakeTime: "+1.5s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ntpdig faketime: %+v", res)
	reqs := r.Requests()
	logAll(t, reqs)
	if len(reqs) != 4 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, q := range reqs {
		h := q.Header()
		t.Logf("T1-T2 = %v, xmt low 32 bits %08x", NTPDiff(h.Transmit, NTPTime(q.At)), uint32(h.Transmit))
		checkZeroState(t, q, 3, 4, 0)
		if h.Poll != 0 || h.Origin != 0 || h.Receive != 0 {
			t.Errorf("ntpdig: poll/origin/receive not zero: %v", h)
		}
		// A python float of NTP seconds (~4e9 < 2^32) keeps 21 fraction bits: the low 11 bits are 0.
		if h.Transmit&0x7ff != 0 {
			t.Errorf("ntpdig transmit %#x: low 11 bits not zero", h.Transmit)
		}
		if q.From.Port() == 123 {
			t.Errorf("ntpdig source port 123")
		}
		skew := time.Duration(0)
		if i == 3 {
			skew = 1500 * time.Millisecond
		}
		checkClockTransmit(t, q, skew, 250*time.Millisecond)
	}
	record(t, "ntpdig-1.2", "ntpdig", "ntpdig (NTPsec 1.2.2)", reqs[0])
	record(t, "ntpdig-faketime+1.5s", "ntpdig", "ntpdig (NTPsec 1.2.2) under faketime -f +1.5s", reqs[3])
}

// checkZeroState checks a request that carries no client state: given LI, VN, precision, and
// stratum, root delay, root dispersion, refid and reference timestamp all zero.
func checkZeroState(t *testing.T, q Request, li, vn uint8, precision int8) {
	t.Helper()
	h := q.Header()
	if len(q.Data) != 48 || h.Mode != 3 || h.Leap != li || h.Version != vn || h.Precision != precision ||
		h.Stratum != 0 || h.RootDelay != 0 || h.RootDisp != 0 || h.RefID != 0 || h.Reference != 0 {
		t.Errorf("len %d, want 48, LI %d VN %d mode 3 precision %d, the rest zero: %v", len(q.Data), li, vn, precision, h)
	}
}

// checkRandomTransmit checks that Transmit is not a clock reading (data minimisation).
func checkRandomTransmit(t *testing.T, q Request) {
	t.Helper()
	if d := NTPDiff(q.Header().Transmit, NTPTime(q.At)); d > -24*time.Hour && d < 24*time.Hour {
		t.Errorf("transmit %#x is within a day of the arrival time: a clock reading, not random", q.Header().Transmit)
	}
}

// checkClockTransmit checks that Transmit is a clock reading: T1 - T2 = skew +- tol.
func checkClockTransmit(t *testing.T, q Request, skew, tol time.Duration) {
	t.Helper()
	if d := NTPDiff(q.Header().Transmit, NTPTime(q.At)) - skew; d < -tol || d > tol {
		t.Errorf("transmit - arrival = %v, want %v +- %v", d+skew, skew, tol)
	}
}

func writeCaptures(t *testing.T) {
	sort.Slice(caps, func(i, j int) bool { return caps[i].file < caps[j].file })
	var idx strings.Builder
	idx.WriteString("# file\tclient\tversion\tcaptured_utc\tsource\tarrival_ntp\theader\n")
	for _, c := range caps {
		if err := os.WriteFile(filepath.Join(capturesDir, c.file+".hex"), []byte(FormatHex(c.req.Data)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(capturesDir, "replies"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(capturesDir, "replies", c.file+".hex"), []byte(FormatHex(c.req.Reply)), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&idx, "%s.hex\t%s\t%s\t%s\t%v\t%#016x\t%v\n", c.file, c.client, c.version,
			c.req.At.UTC().Format(time.RFC3339), c.req.From, NTPTime(c.req.At), c.req.Header())
	}
	if err := os.WriteFile(filepath.Join(capturesDir, "index.tsv"), []byte(idx.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d captures to %s", len(caps), capturesDir)
}

// TestCapturedFiles checks the committed captures against their index: every request parses,
// matches its index line, has a reply, and shows what its client is known for.
func TestCapturedFiles(t *testing.T) {
	idx, err := os.ReadFile(filepath.Join(capturesDir, "index.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(idx)), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 7 {
			t.Fatalf("index line %q: %d fields", line, len(f))
		}
		n++
		req, err := ReadHexFile(filepath.Join(capturesDir, f[0]))
		if err != nil {
			t.Fatalf("%s: %v", f[0], err)
		}
		h, err := ParseHeader(req)
		if err != nil || len(req) != 48 {
			t.Fatalf("%s: %d bytes: %v", f[0], len(req), err)
		}
		if h.String() != f[6] {
			t.Errorf("%s: header %v, index says %s", f[0], h, f[6])
		}
		rep, err := ReadHexFile(filepath.Join(capturesDir, "replies", f[0]))
		if err != nil {
			t.Fatalf("reply of %s: %v", f[0], err)
		}
		rh, err := ParseHeader(rep)
		if err != nil || rh.Mode != 4 || rh.Origin != h.Transmit || fmt.Sprintf("%#016x", rh.Receive) != f[5] {
			t.Errorf("reply of %s: %v (arrival %s)", f[0], rh, f[5])
		}
		switch f[1] {
		case "chrony", "ntpsec-v4":
			if h.Precision != 32 || h.Origin != 0 || h.Receive != 0 {
				t.Errorf("%s: %v", f[0], h)
			}
		case "chrony-xleave":
			if strings.HasSuffix(f[0], "-2nd.hex") && h.Origin == 0 {
				t.Errorf("%s: origin zero", f[0])
			}
		case "ntpsec-v3":
			if h.Version != 3 || h.Leap != 3 || (strings.HasSuffix(f[0], "-2nd.hex") && (h.Origin == 0 || h.Receive == 0)) {
				t.Errorf("%s: %v", f[0], h)
			}
		case "ntpdig":
			if h.Leap != 3 || h.Transmit&0x7ff != 0 {
				t.Errorf("%s: %v", f[0], h)
			}
		default:
			t.Errorf("%s: unknown client label %q", f[0], f[1])
		}
	}
	files, _ := filepath.Glob(filepath.Join(capturesDir, "*.hex"))
	if n == 0 || len(files) != n {
		t.Errorf("%d index lines, %d .hex files", n, len(files))
	}
}
