package peers

import (
	"math"
	"strings"
	"testing"
	"time"
)

// These tests validate the harness against chronyd as the server (no ntpexp involved): if they
// fail, a failure of an ntpexp end-to-end test says nothing about ntpexp.

func TestChronydClientOfChronydServer(t *testing.T) {
	t.Parallel()
	srv := StartChronydServer(t, ChronydServerConfig{})
	cli := StartChronydClient(t, ChronydClientConfig{Port: int(srv.Addr.Port())})
	if err := cli.WaitSelected("127.0.0.1", 15*time.Second); err != nil {
		t.Fatalf("chronyd never selected the chronyd server: %v", err)
	}
	ms, err := cli.WaitMeasurements(8, 10*time.Second)
	if err != nil {
		t.Fatalf("measurements: %v (%d so far)", err, len(ms))
	}
	var maxOff, maxDelay float64
	for _, m := range ms {
		// Tests 1-7 pass for every logged measurement; chrony's own delay tests (ABCD) may
		// reject a sample on a loaded machine, which is chrony's business.
		if m.IP != "127.0.0.1" || m.Stratum != 10 || m.Leap != "N" || m.Mode != "4B" || m.Tests123+m.Tests567 != "111111" {
			t.Errorf("unexpected measurement %+v", m)
		}
		if m.RefID != 0x7F7F0101 { // chronyd's "local" refid 127.127.1.1
			t.Errorf("refid %08X, want 7F7F0101", m.RefID)
		}
		// Same clock on both sides: the true offset is 0, so |theta| <= delta/2, up to chrony's
		// timestamp handling (its server stamps T3 before the send; seen: 6.3 us at 8 us delay).
		if math.Abs(m.Offset) > m.PeerDelay/2+50e-6 {
			t.Errorf("offset %.3g s with delay %.3g s: beyond delay/2 on one clock", m.Offset, m.PeerDelay)
		}
		maxOff = math.Max(maxOff, math.Abs(m.Offset))
		maxDelay = math.Max(maxDelay, m.PeerDelay)
	}
	if maxDelay > 0.1 || maxDelay <= 0 {
		t.Errorf("max |offset| %.3g s, max delay %.3g s: implausible on loopback", maxOff, maxDelay)
	}
	t.Logf("%d measurements, max |offset| %.3g s, max delay %.3g s", len(ms), maxOff, maxDelay)

	nd, err := cli.NTPData("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if nd["Mode"] != "Server" || nd["Stratum"] != "10" || nd["Interleaved"] != "No" {
		t.Errorf("ntpdata: mode %q stratum %q interleaved %q", nd["Mode"], nd["Stratum"], nd["Interleaved"])
	}
	tr, err := cli.Tracking()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tr["Reference ID"], "7F000001") || tr["Stratum"] != "11" {
		t.Errorf("tracking: reference %q stratum %q", tr["Reference ID"], tr["Stratum"])
	}
}

func TestChronydInterleavedWithChronydServer(t *testing.T) {
	t.Parallel()
	srv := StartChronydServer(t, ChronydServerConfig{})
	cli := StartChronydClient(t, ChronydClientConfig{Port: int(srv.Addr.Port()), XLeave: true})
	var ms []Measurement
	err := poll(cli.Proc, 15*time.Second, 100*time.Millisecond, func() (bool, error) {
		var err error
		ms, err = cli.Measurements()
		n := 0
		for _, m := range ms {
			if m.Interleaved() {
				n++
			}
		}
		return n >= 3, err
	})
	if err != nil {
		t.Fatalf("no interleaved measurements: %v (%d measurements)", err, len(ms))
	}
	nd, err := cli.NTPData("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if nd["Interleaved"] != "Yes" {
		t.Errorf("ntpdata Interleaved = %q, want Yes", nd["Interleaved"])
	}
}

func TestChronydServerRateLimitConfig(t *testing.T) {
	t.Parallel()
	count := func(srv *Chronyd) int {
		answered := 0
		for i := 0; i < 20; i++ {
			if _, err := Probe(nil, srv.Addr.String(), 100*time.Millisecond); err == nil {
				answered++
			}
		}
		return answered
	}
	// No ratelimit line: no rate limiting.
	if n := count(StartChronydServer(t, ChronydServerConfig{})); n != 20 {
		t.Errorf("no ratelimit: %d of 20 rapid requests answered", n)
	}
	// A burst of 2 (less what the readiness probe used), then about 1 in 16 (leak 4) of the rest.
	n := count(StartChronydServer(t, ChronydServerConfig{RateLimit: &RateLimit{Interval: 3, Burst: 2, Leak: 4}}))
	if n < 1 || n > 10 {
		t.Errorf("ratelimit interval 3 burst 2 leak 4: %d of 20 answered", n)
	}
	t.Logf("ratelimit interval 3 burst 2 leak 4: %d of 20 rapid requests answered", n)
}

func TestNTPdigAgainstChronydOn127Port123(t *testing.T) {
	t.Parallel()
	Require(t, "ntpdig")
	Require(t, "faketime")
	// 127.0.0.1:123 inside a namespace: the host's port 123 (and other tests' use of it) is untouched.
	pair := NewNetnsPair(t)
	srv := StartChronydServer(t, ChronydServerConfig{Netns: pair.A, Addr: "127.0.0.1", Port: 123})
	_ = srv

	res, err := NTPdig(t, "127.0.0.1", NTPdigOptions{Netns: pair.A})
	if err != nil {
		t.Fatal(err)
	}
	// One clock on both sides: |offset| <= delay/2 <= sync distance (printed to 1 us).
	if res.Stratum != 10 || res.Leap != "no-leap" || res.Adjusted || math.Abs(res.Offset) > res.SyncDistance+2e-6 {
		t.Errorf("ntpdig: %+v", res)
	}
	t.Logf("ntpdig: offset %+.6f s, sync distance %.6f s", res.Offset, res.SyncDistance)

	res, err = NTPdig(t, "127.0.0.1", NTPdigOptions{Netns: pair.A, FakeTime: "+1.5s"})
	if err != nil {
		t.Fatal(err)
	}
	// The client reads 1.5 s ahead: server minus client is -1.5 s.
	if math.Abs(res.Offset+1.5) > res.SyncDistance+2e-6 {
		t.Errorf("ntpdig under faketime +1.5s: offset %+.6f, want about -1.5", res.Offset)
	}
	t.Logf("ntpdig under faketime +1.5s: offset %+.6f s", res.Offset)

	// Across the veth pair too: B asks A's address (chronyd here binds 127.0.0.1 only).
	srv2 := StartChronydServer(t, ChronydServerConfig{Netns: pair.A, Port: 123})
	res, err = NTPdig(t, srv2.Addr.Addr().String(), NTPdigOptions{Netns: pair.B})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stratum != 10 || math.Abs(res.Offset) > res.SyncDistance+2e-6 {
		t.Errorf("ntpdig over veth: %+v", res)
	}
}

func testNTPsecd(t *testing.T, version int) {
	Require(t, NTPsecNtpd)
	pair := NewNetnsPair(t)
	srv := StartChronydServer(t, ChronydServerConfig{Netns: pair.A, Port: 123})
	nd := StartNTPsecd(t, NTPsecConfig{Server: srv.Addr.Addr().String(), Version: version, Netns: pair.B})
	ps, err := nd.WaitPeerStats(3, 20*time.Second)
	if err != nil {
		t.Fatalf("peerstats: %v (%d lines)", err, len(ps))
	}
	for _, p := range ps {
		if p.Address != srv.Addr.Addr().String() || math.Abs(p.Offset) > p.Delay/2+1e-6 || p.Delay <= 0 || p.Delay > 0.1 {
			t.Errorf("implausible peerstats %+v", p)
		}
		if d := time.Since(p.Time()); d < -time.Minute || d > time.Minute {
			t.Errorf("peerstats time %v is %v from now", p.Time(), d)
		}
	}
	raw, err := nd.RawStats()
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) == 0 {
		t.Fatal("no rawstats")
	}
	for _, r := range raw {
		// chronyd answers with the request's version.
		if r.Version != version || r.Mode != 4 || r.Stratum != 10 || r.Src != srv.Addr.Addr().String() {
			t.Errorf("rawstats %+v", r)
		}
		if d := NTPDiff(r.Destination, r.Origin); d <= 0 || d > 100*time.Millisecond {
			t.Errorf("rawstats T4-T1 = %v", d)
		}
	}
	last := ps[len(ps)-1]
	t.Logf("NTPsec v%d: %d peerstats, last offset %.3g s delay %.3g s status %04x; %d rawstats",
		version, len(ps), last.Offset, last.Delay, last.Status, len(raw))
}

func TestNTPsecdV3AgainstChronyd(t *testing.T) { t.Parallel(); testNTPsecd(t, 3) }
func TestNTPsecdV4AgainstChronyd(t *testing.T) { t.Parallel(); testNTPsecd(t, 4) }

func TestParseMeasurements(t *testing.T) {
	const log = `========================================================================================================================================
   Date (UTC) Time     IP Address   L St 123 567 ABCD  LP RP Score    Offset  Peer del. Peer disp.  Root del. Root disp. Refid     MTxRx
========================================================================================================================================
2026-12-03 16:25:04 127.0.0.1       N 10 111 111 1111  -4  0 1.00 -1.045e-05  2.538e-05  6.760e-07  0.000e+00  0.000e+00 7F7F0101 4B K K
2016-11-09 05:40:50 203.0.113.15    N  2 111 111 1111  10 10 1.0 -4.966e-03  2.296e-01  1.577e-05  1.615e-01  7.446e-03 CB00717B 4I D K
`
	ms, err := ParseMeasurements(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("%d measurements", len(ms))
	}
	m := ms[1]
	want := Measurement{
		Time: time.Date(2016, 11, 9, 5, 40, 50, 0, time.UTC), IP: "203.0.113.15", Leap: "N", Stratum: 2,
		Tests123: "111", Tests567: "111", TestsABCD: "1111", LocalPoll: 10, RemotePoll: 10, Score: 1,
		Offset: -4.966e-03, PeerDelay: 2.296e-01, PeerDisp: 1.577e-05, RootDelay: 1.615e-01, RootDisp: 7.446e-03,
		RefID: 0xCB00717B, Mode: "4I", TxSource: "D", RxSource: "K",
	}
	if m != want {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
	if !m.Interleaved() || ms[0].Interleaved() || !m.Valid() || ms[0].RemotePoll != 0 {
		t.Error("Interleaved/Valid/RemotePoll")
	}
	if _, err := ParseMeasurements("2026-12-03 16:25:04 127.0.0.1 N 10\n"); err == nil {
		t.Error("short line accepted")
	}
}

func TestParseNTPsecStats(t *testing.T) {
	ps, err := ParsePeerStats("61377 59152.791 10.99.7.1 b014 0.000104990 0.000570204 7.937500064 0.000000000\n")
	if err != nil || len(ps) != 1 {
		t.Fatal(ps, err)
	}
	p := ps[0]
	if p.Address != "10.99.7.1" || p.Status != 0xb014 || p.Offset != 0.000104990 || p.Delay != 0.000570204 ||
		p.Dispersion != 7.937500064 || p.Jitter != 0 {
		t.Errorf("%+v", p)
	}
	if got := p.Time(); !got.Equal(time.Date(2026, 12, 3, 16, 25, 52, 791e6, time.UTC)) {
		t.Errorf("time %v", got)
	}
	raw, err := ParseRawStats("61377 59152.791 10.99.7.1 10.99.7.2 4005303952.790548139 4005303952.790938230 4005303952.791278632 4005303952.791458744 0 3 4 10 3 -26 0.000000 0.000000 127.127.1.1 0 0 0\n")
	if err != nil || len(raw) != 1 {
		t.Fatal(raw, err)
	}
	r := raw[0]
	if r.Src != "10.99.7.1" || r.Dst != "10.99.7.2" || r.Version != 3 || r.Mode != 4 || r.Stratum != 10 ||
		r.Poll != 3 || r.Precision != -26 || r.RefID != "127.127.1.1" {
		t.Errorf("%+v", r)
	}
	if d := NTPDiff(r.Destination, r.Origin); d < 910*time.Microsecond || d > 911*time.Microsecond {
		t.Errorf("T4-T1 = %v, want 910.6us", d)
	}
	if r.Origin>>32 != 4005303952 {
		t.Errorf("origin seconds %d", r.Origin>>32)
	}
}

func TestNTPTime(t *testing.T) {
	now := time.Date(2026, 12, 3, 16, 25, 52, 123456789, time.UTC)
	got := FromNTPTime(NTPTime(now))
	if d := got.Sub(now); d < -time.Nanosecond || d > time.Nanosecond {
		t.Errorf("round trip %v -> %v", now, got)
	}
	a, b := NTPTime(now), NTPTime(now.Add(-1500*time.Millisecond))
	if d := NTPDiff(b, a); d < -1500*time.Millisecond-time.Nanosecond || d > -1500*time.Millisecond+time.Nanosecond {
		t.Errorf("NTPDiff = %v", d)
	}
	// Era-safe: 1 s across the 2036 wrap.
	if d := NTPDiff(0x0000000080000000, 0xFFFFFFFF80000000); d != time.Second {
		t.Errorf("across the era: %v", d)
	}
	h := Header{Leap: 3, Version: 4, Mode: 3, Stratum: 2, Poll: -4, Precision: 32, RootDelay: 1, RootDisp: 2,
		RefID: 3, Reference: 4, Origin: 5, Receive: 6, Transmit: 7}
	back, err := ParseHeader(h.Marshal())
	if err != nil || back != h {
		t.Errorf("header round trip: %v %v", back, err)
	}
	p, err := ParseHex("# comment\n e3000000 00000000\n" + strings.Repeat("00", 40) + "\n")
	if err != nil || len(p) != 48 || p[0] != 0xe3 {
		t.Errorf("ParseHex: %x %v", p, err)
	}
	if q, _ := ParseHex(FormatHex(p)); string(q) != string(p) {
		t.Error("FormatHex/ParseHex")
	}
}
