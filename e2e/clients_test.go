package e2e

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// TestChronydSelectsNtpexp: a real chronyd (clock control off) accepts
// ntpexp as a source and selects it, and ntpexp sees a chrony client
// that reveals nothing about its clock (data minimisation).
func TestChronydSelectsNtpexp(t *testing.T) {
	// chronyd polls 16 times a second here (minpoll -4): far above the
	// default rate limit, which TestRateLimit covers.
	d := startDaemon(t, daemonOpts{Args: []string{"--ntp.ratelimit.enabled=false"}})
	_, portStr, _ := net.SplitHostPort(d.NTPAddr)
	port, _ := strconv.Atoi(portStr)
	c := peers.StartChronydClient(t, peers.ChronydClientConfig{Port: port})
	if err := c.WaitSelected("127.0.0.1", 30*time.Second); err != nil {
		out, _ := c.Chronyc("-n", "sources")
		t.Fatalf("chronyd did not select ntpexp: %v\n%s", err, out)
	}
	ms, err := c.WaitMeasurements(4, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if math.Abs(m.Offset) > 1e-3 {
			t.Errorf("chronyd measured offset %v s to ntpexp on the same host clock", m.Offset)
		}
	}
	rows := d.waitRows(4, 20*time.Second, func(r exportRow) bool { return r.Implementation == "chrony" })
	for _, r := range rows {
		if r.OffsetMethod != "none" || r.Offset != nil {
			t.Fatalf("offset derived from a chrony request (random Transmit): %+v", r)
		}
		if r.DropReason != "" || r.Version != 4 || r.Mode != 3 {
			t.Fatalf("unexpected observation %+v", r)
		}
	}
	t.Logf("chronyd selected ntpexp; %d measurements, first offset %.9f s; %d chrony observations", len(ms), ms[0].Offset, len(rows))
}

// TestNTPdigOffset: ntpdig's measured offset to ntpexp is within 1 ms,
// and a client 1.5 s ahead (faketime) is seen as 1.5 s ahead.
func TestNTPdigOffset(t *testing.T) {
	peers.RequireRoot(t, "ntpdig only talks to port 123")
	d := startDaemon(t, daemonOpts{NTPAddr: "127.0.0.1:123"})
	res, err := peers.NTPdig(t, "127.0.0.1", peers.NTPdigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.Offset) > 1e-3 {
		t.Fatalf("ntpdig offset %v s, want within 1 ms", res.Offset)
	}
	skew, err := peers.NTPdig(t, "127.0.0.1", peers.NTPdigOptions{FakeTime: "+1.5s"})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(skew.Offset+1.5) > 5e-3 {
		t.Fatalf("ntpdig under faketime +1.5s reports %v, want about -1.5", skew.Offset)
	}
	rows := d.waitRows(2, 20*time.Second, func(r exportRow) bool { return r.Implementation == "ntpdig" })
	var sawSkew bool
	for _, r := range rows {
		if r.OffsetMethod != "apparent" || r.Offset == nil {
			t.Fatalf("ntpdig request without an apparent offset: %+v", r)
		}
		if math.Abs(*r.Offset-1.5) < 5e-3 {
			sawSkew = true
		} else if math.Abs(*r.Offset) > 5e-3 {
			t.Fatalf("ntpdig observation offset %v s", *r.Offset)
		}
	}
	if !sawSkew {
		t.Fatalf("no observation shows the client 1.5 s ahead: %+v", rows)
	}
	t.Logf("ntpdig offset %.6f s (within 1 ms); faketime +1.5s: ntpdig %.6f s, ntpexp saw the client %+.6f s", res.Offset, skew.Offset, -skew.Offset)
}

// TestNTPsecExchange: NTPsec ntpd with "version 3" sends T3 and T4 of the
// previous reply; ntpexp's exchange offsets and delays agree with what
// ntpd computes from the same four timestamps within 1 µs.
func TestNTPsecExchange(t *testing.T) {
	pair := peers.NewNetnsPair(t)
	d := startDaemon(t, daemonOpts{NTPAddr: pair.A.Addr.String() + ":123", Netns: pair.A})
	n := peers.StartNTPsecd(t, peers.NTPsecConfig{Server: pair.A.Addr.String(), Version: 3, Netns: pair.B})
	raws, err := waitRaw(n, 5, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rows := d.waitRows(3, 30*time.Second, func(r exportRow) bool { return r.OffsetMethod == "exchange" })
	// ntpd's view of each exchange, by the server's transmit timestamp T3.
	type view struct{ offset, delay float64 }
	byT3 := map[uint64]view{}
	for _, r := range raws {
		t1, t2, t3, t4 := r.Origin, r.Receive, r.Transmit, r.Destination
		theta := (fixed(t2-t1) + fixed(t3-t4)) / 2 // server − client
		delta := fixed(t4-t1) - fixed(t3-t2)
		byT3[t3] = view{offset: -theta, delay: delta}
	}
	matched := 0
	for _, r := range rows {
		t3, err := strconv.ParseUint(r.Origin, 16, 64)
		if err != nil {
			t.Fatalf("origin %q: %v", r.Origin, err)
		}
		v, ok := byT3[t3]
		if !ok {
			continue
		}
		matched++
		if dOff := math.Abs(*r.Offset - v.offset); dOff > 1e-6 {
			t.Errorf("exchange T3=%x: ntpexp offset %.9f, ntpd %.9f (diff %.3g s)", t3, *r.Offset, v.offset, dOff)
		}
		if dDel := math.Abs(*r.Delay - v.delay); dDel > 1e-6 {
			t.Errorf("exchange T3=%x: ntpexp delay %.9f, ntpd %.9f (diff %.3g s)", t3, *r.Delay, v.delay, dDel)
		}
		if r.Implementation != "ntpd" || r.Version != 3 {
			t.Errorf("exchange observation: implementation %q version %d", r.Implementation, r.Version)
		}
	}
	if matched < 3 {
		t.Fatalf("only %d of %d exchange observations matched ntpd's rawstats (%d lines)", matched, len(rows), len(raws))
	}
	// peerstats: each recorded offset is the clock filter's pick among
	// recent samples, so it must equal one of the exchanges we saw.
	ps, err := n.PeerStats()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		ok := false
		for _, r := range rows {
			if math.Abs(-p.Offset-*r.Offset) <= 1e-6 && math.Abs(p.Delay-*r.Delay) <= 1e-6 {
				ok = true
			}
		}
		for _, v := range byT3 {
			if math.Abs(-p.Offset-v.offset) <= 1e-6 {
				ok = true
			}
		}
		if !ok {
			t.Errorf("peerstats offset %.9f delay %.9f matches no exchange", p.Offset, p.Delay)
		}
	}
	t.Logf("%d exchange observations matched ntpd's own computation within 1 µs (%d peerstats lines checked)", matched, len(ps))
}

func fixed(d uint64) float64 { return float64(int64(d)) / (1 << 32) }

func waitRaw(n *peers.NTPsecd, count int, timeout time.Duration) ([]peers.RawStat, error) {
	deadline := time.Now().Add(timeout)
	for {
		raws, err := n.RawStats()
		if err == nil && len(raws) >= count {
			return raws, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("only %d of %d rawstats lines after %v", len(raws), count, timeout)
			}
			return nil, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}
