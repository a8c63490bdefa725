package main

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Every test's goroutines, the load generator's and the responders', end
// with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// responder is a minimal NTP server for the load generator's own tests:
// mode 4, stratum 2, Origin = the request's Transmit, Receive and Transmit
// from the clock with procDelay between them. It counts the requests by
// source address and notes each one's Origin and Receive fields.
type responder struct {
	conn      *net.UDPConn
	procDelay time.Duration
	mu        sync.Mutex
	sources   map[netip.Addr]int
	requests  [][]byte
	done      chan struct{}
}

func newResponder(t *testing.T, procDelay time.Duration) *responder {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &responder{conn: c, procDelay: procDelay, sources: map[netip.Addr]int{}, done: make(chan struct{})}
	go r.serve()
	t.Cleanup(func() {
		c.Close()
		<-r.done
	})
	return r
}

func (r *responder) serve() {
	defer close(r.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		rx := ntpNow(time.Now())
		if n < headerLen {
			continue
		}
		req := append([]byte(nil), buf[:n]...)
		r.mu.Lock()
		r.sources[from.Addr()]++
		r.requests = append(r.requests, req)
		r.mu.Unlock()
		reply := make([]byte, headerLen)
		reply[0] = req[0]&0x38 | 4
		reply[1] = 2
		copy(reply[24:32], req[40:48])
		binary.BigEndian.PutUint64(reply[32:], rx)
		binary.BigEndian.PutUint64(reply[40:], rx+uint64(r.procDelay.Seconds()*(1<<32)))
		r.conn.WriteToUDPAddrPort(reply, from)
	}
}

func testOptions(server string) options {
	return options{server: server, workers: 2, depth: 4, sources: 16, firstSource: netip.MustParseAddr("127.1.0.1"),
		duration: time.Second, timeout: time.Second, personality: "mix", version: 4, payload: headerLen, arrivals: "poisson", seed: 1}
}

// The open loop offers the configured rate whatever the server does, from
// every source address, and reads T3 - T2 from the replies.
func TestOpenLoopRate(t *testing.T) {
	for _, arrivals := range []string{"poisson", "uniform"} {
		t.Run(arrivals, func(t *testing.T) {
			srv := newResponder(t, 250*time.Microsecond)
			o := testOptions(srv.conn.LocalAddr().String())
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
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if len(srv.sources) != o.sources {
				t.Errorf("requests came from %d source addresses, want %d", len(srv.sources), o.sources)
			}
		})
	}
}

// The closed loop keeps requests in flight and gets every one answered;
// the mix speaks like the three kinds of client.
func TestClosedLoopAndPersonalities(t *testing.T) {
	srv := newResponder(t, 0)
	o := testOptions(srv.conn.LocalAddr().String())
	o.duration = 500 * time.Millisecond
	res, err := run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "closed" || res.Replies == 0 || res.Replies != res.Sent || res.Mismatched+res.Invalid != 0 {
		t.Fatalf("closed loop: %+v", res)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	// The mix cycles chrony-, ntpd- and SNTP-like clients. chrony-like
	// requests reveal nothing (Origin and Receive zero, random Transmit);
	// ntpd-like ones echo the previous reply's Transmit in Origin and
	// carry its arrival in Receive once they had one; SNTP-like ones
	// have LI 3 and zero Origin.
	var chrony, ntpdEcho, sntp int
	for _, q := range srv.requests {
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
		t.Errorf("of %d requests: %d chrony-like, %d ntpd-like echoing a reply, %d SNTP-like; want all three", len(srv.requests), chrony, ntpdEcho, sntp)
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
