package peers

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// Request is one packet a Responder received, with what it answered.
type Request struct {
	Data  []byte         // the raw request bytes as received
	From  netip.AddrPort // source address and port
	At    time.Time      // arrival (T2, read after the socket read returned)
	Reply []byte         // the reply sent (nil if none)
}

// Header decodes the request's header (zero Header if shorter than 48 bytes).
func (r Request) Header() Header { h, _ := ParseHeader(r.Data); return h }

// ResponderOptions shape the replies of a Responder.
type ResponderOptions struct {
	// Silent records requests without answering.
	Silent bool
	// Stratum of the replies; 2 when 0.
	Stratum uint8
	// ClockOffset is added to the host clock for Receive/Transmit/Reference (server ahead when > 0).
	ClockOffset time.Duration
	// Processing, when set, makes Transmit exactly Receive + Processing: a known T3 − T2 for
	// tests of what reads it (a load generator).
	Processing time.Duration
}

// Responder is a minimal NTP server that records every packet it receives: enough for real
// clients to accept its replies and send follow-up requests, so their request bytes can be
// captured as test vectors. It answers mode 3 with mode 4: LI 0, the request's version and
// poll, stratum 2, precision −20, root delay and dispersion 1/256 s, refid 192.0.2.1, reference
// time 16 s ago, Origin = the request's Transmit, Receive = arrival, Transmit = now.
// Other modes are recorded and not answered. It is not the product and ignores rate limits.
type Responder struct {
	Conn *net.UDPConn
	Addr netip.AddrPort
	opts ResponderOptions

	mu   sync.Mutex
	reqs []Request
	done chan struct{}
}

// ListenResponder starts a Responder on addr (e.g. "127.0.0.1:0").
func ListenResponder(t testing.TB, addr string, opts ResponderOptions) *Responder {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatalf("responder: %v", err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatalf("responder: listen %s: %v", addr, err)
	}
	return StartResponder(t, c, opts)
}

// StartResponder serves on an open socket (e.g. from Netns.ListenUDP); it closes it on cleanup.
func StartResponder(t testing.TB, c *net.UDPConn, opts ResponderOptions) *Responder {
	t.Helper()
	if opts.Stratum == 0 {
		opts.Stratum = 2
	}
	r := &Responder{Conn: c, Addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), opts: opts, done: make(chan struct{})}
	go r.serve()
	t.Cleanup(func() {
		c.Close()
		<-r.done
	})
	return r
}

func (r *Responder) serve() {
	defer close(r.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := r.Conn.ReadFromUDPAddrPort(buf)
		at := time.Now().Add(r.opts.ClockOffset)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		req := Request{Data: append([]byte(nil), buf[:n]...), From: from, At: at}
		if h, err := ParseHeader(req.Data); err == nil && h.Mode == 3 && !r.opts.Silent {
			rep := Header{
				Leap: 0, Version: h.Version, Mode: 4,
				Stratum:   r.opts.Stratum,
				Poll:      h.Poll,
				Precision: -20,
				RootDelay: 0x100, RootDisp: 0x100,
				RefID:     0xC0000201, // 192.0.2.1 (TEST-NET-1): a value, never an address we talk to
				Reference: NTPTime(at.Add(-16 * time.Second)),
				Origin:    h.Transmit,
				Receive:   NTPTime(at),
			}
			t3 := time.Now().Add(r.opts.ClockOffset)
			if r.opts.Processing > 0 {
				t3 = at.Add(r.opts.Processing)
			}
			rep.Transmit = NTPTime(t3)
			req.Reply = rep.Marshal()
			_, _ = r.Conn.WriteToUDPAddrPort(req.Reply, from)
		}
		r.mu.Lock()
		r.reqs = append(r.reqs, req)
		r.mu.Unlock()
	}
}

// Requests returns a copy of everything received so far.
func (r *Responder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}

// WaitRequests waits until at least n packets have arrived and returns them all.
func (r *Responder) WaitRequests(n int, timeout time.Duration) ([]Request, error) {
	var got []Request
	err := poll(nil, timeout, 20*time.Millisecond, func() (bool, error) {
		got = r.Requests()
		return len(got) >= n, nil
	})
	if err != nil {
		return got, fmt.Errorf("responder %s: %d of %d requests: %w", r.Addr, len(got), n, err)
	}
	return got, nil
}
