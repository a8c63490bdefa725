package main

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// Every test's goroutines, the load generator's and the responders', end
// with it. The responder is the tests' minimal NTP server (e2e/peers).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testOptions(server string) options {
	return options{server: server, workers: 2, depth: 4, sources: 16, firstSource: netip.MustParseAddr("127.1.0.1"),
		duration: time.Second, timeout: time.Second, personality: "mix", version: 4, payload: headerLen, arrivals: "poisson", seed: 1}
}

// The open loop offers the configured rate whatever the server does, from
// every source address, and reads T3 - T2 from the replies.
func TestOpenLoopRate(t *testing.T) {
	for _, arrivals := range []string{"poisson", "uniform"} {
		t.Run(arrivals, func(t *testing.T) {
			srv := peers.ListenResponder(t, "127.0.0.1:0", peers.ResponderOptions{Processing: 250 * time.Microsecond})
			o := testOptions(srv.Addr.String())
			o.rate, o.arrivals = 2000, arrivals
			res, err := run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Mode != "open" || res.Arrivals != arrivals || res.OfferedPerSec != 2000 {
				t.Errorf("mode %q, arrivals %q, offered %g", res.Mode, res.Arrivals, res.OfferedPerSec)
			}
			// 2,000 requests in a second: Poisson arrivals vary by about
			// sqrt(2000) = 45, so 10% more is over four standard
			// deviations. A worker that stalls over 100 ms (a loaded test
			// machine) skips what it missed, hence 15% fewer.
			if res.Sent < 1700 || res.Sent > 2200 {
				t.Errorf("sent %d requests in 1 s at 2,000/s", res.Sent)
			}
			if res.Replies != res.Sent || res.Lost != 0 || res.Mismatched+res.Invalid != 0 {
				t.Errorf("%d replies, %d lost, %d mismatched, %d invalid for %d requests", res.Replies, res.Lost, res.Mismatched, res.Invalid, res.Sent)
			}
			if got := res.RepliesPerSec; got < 0.95*float64(res.Sent) || got > 1.05*float64(res.Sent) {
				t.Errorf("replies/s %.0f: the rate must be over the sending time, not the wait for late replies", res.RepliesPerSec)
			}
			// T3 - T2 is the server's 250 µs, to the resolution of the
			// 32-bit fraction.
			if p := res.Processing; p.N != int(res.Replies) || p.P50 < 249e-6 || p.Max > 251e-6 {
				t.Errorf("T3-T2 %+v, want 250 µs for every reply", p)
			}
			sources := map[netip.Addr]bool{}
			for _, r := range srv.Requests() {
				sources[r.From.Addr()] = true
			}
			if len(sources) != o.sources {
				t.Errorf("requests came from %d source addresses, want %d", len(sources), o.sources)
			}
		})
	}
}

// The closed loop keeps requests in flight and gets every one answered;
// the mix speaks like the three kinds of client.
func TestClosedLoopAndPersonalities(t *testing.T) {
	srv := peers.ListenResponder(t, "127.0.0.1:0", peers.ResponderOptions{})
	o := testOptions(srv.Addr.String())
	o.duration = 500 * time.Millisecond
	res, err := run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "closed" || res.Replies == 0 || res.Replies != res.Sent || res.Mismatched+res.Invalid != 0 {
		t.Fatalf("closed loop: %+v", res)
	}
	// The mix cycles chrony-, ntpd- and SNTP-like clients. chrony-like
	// requests reveal nothing (Origin and Receive zero, random Transmit);
	// ntpd-like ones echo the previous reply's Transmit in Origin and
	// carry its arrival in Receive once they had one; SNTP-like ones
	// have LI 3 and zero Origin.
	var chrony, ntpdEcho, sntp int
	reqs := srv.Requests()
	for _, r := range reqs {
		q := r.Data
		org, rec := binary.BigEndian.Uint64(q[24:]), binary.BigEndian.Uint64(q[32:])
		switch {
		case q[0]>>6 == 3 && org == 0 && rec == 0:
			sntp++
		case q[3] == 32 && org == 0 && rec == 0:
			chrony++
		case q[3] == 0xec && org != 0 && rec != 0:
			ntpdEcho++
		}
	}
	if chrony == 0 || ntpdEcho == 0 || sntp == 0 {
		t.Errorf("of %d requests: %d chrony-like, %d ntpd-like echoing a reply, %d SNTP-like; want all three", len(reqs), chrony, ntpdEcho, sntp)
	}
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		change func(*options)
		want   string
	}{
		{func(o *options) { o.arrivals = "bursty" }, `-arrivals "bursty": want poisson or uniform`},
		{func(o *options) { o.rate = -1 }, "-rate -1: want 0 (closed loop) or more"},
		{func(o *options) { o.personality = "w32time" }, `unknown personality "w32time"`},
		{func(o *options) { o.payload = 47 }, "-length 47: at least 48"},
		{func(o *options) { o.workers = 32 }, "need 1 <= workers (32) <= sources (16)"},
	} {
		o := testOptions("127.0.0.1:9")
		tc.change(&o)
		_, err := run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}
