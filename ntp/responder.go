package ntp

import (
	"math/rand/v2"
	"net/netip"
	"time"
)

// RateLimit configures per-client response rate limiting, with chrony's
// parameters and defaults (chrony.conf "ratelimit").
type RateLimit struct {
	Enabled bool
	// Interval is the minimum mean interval between responses to one
	// address, as a power of 2 in seconds (-19 … 12; default 3 = 8 s).
	Interval int
	// Burst is how many responses may be sent back to back (1 … 255; default 8).
	Burst int
	// Leak: over-limit requests are still answered at random, one in
	// 2^Leak (1 … 4; default 2), so that a spoofer cannot cut a victim off.
	Leak int
	// KoD: one in 2^(KoD−1) of the dropped requests gets a kiss-o'-death
	// RATE reply instead of silence (0 = never; 1 = every dropped request).
	KoD int
}

// DefaultRateLimit is chrony's default ratelimit, enabled.
var DefaultRateLimit = RateLimit{Enabled: true, Interval: 3, Burst: 8, Leak: 2}

// tokenUnit is the cost of one response in rate-limit bucket units.
const tokenUnit = 1 << 16

// Kiss codes (RFC 5905, section 7.4): RATE (rate limited), DENY and RSTR
// (access denied).
const (
	kissRATE = 'R'<<24 | 'A'<<16 | 'T'<<8 | 'E'
	kissDENY = 'D'<<24 | 'E'<<16 | 'N'<<8 | 'Y'
	kissRSTR = 'R'<<24 | 'S'<<16 | 'T'<<8 | 'R'
)

// Responder turns requests into replies and observations. It holds no
// socket, so it is tested directly; Server feeds it from sockets. It is
// safe for concurrent use.
type Responder struct {
	clients  *ClientTable
	clock    ClockStateSource
	now      func() int64 // Unix nanoseconds, for T3
	rl       RateLimit
	interval int64 // ns per token
	maxTok   uint32
	leakMask uint32
	kodMask  uint32
}

// ClockStateSource provides the clock state to advertise. Load must be
// cheap and must not allocate: it is called per request.
type ClockStateSource interface {
	Load() *ClockState
}

// NewResponder makes a responder. now returns the current time in Unix
// nanoseconds; nil means the system clock.
func NewResponder(clients *ClientTable, clock ClockStateSource, rl RateLimit, now func() int64) *Responder {
	if now == nil {
		now = func() int64 { return time.Now().UnixNano() }
	}
	r := &Responder{clients: clients, clock: clock, now: now, rl: rl}
	if rl.Enabled {
		if rl.Interval >= 0 {
			r.interval = int64(time.Second) << rl.Interval
		} else {
			r.interval = int64(time.Second) >> -rl.Interval
		}
		r.maxTok = uint32(rl.Burst) * tokenUnit
		r.leakMask = 1<<rl.Leak - 1
		if rl.KoD > 0 {
			r.kodMask = 1<<(rl.KoD-1) - 1
		}
	}
	return r
}

// Respond handles one request received at rxNanos (T2, Unix ns) from
// client on local. It fills obs and, when a reply is due, writes it into
// reply (at least HeaderLength bytes) and returns its length; 0 means no
// reply. The Transmit timestamp (T3) is read as late as possible, just
// before the reply is filled. It does not allocate.
func (r *Responder) Respond(req []byte, rxNanos int64, client, local netip.AddrPort, reply []byte, obs *Observation) int {
	*obs = Observation{
		Received: time.Unix(0, rxNanos),
		Client:   client,
		Local:    local,
		Length:   uint16(min(len(req), 0xffff)),
	}
	if len(req) > 0 {
		obs.Leap, obs.Version, obs.Mode = req[0]>>6, (req[0]>>3)&7, req[0]&7
	}
	var h Header
	if err := DecodeHeader(req, &h); err != nil {
		obs.Drop = DropTooShort
		return 0
	}
	obs.Stratum, obs.Poll, obs.Precision = h.Stratum, h.Poll, h.Precision
	obs.RootDelay, obs.RootDispersion, obs.RefID = h.RootDelay, h.RootDispersion, h.RefID
	obs.Reference, obs.Origin, obs.Receive, obs.Transmit = h.Reference, h.Origin, h.Receive, h.Transmit

	replyMode, err := replyModeFor(&h, client.Port())
	if err != nil {
		obs.Drop = DropReasonOf(err)
		return 0
	}
	ext, err := ParseExtensions(req)
	obs.Extensions = ext
	if err != nil {
		obs.Drop = DropMalformed
		return 0
	}

	t2 := TimestampFromUnixNano(rxNanos)
	a := client.Addr().As16()
	s := r.clients.shard(&a)
	s.mu.Lock()
	e, created := s.lookup(r.clients, a)

	prevSeen := e.lastSeen
	track(e, created, &h, client.Port(), rxNanos, t2, obs)
	if created {
		e.tokens = r.maxTok
	}

	// Rate limiting, chrony style: a token bucket per address.
	limited := false
	if r.rl.Enabled {
		if !created && rxNanos > prevSeen {
			add := uint64(rxNanos-prevSeen) * tokenUnit / uint64(r.interval)
			e.tokens = uint32(min(uint64(e.tokens)+add, uint64(r.maxTok)))
		}
		if e.tokens >= tokenUnit {
			e.tokens -= tokenUnit
		} else if rand.Uint32()&r.leakMask != 0 {
			limited = true
		}
	}
	if limited {
		e.drops++
		e.lastT3 = 0
		obs.Drop = DropRateLimit
		if r.rl.KoD == 0 || rand.Uint32()&r.kodMask != 0 {
			s.mu.Unlock()
			return 0
		}
		obs.KoD = true
	}

	st := r.clock.Load()
	out := Header{
		Leap:           st.Leap,
		Version:        h.Version,
		Mode:           replyMode,
		Stratum:        st.Stratum,
		Poll:           h.Poll,
		Precision:      st.Precision,
		RootDelay:      st.RootDelay,
		RootDispersion: st.RootDispersion,
		RefID:          st.RefID,
		Reference:      st.Reference,
		Origin:         h.Transmit,
		Receive:        t2,
	}
	if obs.KoD {
		// Kiss-o'-death RATE: stratum 0, the kiss code as reference ID,
		// and no usable time.
		out = Header{Leap: LeapAlarm, Version: h.Version, Mode: replyMode, Poll: h.Poll,
			Precision: st.Precision, RefID: kissRATE, Origin: h.Transmit, Receive: h.Transmit, Transmit: h.Transmit}
		s.mu.Unlock()
		out.Encode(reply)
		obs.ReplyLength = HeaderLength
		return HeaderLength
	}
	t3n := r.now()
	t3 := TimestampFromUnixNano(t3n)
	e.lastT3 = t3
	s.mu.Unlock()
	out.Transmit = t3
	out.Encode(reply)
	obs.ServerTransmit = t3
	obs.Processing = time.Duration(t3n - rxNanos)
	obs.ReplyLength = HeaderLength
	return HeaderLength
}

// replyModeFor returns the mode to answer a request with, or the error
// saying why it is not answered. Like chrony: client (3) gets server (4),
// symmetric active (1) gets passive (2), and an NTPv1 request (mode 0)
// gets server unless it comes from port 123 (a v1 peer). Never mode 0.
func replyModeFor(h *Header, srcPort uint16) (uint8, error) {
	if h.Version < 1 || h.Version > 4 {
		return 0, ErrBadVersion
	}
	switch h.Mode {
	case ModeClient:
		return ModeServer, nil
	case ModeActive:
		return ModePassive, nil
	case ModeReserved:
		if h.Version == 1 && srcPort != ntpPort {
			return ModeServer, nil
		}
	case ModeControl:
		return 0, ErrControl
	case ModePrivate:
		return 0, ErrPrivate
	}
	return 0, ErrBadMode
}

// advancesWithServer reports whether a client's Transmit advanced by
// about as much as the server's clock between two requests (dT1 and dT2
// are wire-timestamp differences): 10 ms plus 1000 ppm of the interval
// covers network jitter and any sane frequency error. Random Transmits
// (data minimisation) essentially never pass.
func advancesWithServer(dT1, dT2 Timestamp) bool {
	d2 := int64(dT2)
	if d2 <= 0 {
		return false
	}
	diff := int64(dT1) - d2
	if diff < 0 {
		diff = -diff
	}
	const tenMs = 1 << 32 / 100
	return diff <= tenMs+d2/1000
}

// track updates a client's entry for a request h received at rxNanos (T2,
// t2 on the wire) and fills what the request reveals into obs: the
// implementation class, and the offset and delay when its timestamps allow.
// It is shared by server mode and passive mode, so both derive the same
// observations from the same traffic. The caller holds the shard lock and
// sets e.lastT3 once the reply (if any) is known.
func track(e *clientEntry, created bool, h *Header, srcPort uint16, rxNanos int64, t2 Timestamp, obs *Observation) {
	prevT1, prevT3 := e.lastT1, e.lastT3
	prevSeen := e.lastSeen
	var prevT2 Timestamp
	if !created {
		prevT2 = TimestampFromUnixNano(prevSeen)
	}
	if created {
		e.firstSeen = uint32(rxNanos / int64(time.Second))
	} else if gap := rxNanos - prevSeen; gap > 0 {
		n := float32(min(e.requests, 15))
		e.avgInterval += (float32(float64(gap)/1e9) - e.avgInterval) / (n)
	}
	e.requests++
	e.lastSeen = rxNanos
	e.version, e.mode, e.poll = h.Version, h.Mode, h.Poll
	if h.Transmit.Fraction() >= nanosLimit {
		e.flags |= flagNotNanos
	}
	impl := classify(h, srcPort, t2.Seconds(), e.flags)
	e.impl = impl
	obs.Implementation = impl
	e.lastT1 = h.Transmit

	// What the timestamps reveal about the client's clock.
	switch {
	case h.Origin != 0 && h.Origin == prevT3 && h.Receive != 0:
		// Origin and Receive echo T3 and T4 of our previous reply:
		// the whole exchange T1..T4 is known.
		t1, t4 := prevT1, h.Receive
		a1, a2 := int64(t1-prevT2), int64(t4-prevT3) // client − server, both legs
		obs.Method = MethodExchange
		obs.Offset = FixedToDuration(a1/2 + a2/2)
		obs.Delay = FixedToDuration(int64(t4-t1) - int64(prevT3-prevT2))
	case h.Origin != 0 && prevT2 != 0 && nearTimestamp(h.Origin, prevT2):
		// Interleaved mode: Origin carries our previous Receive timestamp.
		// prevT2 is rebuilt from nanoseconds: a daemon's own T2 (passive
		// mode) may differ from it in the last bits.
		obs.Interleaved = true
	}
	if obs.Method == MethodNone && h.Transmit != 0 && h.Precision != precisionDataMinimised {
		t1 := transmitTime(h, impl)
		real, never := realTransmit(impl)
		if !real && !never && prevT1 != 0 && prevT2 != 0 {
			real = advancesWithServer(h.Transmit-prevT1, t2-prevT2)
		}
		if real {
			obs.Method = MethodApparent
			obs.Offset = t1.Sub(t2)
		}
	}
}

// transmitTime is the client's T1 as a timestamp: systemd-timesyncd puts
// nanoseconds, not a binary fraction, in the low 32 bits.
func transmitTime(h *Header, impl Implementation) Timestamp {
	if impl == ImplTimesyncd {
		return decodeNanosFraction(h.Transmit)
	}
	return h.Transmit
}

// nearTimestamp reports whether two timestamps differ by at most 4
// fraction units (under a nanosecond): equal up to a nanosecond round trip.
func nearTimestamp(a, b Timestamp) bool {
	d := int64(a - b)
	return d >= -4 && d <= 4
}
