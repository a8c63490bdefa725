package ntp

import (
	"math"
	"net/netip"
	"testing"
	"time"
)

type fixedState struct{ st ClockState }

func (f *fixedState) Load() *ClockState { return &f.st }

var syncedState = ClockState{Synchronized: true, Stratum: 2, Precision: -24, RootDispersion: 0x40,
	RefID: DefaultRefID, Reference: 0xed00000000000000}

// testClock is a server clock under test control: T2 is given per request
// and T3 follows after a fixed processing time.
type testClock struct {
	now  int64
	proc int64
}

func (c *testClock) t3() int64 { return c.now + c.proc }

func newTestResponder(rl RateLimit) (*Responder, *testClock) {
	tc := &testClock{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).UnixNano(), proc: 20_000}
	st := &fixedState{st: syncedState}
	return NewResponder(NewClientTable(1000), st, rl, tc.t3), tc
}

var (
	clientA = netip.MustParseAddrPort("192.0.2.10:40000")
	clientB = netip.MustParseAddrPort("192.0.2.11:40001")
	local   = netip.MustParseAddrPort("192.0.2.1:123")
)

func request(h Header) []byte {
	b := make([]byte, HeaderLength)
	h.Encode(b)
	return b
}

func respond(t testing.TB, r *Responder, tc *testClock, req []byte, from netip.AddrPort) (Header, Observation, int) {
	t.Helper()
	var obs Observation
	reply := make([]byte, HeaderLength)
	n := r.Respond(req, tc.now, from, local, reply, &obs)
	var h Header
	if n > 0 {
		if err := DecodeHeader(reply[:n], &h); err != nil {
			t.Fatal(err)
		}
	}
	return h, obs, n
}

func TestRespondClientMode(t *testing.T) {
	for v := uint8(1); v <= 4; v++ {
		r, tc := newTestResponder(RateLimit{})
		tx := Timestamp(0x0123456789abcdef)
		req := request(Header{Version: v, Mode: ModeClient, Poll: 6, Precision: 32, Transmit: tx})
		h, obs, n := respond(t, r, tc, req, clientA)
		if n != HeaderLength {
			t.Fatalf("v%d: reply length %d", v, n)
		}
		want := Header{Leap: 0, Version: v, Mode: ModeServer, Stratum: 2, Poll: 6, Precision: -24,
			RootDispersion: 0x40, RefID: DefaultRefID, Reference: 0xed00000000000000, Origin: tx,
			Receive: TimestampFromUnixNano(tc.now), Transmit: TimestampFromUnixNano(tc.t3())}
		if h != want {
			t.Fatalf("v%d reply\n got %+v\nwant %+v", v, h, want)
		}
		if obs.Drop != DropNone || obs.Processing != 20*time.Microsecond || obs.Version != v || obs.Mode != ModeClient ||
			obs.ServerTransmit != want.Transmit || obs.Client != clientA || obs.Local != local || obs.ReplyLength != 48 {
			t.Fatalf("v%d observation %+v", v, obs)
		}
	}
}

func TestRespondModes(t *testing.T) {
	cases := []struct {
		version, mode uint8
		port          uint16
		wantMode      uint8
		wantDrop      DropReason
	}{
		{4, ModeReserved, 40000, 0, DropBadMode},
		{1, ModeReserved, 40000, ModeServer, DropNone}, // NTPv1 client
		{1, ModeReserved, 123, 0, DropBadMode},         // NTPv1 peer: not answered
		{4, ModeActive, 123, ModePassive, DropNone},
		{4, ModePassive, 123, 0, DropBadMode},
		{4, ModeClient, 40000, ModeServer, DropNone},
		{4, ModeServer, 123, 0, DropBadMode},
		{4, ModeBroadcast, 123, 0, DropBadMode},
		{2, ModeControl, 40000, 0, DropControl},
		{2, ModePrivate, 40000, 0, DropPrivate},
		{0, ModeClient, 40000, 0, DropBadVersion},
		{5, ModeClient, 40000, 0, DropBadVersion},
		{7, ModeClient, 40000, 0, DropBadVersion},
	}
	for _, c := range cases {
		r, tc := newTestResponder(RateLimit{})
		from := netip.AddrPortFrom(clientA.Addr(), c.port)
		h, obs, n := respond(t, r, tc, request(Header{Version: c.version, Mode: c.mode, Transmit: 1}), from)
		if obs.Drop != c.wantDrop {
			t.Errorf("v%d mode %d port %d: drop %v, want %v", c.version, c.mode, c.port, obs.Drop, c.wantDrop)
		}
		if (n > 0) != (c.wantDrop == DropNone) {
			t.Errorf("v%d mode %d: reply length %d", c.version, c.mode, n)
		}
		if n > 0 && (h.Mode != c.wantMode || h.Version != c.version) {
			t.Errorf("v%d mode %d: reply mode %d version %d, want mode %d", c.version, c.mode, h.Mode, h.Version, c.wantMode)
		}
	}
}

func TestRespondShortAndMalformed(t *testing.T) {
	r, tc := newTestResponder(RateLimit{})
	for n := 0; n < HeaderLength; n++ {
		b := make([]byte, n)
		if n > 0 {
			b[0] = 0x23
		}
		_, obs, rn := respond(t, r, tc, b, clientA)
		if rn != 0 || obs.Drop != DropTooShort || obs.Length != uint16(n) {
			t.Fatalf("len %d: reply %d obs %+v", n, rn, obs)
		}
	}
	bad := append(request(Header{Version: 4, Mode: ModeClient}), make([]byte, 17)...)
	if _, obs, rn := respond(t, r, tc, bad, clientA); rn != 0 || obs.Drop != DropMalformed {
		t.Fatalf("65-byte request: reply %d, drop %v", rn, obs.Drop)
	}
	mac := append(request(Header{Version: 4, Mode: ModeClient}), make([]byte, 20)...)
	if _, obs, rn := respond(t, r, tc, mac, clientA); rn != HeaderLength || obs.Extensions.MACLength != 20 {
		t.Fatalf("68-byte request: reply %d, ext %+v", rn, obs.Extensions)
	}
}

func TestRespondUnsynchronised(t *testing.T) {
	tc := &testClock{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).UnixNano()}
	st := &fixedState{st: ClockState{Synchronized: false, Leap: LeapAlarm, Stratum: 0, RootDispersion: 0xffff}}
	r := NewResponder(NewClientTable(10), st, RateLimit{}, tc.t3)
	h, _, n := respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Transmit: 5}), clientA)
	if n == 0 || h.Leap != LeapAlarm || h.Stratum != 0 {
		t.Fatalf("unsynchronised reply: %+v", h)
	}
}

// simClient is a client with a clock offset (client − server) and a
// symmetric one-way delay, speaking like ntpd (echoing the last reply).
type simClient struct {
	offset, owd time.Duration
	echo        bool
	prevT3      Timestamp // Transmit of the last reply
	prevT4      Timestamp
}

func (c *simClient) exchange(t *testing.T, r *Responder, tc *testClock, from netip.AddrPort, serverSend int64, precision int8, li uint8, version uint8) Observation {
	t.Helper()
	t1 := serverSend + int64(c.offset) // client clock reads server time + offset
	h := Header{Leap: li, Version: version, Mode: ModeClient, Precision: precision, Transmit: TimestampFromUnixNano(t1)}
	if c.echo {
		h.Stratum, h.Poll, h.RefID = 3, 6, 0x0a000001
		h.Origin, h.Receive = c.prevT3, c.prevT4
	}
	tc.now = serverSend + int64(c.owd)
	reply, obs, n := respond(t, r, tc, request(h), from)
	if n == 0 {
		t.Fatalf("no reply: %+v", obs)
	}
	c.prevT3 = reply.Transmit
	c.prevT4 = TimestampFromUnixNano(tc.t3() + int64(c.owd) + int64(c.offset))
	return obs
}

func TestOffsetExchange(t *testing.T) {
	for _, off := range []time.Duration{250 * time.Millisecond, -37 * time.Microsecond, -3 * time.Hour, 10 * 365 * 24 * time.Hour} {
		r, tc := newTestResponder(RateLimit{})
		c := &simClient{offset: off, owd: 3 * time.Millisecond, echo: true}
		start := tc.now
		o1 := c.exchange(t, r, tc, clientA, start, -20, 0, 4)
		if o1.Method != MethodApparent || o1.Implementation != ImplNTPd {
			t.Fatalf("first request: method %v impl %v", o1.Method, o1.Implementation)
		}
		if d := o1.Offset - (off - 3*time.Millisecond); d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("apparent offset %v, want %v", o1.Offset, off-3*time.Millisecond)
		}
		o2 := c.exchange(t, r, tc, clientA, start+int64(64*time.Second), -20, 0, 4)
		if o2.Method != MethodExchange {
			t.Fatalf("second request: method %v", o2.Method)
		}
		if d := o2.Offset - off; d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("offset %v, want %v", o2.Offset, off)
		}
		if d := o2.Delay - 6*time.Millisecond; d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("delay %v, want 6ms", o2.Delay)
		}
	}
}

func TestNoOffsetFromRandomTransmit(t *testing.T) {
	r, tc := newTestResponder(RateLimit{})
	var x uint64 = 0x9e3779b97f4a7c15
	for i := 0; i < 50; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		// chrony: precision 32, random Transmit, real poll.
		_, obs, _ := respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Poll: 6, Precision: 32, Transmit: Timestamp(x)}), clientA)
		if obs.Method != MethodNone || obs.Implementation != ImplChrony {
			t.Fatalf("request %d: method %v impl %v", i, obs.Method, obs.Implementation)
		}
		// Unknown client with random Transmit and no precision hint.
		_, obs, _ = respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Poll: 6, Precision: -10, Transmit: Timestamp(x * 3)}), clientB)
		if obs.Method != MethodNone {
			t.Fatalf("request %d from unknown client with random Transmit: method %v", i, obs.Method)
		}
		tc.now += int64(time.Second)
	}
}

func TestApparentOffsetNeedsConsistency(t *testing.T) {
	r, tc := newTestResponder(RateLimit{})
	off := -2 * time.Hour
	// An unknown client (precision -10, nothing else) with a real but
	// wrong clock: the first request reveals nothing, the second does.
	for i := 0; i < 3; i++ {
		t1 := TimestampFromUnixNano(tc.now - int64(time.Millisecond) + int64(off))
		_, obs, _ := respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Poll: 4, Precision: -10, Transmit: t1}), clientA)
		if i == 0 && obs.Method != MethodNone {
			t.Fatalf("first request: method %v", obs.Method)
		}
		if i > 0 {
			if obs.Method != MethodApparent || math.Abs(float64(obs.Offset-(off-time.Millisecond))) > 1000 {
				t.Fatalf("request %d: %v %v", i, obs.Method, obs.Offset)
			}
		}
		tc.now += int64(16 * time.Second)
	}
}

func TestTimesyncdNanosecondFraction(t *testing.T) {
	r, tc := newTestResponder(RateLimit{})
	// timesyncd 1.5 s ahead; the fraction field carries nanoseconds.
	clientNs := tc.now + int64(1500*time.Millisecond) - int64(time.Millisecond)
	secs := uint64(clientNs/1e9 + ntpEpochOffset)
	frac := uint64(clientNs % 1e9)
	_, obs, _ := respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(secs<<32 | frac)}), clientA)
	if obs.Implementation != ImplTimesyncd || obs.Method != MethodApparent {
		t.Fatalf("impl %v method %v", obs.Implementation, obs.Method)
	}
	if d := obs.Offset - 1499*time.Millisecond; d < -time.Microsecond || d > time.Microsecond {
		t.Fatalf("offset %v, want 1.499s", obs.Offset)
	}
}

func TestInterleavedDetected(t *testing.T) {
	r, tc := newTestResponder(RateLimit{})
	_, _, _ = respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Poll: 6, Precision: 32, Transmit: 0xdeadbeef12345678}), clientA)
	prevT2 := TimestampFromUnixNano(tc.now)
	tc.now += int64(time.Second)
	_, obs, _ := respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Poll: 6, Precision: 32, Origin: prevT2, Receive: 0x1234, Transmit: 0x77}), clientA)
	if !obs.Interleaved || obs.Method != MethodNone {
		t.Fatalf("interleaved %v method %v", obs.Interleaved, obs.Method)
	}
}

func TestRateLimit(t *testing.T) {
	rl := RateLimit{Enabled: true, Interval: 0, Burst: 4, Leak: 2}
	r, tc := newTestResponder(rl)
	const n = 4000
	answered := 0
	start := tc.now
	// 100 requests per second from one address for 40 s.
	for i := 0; i < n; i++ {
		tc.now = start + int64(i)*int64(10*time.Millisecond)
		_, obs, rn := respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Transmit: Timestamp(i)}), clientA)
		if rn > 0 {
			answered++
		} else if obs.Drop != DropRateLimit {
			t.Fatalf("drop %v", obs.Drop)
		}
		// A well-behaved client polling every 16 s is never limited.
		if i%1600 == 0 {
			if _, obs, rn := respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Transmit: 9}), clientB); rn == 0 {
				t.Fatalf("other client dropped: %+v", obs)
			}
		}
	}
	// Allowed: burst + one per second (40) + a quarter of the rest (leak 2).
	limit := 4 + 40
	expect := float64(limit) + float64(n-limit)/4
	if math.Abs(float64(answered)-expect) > 0.1*expect {
		t.Fatalf("answered %d of %d, want about %.0f", answered, n, expect)
	}
	info, _ := r.clients.Get(clientA.Addr())
	if int(info.Drops) != n-answered {
		t.Fatalf("drops %d, want %d", info.Drops, n-answered)
	}
}

func TestRateLimitKoD(t *testing.T) {
	r, tc := newTestResponder(RateLimit{Enabled: true, Interval: 3, Burst: 1, Leak: 4, KoD: 1})
	kods := 0
	for i := 0; i < 100; i++ {
		tx := Timestamp(1000 + i)
		h, obs, n := respond(t, r, tc, request(Header{Version: 4, Mode: ModeClient, Transmit: tx}), clientA)
		if obs.KoD {
			kods++
			if n != HeaderLength || h.Stratum != 0 || h.RefID != kissRATE || h.Origin != tx || h.Leap != LeapAlarm {
				t.Fatalf("bad KoD %+v", h)
			}
			if obs.Drop != DropRateLimit {
				t.Fatalf("KoD observation drop %v", obs.Drop)
			}
		}
	}
	if kods < 80 {
		t.Fatalf("only %d KoD replies of 100 over-limit requests", kods)
	}
}

func TestRespondAllocs(t *testing.T) {
	r, tc := newTestResponder(DefaultRateLimit)
	reqs := [][]byte{
		request(Header{Version: 4, Mode: ModeClient, Poll: 6, Precision: 32, Transmit: 0x1234}),
		request(Header{Version: 4, Mode: ModeClient, Leap: 3, Transmit: TimestampFromUnixNano(tc.now)}),
		request(Header{Version: 2, Mode: ModePrivate}),
		make([]byte, 12),
	}
	reply := make([]byte, HeaderLength)
	var obs Observation
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		tc.now += 1000
		r.Respond(reqs[i%len(reqs)], tc.now, clientA, local, reply, &obs)
		i++
	})
	if allocs != 0 {
		t.Fatalf("Respond allocates %.1f times per request", allocs)
	}
}

func TestReplyNeverLongerThanRequest(t *testing.T) {
	r, tc := newTestResponder(RateLimit{})
	reply := make([]byte, 2048)
	var obs Observation
	for n := 0; n <= 200; n++ {
		for first := 0; first < 256; first += 7 {
			b := make([]byte, n)
			if n > 0 {
				b[0] = byte(first)
			}
			if rn := r.Respond(b, tc.now, clientA, local, reply, &obs); rn > n {
				t.Fatalf("request %d bytes (first byte %#x) got %d-byte reply", n, first, rn)
			}
		}
	}
}

func BenchmarkRespond(b *testing.B) {
	r, tc := newTestResponder(RateLimit{})
	req := request(Header{Version: 4, Mode: ModeClient, Poll: 6, Precision: 32, Transmit: 0x1234})
	reply := make([]byte, HeaderLength)
	var obs Observation
	clients := make([]netip.AddrPort, 1024)
	for i := range clients {
		clients[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 40000)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tc.now += 1000
		r.Respond(req, tc.now, clients[i&1023], local, reply, &obs)
	}
}
