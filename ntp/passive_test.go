package ntp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// tap is a daemon (a Responder with its own table, as chronyd would be)
// whose traffic a Passive watches. Every exchange yields the daemon's own
// observation (what server mode records) and, once matched, the passive
// one, so the two can be compared field by field.
type tap struct {
	t      *testing.T
	daemon *Responder
	clock  *testClock
	p      *Passive
	got    *collector
	server netip.AddrPort
	// wire is the one-way delay from the capture point to the daemon.
	wire int64
}

func newTap(t *testing.T, rl RateLimit, cfg PassiveConfig) *tap {
	d, tc := newTestResponder(rl)
	col := newCollector()
	return &tap{t: t, daemon: d, clock: tc, p: NewPassive(cfg, NewClientTable(1000), col), got: col,
		server: local, wire: 2_000}
}

// exchange sends req from client to the daemon at T2 = tc.now and lets
// the capture see the request and the reply (if any). It returns the
// daemon's observation and its reply.
func (tp *tap) exchange(req []byte, client netip.AddrPort) (Observation, []byte) {
	tp.t.Helper()
	var obs Observation
	reply := make([]byte, HeaderLength)
	n := tp.daemon.Respond(req, tp.clock.now, client, tp.server, reply, &obs)
	tp.p.Packet(req, client, tp.server, DirIncoming, tp.clock.now-tp.wire)
	if n > 0 {
		tp.p.Packet(reply[:n], tp.server, client, DirOutgoing, tp.clock.t3()+tp.wire)
		return obs, reply[:n]
	}
	return obs, nil
}

// last returns the latest passive observation.
func (tp *tap) last() Observation {
	tp.t.Helper()
	tp.got.mu.Lock()
	defer tp.got.mu.Unlock()
	if len(tp.got.obs) == 0 {
		tp.t.Fatal("no passive observation")
	}
	return tp.got.obs[len(tp.got.obs)-1]
}

func (tp *tap) count() int {
	tp.got.mu.Lock()
	defer tp.got.mu.Unlock()
	return len(tp.got.obs)
}

func near(a, b time.Duration, tol time.Duration) bool {
	d := a - b
	return d >= -tol && d <= tol
}

// sameObservation compares a passive observation with the daemon's own.
// Times may differ by the nanosecond rounding of a wire timestamp.
func sameObservation(t *testing.T, what string, p, s Observation) {
	t.Helper()
	const ns = time.Nanosecond
	if !near(p.Received.Sub(s.Received), 0, ns) {
		t.Errorf("%s: Received %v, server mode %v", what, p.Received, s.Received)
	}
	if !near(p.Offset, s.Offset, ns) || !near(p.Delay, s.Delay, ns) || !near(p.Processing, s.Processing, ns) {
		t.Errorf("%s: offset/delay/processing %v/%v/%v, server mode %v/%v/%v", what,
			p.Offset, p.Delay, p.Processing, s.Offset, s.Delay, s.Processing)
	}
	p.Received, s.Received = time.Time{}, time.Time{}
	p.Offset, s.Offset, p.Delay, s.Delay, p.Processing, s.Processing = 0, 0, 0, 0, 0, 0
	if p != s {
		t.Errorf("%s:\npassive     %+v\nserver mode %+v", what, p, s)
	}
}

func TestPassiveAgreesWithServerMode(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	start := tp.clock.now

	// ntpd-like: real Transmit, Origin/Receive echo the previous reply,
	// clock 1.5 s ahead, 3 ms each way.
	ntpd := &simClient{offset: 1500 * time.Millisecond, owd: 3 * time.Millisecond, echo: true}
	// SNTP-like: real Transmit, nothing else.
	sntp := &simClient{offset: -250 * time.Microsecond, owd: time.Millisecond}
	for i := range 6 {
		at := start + int64(i)*int64(16*time.Second)
		for _, c := range []struct {
			sim  *simClient
			from netip.AddrPort
			prec int8
		}{{ntpd, clientA, -20}, {sntp, clientB, -6}} {
			t1 := at + int64(c.sim.offset)
			h := Header{Version: 4, Mode: ModeClient, Precision: c.prec, Transmit: TimestampFromUnixNano(t1)}
			if c.sim.echo {
				h.Stratum, h.Poll, h.RefID = 3, 4, 0x0a000001
				h.Origin, h.Receive = c.sim.prevT3, c.sim.prevT4
			}
			tp.clock.now = at + int64(c.sim.owd)
			srv, reply := tp.exchange(request(h), c.from)
			var rh Header
			if err := DecodeHeader(reply, &rh); err != nil {
				t.Fatal(err)
			}
			c.sim.prevT3 = rh.Transmit
			c.sim.prevT4 = TimestampFromUnixNano(tp.clock.t3() + int64(c.sim.owd) + int64(c.sim.offset))
			got := tp.last()
			sameObservation(t, c.from.String(), got, srv)
			if c.sim.echo && i > 0 && (got.Method != MethodExchange || !near(got.Offset, c.sim.offset, time.Microsecond) ||
				!near(got.Delay, 2*c.sim.owd, time.Microsecond)) {
				t.Errorf("ntpd-like request %d: %v offset %v delay %v", i, got.Method, got.Offset, got.Delay)
			}
			if got.Processing != time.Duration(tp.clock.proc) {
				t.Errorf("processing %v, want %v", got.Processing, time.Duration(tp.clock.proc))
			}
		}
	}

	// chrony-like: data-minimised, random Transmit.
	for i := range 3 {
		tp.clock.now = start + int64(time.Minute) + int64(i)*int64(time.Second)
		h := Header{Leap: LeapAlarm, Version: 4, Mode: ModeClient, Precision: precisionDataMinimised,
			Transmit: Timestamp(rand.Uint64())}
		srv, _ := tp.exchange(request(h), netip.MustParseAddrPort("[2001:db8::7]:51000"))
		sameObservation(t, "chrony-like", tp.last(), srv)
	}

	// Requests the daemon refuses to parse are recorded at once, as in
	// server mode: too short, mode 6, bad version.
	for _, req := range [][]byte{{0x23, 0, 0}, request(Header{Version: 2, Mode: ModeControl}), request(Header{Version: 6, Mode: ModeClient})} {
		srv, reply := tp.exchange(req, clientB)
		if reply != nil {
			t.Fatal("daemon answered")
		}
		got := tp.last()
		got.Received = srv.Received // captured before the daemon's T2
		sameObservation(t, "refused", got, srv)
	}
	c := tp.p.Counters()
	if c.Unmatched != 0 || c.Pending != 0 || c.Matched != 15 {
		t.Errorf("counters %+v", c)
	}
}

func TestPassiveUnansweredAndKoD(t *testing.T) {
	// A daemon that rate-limits: burst 1, one response per 8 s, no leak
	// (Leak would answer some at random), no KoD.
	rl := RateLimit{Enabled: true, Interval: 3, Burst: 1, Leak: 30}
	tp := newTap(t, rl, PassiveConfig{ReplyTimeout: time.Second})
	tp.daemon.leakMask = ^uint32(0) // leak (answer anyway) only when rand is 0: deterministic enough
	start := tp.clock.now
	answered, unanswered := 0, 0
	for i := range 10 {
		tp.clock.now = start + int64(i)*int64(100*time.Millisecond)
		h := Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(rand.Uint64()), Precision: precisionDataMinimised}
		_, reply := tp.exchange(request(h), clientA)
		if reply != nil {
			answered++
		} else {
			unanswered++
		}
	}
	if answered != 1 || unanswered != 9 {
		t.Fatalf("daemon answered %d, dropped %d", answered, unanswered)
	}
	if tp.count() != 1 {
		t.Fatalf("%d observations before the reply timeout", tp.count())
	}
	tp.p.Expire(start + int64(1500*time.Millisecond))
	obs := tp.got.wait(t, 0)
	var n int
	for _, o := range obs {
		if o.Drop == DropUnanswered {
			n++
			if o.ReplyLength != 0 || o.Processing != 0 || o.ServerTransmit != 0 {
				t.Errorf("unanswered with reply fields: %+v", o)
			}
		}
	}
	// Requests at 0.6 … 0.9 s are not yet 1 s old at 1.5 s.
	if n != 5 {
		t.Errorf("%d unanswered after 1.5 s, want 5", n)
	}
	tp.p.Expire(start + int64(3*time.Second))
	if c := tp.p.Counters(); c.Unanswered != 9 || c.Pending != 0 || c.Lost != 0 {
		t.Errorf("counters %+v", c)
	}
	if info, _ := tp.p.clients.Get(clientA.Addr()); info.Requests != 10 || info.Drops != 9 {
		t.Errorf("client %+v", info)
	}

	// With KoD the daemon answers RATE: the same as server mode.
	tp2 := newTap(t, RateLimit{Enabled: true, Interval: 3, Burst: 1, Leak: 1, KoD: 1}, PassiveConfig{})
	tp2.daemon.leakMask = ^uint32(0)
	for i := range 3 {
		tp2.clock.now = start + int64(i)*int64(time.Millisecond)
		srv, _ := tp2.exchange(request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(rand.Uint64())}), clientB)
		got := tp2.last()
		if i > 0 {
			// A KoD carries no T2: the capture time stands in for it.
			if d := srv.Received.Sub(got.Received); d != time.Duration(tp2.wire) {
				t.Errorf("KoD observation time %v before the daemon's T2, want the capture's %v", d, time.Duration(tp2.wire))
			}
			got.Received = srv.Received
			// An apparent offset (when the random Transmit happens to
			// classify as a real clock) is then off by the same wire time.
			if near(got.Offset, srv.Offset, time.Duration(tp2.wire)) {
				got.Offset = srv.Offset
			}
		}
		sameObservation(t, "kod", got, srv)
		if i > 0 && (!got.KoD || got.Drop != DropRateLimit) {
			t.Errorf("request %d: %+v", i, got)
		}
	}
}

func TestPassiveCaptureGapIsNotGuessed(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	start := tp.clock.now
	req := request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(rand.Uint64())})
	// The reply is lost by the capture (not fed) and the kernel reports
	// drops: the first request's fate is unknown.
	tp.p.Packet(req, clientA, tp.server, DirIncoming, start)
	tp.p.CaptureGap(3)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(rand.Uint64())}), clientB, tp.server, DirIncoming, start+int64(time.Millisecond))
	tp.p.Expire(start + int64(5*time.Second))
	// The second request was captured after the gap was seen: its
	// missing reply is a real non-answer.
	obs := tp.got.wait(t, 2)
	if obs[0].Client != clientA || obs[0].Drop != DropCaptureLost || obs[1].Client != clientB || obs[1].Drop != DropUnanswered {
		t.Errorf("got %v %v, %v %v; want capture_lost for %v, unanswered for %v", obs[0].Client, obs[0].Drop, obs[1].Client, obs[1].Drop, clientA, clientB)
	}
	if c := tp.p.Counters(); c.KernelDrops != 3 || c.Lost != 1 || c.Unanswered != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestPassiveBoundsAndDirections(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{MaxPending: 4})
	start := tp.clock.now
	for i := range 10 {
		req := request(Header{Version: 4, Mode: ModeClient, Origin: Timestamp(i + 1), Receive: Timestamp(i + 100), Transmit: Timestamp(rand.Uint64())})
		tp.p.Packet(req, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 1234), tp.server, DirIncoming, start)
		if len(tp.p.index) > 2*4 || tp.p.n.Load() > 4 {
			t.Fatalf("pending %d, index %d: over the bound", tp.p.n.Load(), len(tp.p.index))
		}
	}
	c := tp.p.Counters()
	if c.Overflows != 6 || c.Lost != 6 || c.Pending != 4 {
		t.Errorf("counters %+v", c)
	}
	// Duplicate of a pending request: the older is lost, the newer waits.
	dup := request(Header{Version: 4, Mode: ModeClient, Transmit: 42})
	tp.p.Packet(dup, clientA, tp.server, DirIncoming, start)
	tp.p.Packet(dup, clientA, tp.server, DirIncoming, start)
	if c := tp.p.Counters(); c.Duplicates != 1 {
		t.Errorf("duplicates %d", c.Duplicates)
	}

	// This host's own upstream polls and their replies are not about
	// the daemon's clients.
	up := netip.MustParseAddrPort("203.0.113.5:123")
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: 7}), tp.server, up, DirOutgoing, start)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 1, Origin: 7}), up, tp.server, DirIncoming, start)
	// A reply to nothing we saw.
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 99}), tp.server, clientB, DirOutgoing, start)
	c = tp.p.Counters()
	if c.IgnoredOutgoingRequests != 1 || c.IgnoredIncomingReplies != 1 || c.Unmatched != 1 {
		t.Errorf("counters %+v", c)
	}
	tp.p.Flush()
	if c := tp.p.Counters(); c.Pending != 0 || len(tp.p.index) != 0 {
		t.Errorf("after flush: %+v, index %d", c, len(tp.p.index))
	}
}

func TestPassiveInterleavedReply(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	start := tp.clock.now
	prevT2, prevT4 := TimestampFromUnixNano(start-int64(time.Second)), TimestampFromUnixNano(start-int64(time.Second)+40_000)
	req := request(Header{Version: 4, Mode: ModeClient, Origin: prevT2, Receive: prevT4, Transmit: TimestampFromUnixNano(start)})
	tp.p.Packet(req, clientA, tp.server, DirIncoming, start)
	// An interleaved reply: Origin is the request's Receive, Transmit the
	// previous reply's precise T3.
	rep := request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: prevT4,
		Receive: TimestampFromUnixNano(start + 5_000), Transmit: TimestampFromUnixNano(start - int64(time.Second) + 20_000)})
	tp.p.Packet(rep, tp.server, clientA, DirOutgoing, start+30_000)
	got := tp.last()
	if !got.Interleaved || got.Drop != DropNone || got.Processing != 0 || got.ReplyLength != HeaderLength {
		t.Errorf("interleaved reply: %+v", got)
	}
	if c := tp.p.Counters(); c.Matched != 1 || c.Pending != 0 || len(tp.p.index) != 0 {
		t.Errorf("counters %+v, index %d", c, len(tp.p.index))
	}
}

// TestPassiveLateExpiryKeepsExchange: an unanswered request that expires
// after a newer, answered one must not break the client's exchange.
func TestPassiveLateExpiryKeepsExchange(t *testing.T) {
	tp2 := newTap(t, RateLimit{}, PassiveConfig{})
	start := tp2.clock.now
	sim := &simClient{offset: 20 * time.Millisecond, owd: time.Millisecond, echo: true}
	// A request the daemon never answers.
	tp2.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: TimestampFromUnixNano(start)}), clientA, tp2.server, DirIncoming, start)
	send := func(at int64) Observation {
		h := Header{Version: 4, Mode: ModeClient, Stratum: 3, Precision: -20, Transmit: TimestampFromUnixNano(at + int64(sim.offset)),
			Origin: sim.prevT3, Receive: sim.prevT4}
		tp2.clock.now = at + int64(sim.owd)
		_, reply := tp2.exchange(request(h), clientA)
		var rh Header
		DecodeHeader(reply, &rh)
		sim.prevT3 = rh.Transmit
		sim.prevT4 = TimestampFromUnixNano(tp2.clock.t3() + int64(sim.owd) + int64(sim.offset))
		return tp2.last()
	}
	send(start + int64(500*time.Millisecond))
	tp2.p.Expire(start + int64(1200*time.Millisecond)) // the first request expires now
	if o := tp2.last(); o.Drop != DropUnanswered {
		t.Fatalf("first request: %+v", o)
	}
	o := send(start + int64(2*time.Second))
	if o.Method != MethodExchange || !near(o.Offset, sim.offset, time.Microsecond) {
		t.Errorf("after a late expiry: method %v offset %v", o.Method, o.Offset)
	}
}

func TestPassiveAllocs(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{MaxPending: 64})
	tp.p.consumer = Consumers(nil)
	req := request(Header{Version: 4, Mode: ModeClient, Precision: -20})
	rep := make([]byte, HeaderLength)
	var obs Observation
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		tp.clock.now += int64(time.Millisecond)
		req[40] = byte(i)
		req[41] = byte(i >> 8)
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 4000)
		n := tp.daemon.Respond(req, tp.clock.now, from, tp.server, rep, &obs)
		tp.p.Packet(req, from, tp.server, DirIncoming, tp.clock.now)
		tp.p.Packet(rep[:n], tp.server, from, DirOutgoing, tp.clock.now)
	})
	if allocs > 0 {
		t.Errorf("%.1f allocations per request and reply", allocs)
	}
}

// TestPassiveMatchedRequestsFreeCapacity: a matched request leaves the
// pending table at once, so a full table of answered requests never
// pushes out a live one, and one unanswered request is not lost behind
// many answered ones.
func TestPassiveMatchedRequestsFreeCapacity(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{MaxPending: 4})
	start := tp.clock.now
	// Four pending, then the first is answered: a fifth fits.
	var reqs [][]byte
	for i := range 4 {
		req := request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(1000 + i)})
		reqs = append(reqs, req)
		tp.p.Packet(req, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 999), tp.server, DirIncoming, start)
	}
	rep := request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 1000, Receive: TimestampFromUnixNano(start), Transmit: TimestampFromUnixNano(start + 1000)})
	tp.p.Packet(rep, tp.server, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 0}), 999), DirOutgoing, start)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: 2000}), clientA, tp.server, DirIncoming, start)
	if c := tp.p.Counters(); c.Overflows != 0 || c.Lost != 0 || c.Pending != 4 {
		t.Errorf("after one answer and a fifth request: %+v", c)
	}

	// One unanswered request, then 199 answered ones through a table of
	// 100: the unanswered one is still recorded as unanswered.
	tp2 := newTap(t, RateLimit{}, PassiveConfig{MaxPending: 100})
	victim := netip.MustParseAddrPort("198.51.100.99:5000")
	tp2.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: 77}), victim, tp2.server, DirIncoming, tp2.clock.now)
	for i := range 199 {
		tp2.clock.now += int64(time.Millisecond)
		tp2.exchange(request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(rand.Uint64())}),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 123))
	}
	tp2.p.Expire(tp2.clock.now + int64(2*time.Second))
	if c := tp2.p.Counters(); c.Unanswered != 1 || c.Lost != 0 || c.Overflows != 0 || c.Matched != 199 {
		t.Errorf("counters %+v", c)
	}
}

// TestPassiveUnsynchronisedDaemon: ntpd and NTPsec answer with stratum 0
// and a kiss-code-like refid (INIT, STEP) while unsynchronised. Those are
// answers, not refusals; DENY and RSTR are refusals.
func TestPassiveUnsynchronisedDaemon(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	now := tp.clock.now
	for i, c := range []struct {
		refid uint32
		drop  DropReason
		kod   bool
	}{{'I'<<24 | 'N'<<16 | 'I'<<8 | 'T', DropNone, false}, {'S'<<24 | 'T'<<16 | 'E'<<8 | 'P', DropNone, false},
		{kissDENY, DropDenied, true}, {kissRSTR, DropDenied, true}, {kissRATE, DropRateLimit, true}} {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}), 123)
		tx := Timestamp(rand.Uint64())
		tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: tx}), from, tp.server, DirIncoming, now)
		rep := Header{Leap: LeapAlarm, Version: 4, Mode: ModeServer, RefID: c.refid, Origin: tx,
			Receive: TimestampFromUnixNano(now + 10_000), Transmit: TimestampFromUnixNano(now + 30_000)}
		tp.p.Packet(request(rep), tp.server, from, DirOutgoing, now+40_000)
		o := tp.last()
		if o.Drop != c.drop || o.KoD != c.kod {
			t.Errorf("refid %q: drop %v kod %v, want %v %v", FormatRefID(c.refid, 0), o.Drop, o.KoD, c.drop, c.kod)
		}
		if !c.kod && o.Processing != 20*time.Microsecond {
			t.Errorf("refid %q: processing %v, want 20µs", FormatRefID(c.refid, 0), o.Processing)
		}
	}
	if st := tp.p.Load(); st.Synchronized || st.Leap != LeapAlarm || st.Stratum != 0 {
		t.Errorf("daemon state %+v, want unsynchronised", st)
	}
}

// TestPassiveStateOnlyFromThisHost: on a mirror port (direction unknown),
// another server's replies must not stand in for the daemon's state.
func TestPassiveStateOnlyFromThisHost(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{Mirror: true})
	now := tp.clock.now
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: 5}), clientA, tp.server, DirOther, now)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 1, RefID: 0x47505300, Origin: 5,
		Receive: TimestampFromUnixNano(now), Transmit: TimestampFromUnixNano(now + 1)}), tp.server, clientA, DirOther, now)
	if c := tp.p.Counters(); c.Matched != 1 {
		t.Fatalf("mirror traffic not paired: %+v", c)
	}
	if st := tp.p.Load(); st.Stratum != 0 {
		t.Errorf("state taken from a reply of unknown direction: %+v", st)
	}
}

// TestPassiveSameFrameOnTwoInterfaces: a VLAN and its parent (or a bond
// and its slaves) both show each request and each reply; it is one
// exchange. Each interface has its own reader, so the two copies are
// handled in any order that keeps each interface's own order (request
// before reply): all six.
func TestPassiveSameFrameOnTwoInterfaces(t *testing.T) {
	type frame struct {
		iface int
		reply bool
	}
	orders := [][]frame{
		{{1, false}, {2, false}, {1, true}, {2, true}},
		{{1, false}, {2, false}, {2, true}, {1, true}},
		{{1, false}, {1, true}, {2, false}, {2, true}},
		{{2, false}, {1, false}, {1, true}, {2, true}},
		{{2, false}, {1, false}, {2, true}, {1, true}},
		{{2, false}, {2, true}, {1, false}, {1, true}},
	}
	for _, interleaved := range []bool{false, true} {
		for _, order := range orders {
			name := fmt.Sprintf("interleaved=%v/%v", interleaved, order)
			tp := newTap(t, RateLimit{}, PassiveConfig{})
			now := tp.clock.now
			h := Header{Version: 4, Mode: ModeClient, Transmit: 99}
			rh := Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 99,
				Receive: TimestampFromUnixNano(now + 10_000), Transmit: TimestampFromUnixNano(now + 20_000)}
			if interleaved {
				h.Origin, h.Receive = 5, 77
				rh.Origin = 77
			}
			req, rep := request(h), request(rh)
			for _, f := range order {
				// The second interface sees each frame 3 µs later.
				at := now + int64(f.iface-1)*3_000
				if f.reply {
					tp.p.PacketOn(f.iface, rep, tp.server, clientA, DirOutgoing, at+30_000)
				} else {
					tp.p.PacketOn(f.iface, req, clientA, tp.server, DirIncoming, at)
				}
			}
			tp.p.Expire(now + int64(5*time.Second))
			c := tp.p.Counters()
			if c.Requests != 1 || c.Replies != 1 || c.Matched != 1 || c.Unmatched != 0 || c.Copies != 2 ||
				c.Unanswered != 0 || c.Lost != 0 || c.Duplicates != 0 || c.Pending != 0 {
				t.Errorf("%s: counters %+v", name, c)
			}
			if n := tp.count(); n != 1 {
				t.Errorf("%s: %d observations, want 1", name, n)
			} else if o := tp.last(); o.Drop != DropNone || o.Interleaved != interleaved {
				t.Errorf("%s: %+v", name, o)
			}
		}
	}

	// The same bytes again on the same interface: a replay, recorded;
	// on another interface but later than the window: recorded too.
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	now := tp.clock.now
	req := request(Header{Version: 4, Mode: ModeClient, Transmit: 99})
	tp.p.PacketOn(1, req, clientA, tp.server, DirIncoming, now)
	tp.p.PacketOn(2, req, clientA, tp.server, DirIncoming, now+3_000)
	tp.p.PacketOn(1, req, clientA, tp.server, DirIncoming, now+5_000)
	if c := tp.p.Counters(); c.Requests != 2 || c.Copies != 1 || c.Duplicates != 1 {
		t.Errorf("counters %+v", c)
	}
	rep := request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 99, Receive: TimestampFromUnixNano(now), Transmit: TimestampFromUnixNano(now + 1)})
	tp.p.PacketOn(1, rep, tp.server, clientA, DirOutgoing, now+10_000)
	tp.p.PacketOn(1, rep, tp.server, clientA, DirOutgoing, now+11_000) // same interface: not a copy
	tp.p.PacketOn(2, rep, tp.server, clientA, DirOutgoing, now+10_000+sameFrameWindow)
	tp.p.PacketOn(2, req, clientA, tp.server, DirIncoming, now+2*sameFrameWindow)
	if c := tp.p.Counters(); c.Requests != 3 || c.Copies != 1 || c.Matched != 1 || c.Unmatched != 2 || c.Pending != 1 {
		t.Errorf("after the reply: counters %+v", c)
	}
}

// TestPassiveAlternateKeyApart: an interleaved request is also indexed
// under its Receive. A later request whose Transmit happens to equal it
// is a new request, not a duplicate of the first, and each reply finds
// its own request; finishing one leaves the other's entries alone.
func TestPassiveAlternateKeyApart(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	now := tp.clock.now
	const shared = Timestamp(0x5555)
	// A: interleaved, Receive = shared. B: basic, Transmit = shared.
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Origin: 3, Receive: shared, Transmit: 1000}), clientA, tp.server, DirIncoming, now)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: shared}), clientA, tp.server, DirIncoming, now+1_000)
	if c := tp.p.Counters(); c.Duplicates != 0 || c.Lost != 0 || c.Pending != 2 {
		t.Fatalf("a Transmit equal to a pending request's Receive made it a duplicate: %+v", c)
	}
	// B's basic reply (Origin = its Transmit) completes B, not A.
	t2 := TimestampFromUnixNano(now + 2_000)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: shared, Receive: t2, Transmit: t2 + 100}), tp.server, clientA, DirOutgoing, now+3_000)
	if o := tp.last(); o.Transmit != shared || o.Interleaved || o.Drop != DropNone {
		t.Errorf("reply to B completed %+v", o)
	}
	// A is still indexed under its Transmit: its basic reply matches.
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 1000, Receive: t2, Transmit: t2 + 200}), tp.server, clientA, DirOutgoing, now+4_000)
	if o := tp.last(); o.Transmit != 1000 || o.Drop != DropNone {
		t.Errorf("reply to A completed %+v", o)
	}
	if c := tp.p.Counters(); c.Matched != 2 || c.Unmatched != 0 || c.Pending != 0 || len(tp.p.index) != 0 {
		t.Errorf("counters %+v, index %d", c, len(tp.p.index))
	}

	// The other order: B (basic, Transmit = shared) pending, then A
	// (interleaved, Receive = shared) cannot take the key; finishing A
	// must not remove B's entry.
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: shared}), clientA, tp.server, DirIncoming, now+10_000)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Origin: 3, Receive: shared, Transmit: 2000}), clientA, tp.server, DirIncoming, now+11_000)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 2000, Receive: t2, Transmit: t2 + 300}), tp.server, clientA, DirOutgoing, now+12_000)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: shared, Receive: t2, Transmit: t2 + 400}), tp.server, clientA, DirOutgoing, now+13_000)
	if o := tp.last(); o.Transmit != shared || o.Drop != DropNone {
		t.Errorf("second reply completed %+v", o)
	}
	if c := tp.p.Counters(); c.Matched != 4 || c.Unmatched != 0 || c.Pending != 0 || c.Duplicates != 0 || len(tp.p.index) != 0 {
		t.Errorf("counters %+v, index %d", c, len(tp.p.index))
	}

	// Two interleaved requests with the same Receive: the second is not
	// a duplicate, and its reply by Transmit still matches after the
	// first's interleaved reply took the shared entry away.
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Origin: 3, Receive: shared, Transmit: 3000}), clientA, tp.server, DirIncoming, now+20_000)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Origin: 4, Receive: shared, Transmit: 3001}), clientA, tp.server, DirIncoming, now+21_000)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: shared, Receive: t2, Transmit: t2 + 500}), tp.server, clientA, DirOutgoing, now+22_000)
	if o := tp.last(); o.Transmit != 3000 || !o.Interleaved {
		t.Errorf("interleaved reply completed %+v", o)
	}
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 3001, Receive: t2, Transmit: t2 + 600}), tp.server, clientA, DirOutgoing, now+23_000)
	if c := tp.p.Counters(); c.Matched != 6 || c.Duplicates != 0 || c.Pending != 0 || len(tp.p.index) != 0 {
		t.Errorf("counters %+v, index %d", c, len(tp.p.index))
	}
}

// gate is a consumer that counts observations, slowly, and on the first
// one calls start.
type gate struct {
	mu    sync.Mutex
	n     int
	start func()
	// marked is the count when the observation with Drop == mark came.
	mark   DropReason
	marked int
}

func (g *gate) Observe(o *Observation) {
	// 10 µs each (a sleep would take far longer): a batch of
	// finishBatch takes over 1 ms, after which a waiting goroutine is
	// handed the mutex when it is released (sync.Mutex starvation mode).
	for t0 := time.Now(); time.Since(t0) < 10*time.Microsecond; {
	}
	g.mu.Lock()
	g.n++
	n, start := g.n, g.start
	g.start = nil
	if o.Drop == g.mark {
		g.marked = n
	}
	g.mu.Unlock()
	if start != nil {
		start()
	}
}

// TestPassiveExpireLetsReadersIn: expiring or flushing a burst of
// requests the daemon left unanswered releases the lock every
// finishBatch requests, so a reader's packet is handled in the middle of
// it rather than after all of it.
func TestPassiveExpireLetsReadersIn(t *testing.T) {
	const burst = 4096
	for _, flush := range []bool{false, true} {
		g := &gate{mark: DropTooShort}
		p := NewPassive(PassiveConfig{MaxPending: burst}, NewClientTable(burst), g)
		now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).UnixNano()
		for i := range burst {
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 3, byte(i >> 8), byte(i)}), 4000)
			p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(i + 1)}), from, local, DirIncoming, now)
		}
		done := make(chan struct{})
		g.start = func() {
			go func() {
				defer close(done)
				// A too-short request is recorded at once, under p.mu.
				p.Packet([]byte{0x23, 0, 0}, clientB, local, DirIncoming, now+1)
			}()
		}
		if flush {
			p.Flush()
		} else {
			p.Expire(now + int64(5*time.Second))
		}
		<-done
		g.mu.Lock()
		marked, n := g.marked, g.n
		g.mu.Unlock()
		if n != burst+1 || marked == 0 {
			t.Fatalf("flush=%v: %d observations, mark at %d", flush, n, marked)
		}
		if marked > burst {
			t.Errorf("flush=%v: a packet waited for all %d expiring requests (handled after observation %d)", flush, burst, marked-1)
		}
		t.Logf("flush=%v: the packet got in after %d of %d expiring requests", flush, marked-1, burst)
		if c := p.Counters(); c.Pending != 0 || c.Requests != burst+1 {
			t.Errorf("flush=%v: counters %+v", flush, c)
		}
	}
}

// TestPassiveUnreadableFramesAreGaps: a truncated frame or a fragment
// this host sent may be the daemon's reply, so pending requests become
// capture_lost; garbage, and frames this host received, are not gaps.
func TestPassiveUnreadableFramesAreGaps(t *testing.T) {
	frag4 := netip.MustParseAddrPort("192.0.2.1:123")
	for _, c := range []struct {
		name  string
		event func(p *Passive)
		gap   bool
	}{
		{"truncated outgoing", func(p *Passive) { p.Truncated(DirOutgoing) }, true},
		{"fragment of a reply", func(p *Passive) { p.Fragment(frag4, clientA, DirOutgoing) }, true},
		{"truncated incoming", func(p *Passive) { p.Truncated(DirIncoming) }, false},
		{"fragment received", func(p *Passive) { p.Fragment(frag4, clientA, DirIncoming) }, false},
		{"fragment of a request this host sent", func(p *Passive) { p.Fragment(clientA, frag4, DirOutgoing) }, false},
		{"invalid frame", func(p *Passive) { p.Invalid(DirOutgoing) }, false},
		{"garbage request", func(p *Passive) { p.Packet([]byte{0x17, 0, 3}, clientB, local, DirIncoming, 1) }, false},
		{"truncated other host", func(p *Passive) { p.Truncated(DirOther) }, false},
	} {
		tp := newTap(t, RateLimit{}, PassiveConfig{})
		start := tp.clock.now
		tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: 1234}), clientA, tp.server, DirIncoming, start)
		for range 100 {
			c.event(tp.p)
		}
		tp.p.Expire(start + int64(5*time.Second))
		cn := tp.p.Counters()
		want, wantLost, wantUnanswered := DropUnanswered, uint64(0), uint64(1)
		if c.gap {
			want, wantLost, wantUnanswered = DropCaptureLost, 1, 0
		}
		if o := tp.last(); o.Transmit != 1234 || o.Drop != want {
			t.Errorf("%s: pending request recorded %v, want %v", c.name, o.Drop, want)
		}
		if cn.Lost != wantLost || cn.Unanswered != wantUnanswered {
			t.Errorf("%s: counters %+v", c.name, cn)
		}
	}
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	tp.p.Truncated(DirOutgoing)
	tp.p.Fragment(frag4, clientA, DirOutgoing)
	tp.p.Fragment(frag4, clientA, DirIncoming)
	tp.p.Invalid(DirIncoming)
	if c := tp.p.Counters(); c.Truncated != 1 || c.Fragments != 2 || c.Invalid != 1 || c.KernelDrops != 0 {
		t.Errorf("counters %+v", c)
	}
}

// TestPassiveOtherHostFrames: frames neither to nor from this host (the
// interface is promiscuous, e.g. tcpdump runs) are not the daemon's
// clients unless capture.mirror says this is a mirror port.
func TestPassiveOtherHostFrames(t *testing.T) {
	for _, mirror := range []bool{false, true} {
		tp := newTap(t, RateLimit{}, PassiveConfig{Mirror: mirror})
		now := tp.clock.now
		other := netip.MustParseAddrPort("192.0.2.77:123")
		tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: 5}), clientA, other, DirOther, now)
		tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 1, Origin: 5,
			Receive: TimestampFromUnixNano(now), Transmit: TimestampFromUnixNano(now + 1)}), other, clientA, DirOther, now+1000)
		tp.p.Packet([]byte{0x17, 0, 3}, clientB, other, DirOther, now)
		tp.p.Truncated(DirOther)
		tp.p.Fragment(other, clientA, DirOther)
		tp.p.Invalid(DirOther)
		c := tp.p.Counters()
		if !mirror {
			if c.IgnoredOtherHost != 6 || c.Requests != 0 || c.Replies != 0 || c.Truncated != 0 || c.Fragments != 0 || c.Invalid != 0 || tp.count() != 0 {
				t.Errorf("mirror off: counters %+v, %d observations", c, tp.count())
			}
			if _, ok := tp.p.clients.Get(clientA.Addr()); ok {
				t.Error("mirror off: another host's client was recorded")
			}
			continue
		}
		if c.IgnoredOtherHost != 0 || c.Requests != 2 || c.Matched != 1 || c.Truncated != 1 || c.Fragments != 1 || c.Invalid != 1 || tp.count() != 2 {
			t.Errorf("mirror on: counters %+v, %d observations", c, tp.count())
		}
		if o := tp.got.wait(t, 2)[0]; o.Client != clientA || o.Local != other || o.Drop != DropNone {
			t.Errorf("mirror on: %+v", o)
		}
	}
}

// TestPassiveTimesyncdLateOffset: a timesyncd request completed late (after
// a newer one) still decodes its nanosecond Transmit fraction.
func TestPassiveTimesyncdLateOffset(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	tp.clock.now += int64(370 * time.Millisecond) // a fraction where nanoseconds and 2^-32 s differ
	start := tp.clock.now
	tsd := func(at int64) []byte {
		sec := TimestampFromUnixNano(at) &^ 0xffffffff
		// timesyncd: version 4, nanoseconds in the fraction field.
		return request(Header{Version: 4, Mode: ModeClient, Transmit: sec | Timestamp(at%1e9)})
	}
	tp.p.Packet(tsd(start), clientA, tp.server, DirIncoming, start) // never answered
	tp.clock.now = start + int64(200*time.Millisecond)
	for range 3 {
		tp.clock.now += int64(10 * time.Millisecond)
		tp.exchange(tsd(tp.clock.now), clientA)
	}
	if o := tp.last(); o.Implementation != ImplTimesyncd {
		t.Fatalf("not recognised as timesyncd: %+v", o)
	}
	tp.p.Expire(start + int64(2*time.Second))
	o := tp.last()
	if o.Drop != DropUnanswered || o.Method != MethodApparent || !near(o.Offset, 0, time.Millisecond) {
		t.Errorf("late timesyncd request: drop %v method %v offset %v, want unanswered, apparent, about 0", o.Drop, o.Method, o.Offset)
	}
}

// TestPassiveInterleavedRequestDetected: chronyd fills the bits below its
// precision with noise, so its T2 does not survive a round trip through
// nanoseconds; a request echoing it in Origin is still interleaved.
func TestPassiveInterleavedRequestDetected(t *testing.T) {
	tp := newTap(t, RateLimit{}, PassiveConfig{})
	now := tp.clock.now
	t2 := TimestampFromUnixNano(now) | 0x7 // noisy low bits
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Transmit: 11}), clientA, tp.server, DirIncoming, now)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 11, Receive: t2, Transmit: t2 + 1<<14}), tp.server, clientA, DirOutgoing, now)
	next := now + int64(time.Second)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeClient, Origin: t2, Receive: TimestampFromUnixNano(now + 50_000), Transmit: 12}), clientA, tp.server, DirIncoming, next)
	tp.p.Packet(request(Header{Version: 4, Mode: ModeServer, Stratum: 2, Origin: 12, Receive: TimestampFromUnixNano(next), Transmit: TimestampFromUnixNano(next + 20_000)}), tp.server, clientA, DirOutgoing, next)
	if o := tp.last(); !o.Interleaved {
		t.Errorf("request echoing the daemon's noisy T2 not seen as interleaved: %+v", o)
	}
}
