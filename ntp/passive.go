package ntp

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Passive mode: ntpexp watches the NTP traffic of another daemon (chronyd,
// ntpd) instead of answering itself. Each captured client request is held
// until the daemon's reply to it is captured, then both together make one
// Observation with the same fields and the same per-client logic (track) as
// in server mode. T2 and T3 come from the daemon's reply, so offsets and
// delays are the daemon's view; the daemon's processing time T3 − T2 and
// requests it never answered are recorded as well.

// PassiveConfig bounds the request/reply matcher.
type PassiveConfig struct {
	// ReplyTimeout is how long a request waits for its reply before it
	// is recorded as unanswered (default 1 s).
	ReplyTimeout time.Duration
	// MaxPending is the number of requests that may wait for a reply at
	// once (default 65536). When full, the oldest is recorded as
	// DropCaptureLost: its fate is not known.
	MaxPending int
	// Mirror pairs frames addressed to neither this host nor sent by it
	// (DirOther: a mirror or SPAN port). When false they are ignored and
	// counted: they reach the capture only when something (tcpdump) has
	// put the interface in promiscuous mode, and are not the daemon's.
	Mirror bool
}

// PassiveCounters are the capture and matching counters of passive mode.
type PassiveCounters struct {
	// Requests and Replies are the client requests and daemon replies
	// that reached the matcher (copies from another interface aside).
	Requests, Replies uint64
	// Matched replies completed a pending request; Unmatched replies
	// had none (the request was not captured, already expired, or the
	// reply is not to a request we saw).
	Matched, Unmatched uint64
	// Unanswered requests got no reply within ReplyTimeout while the
	// capture lost nothing; Lost requests' fate is unknown because the
	// capture lost packets meanwhile or the pending table was full.
	Unanswered, Lost uint64
	// Overflows counts requests pushed out of a full pending table,
	// Duplicates requests identical in key to one still pending. Copies
	// are the same request or reply frame captured again on another
	// interface within 1 ms (a VLAN and its parent, a bond and its
	// slaves), in any order: not counted again.
	Overflows, Duplicates, Copies uint64
	// IgnoredOutgoingRequests are requests sent by this host (the local
	// daemon's own upstream polls); IgnoredIncomingReplies the replies to
	// them. Neither is about the daemon's clients. IgnoredOtherHost are
	// frames neither to nor from this host (promiscuous capture) when
	// PassiveConfig.Mirror is false.
	IgnoredOutgoingRequests, IgnoredIncomingReplies, IgnoredOtherHost uint64
	// Invalid frames passed the filter but are not UDP/NTP we can read
	// (bad lengths); Truncated frames were longer than the capture
	// buffer; Fragments are first fragments of fragmented NTP datagrams
	// (not reassembled). A truncated or fragmented frame the daemon may have
	// sent is a gap in the capture, like a kernel drop.
	Invalid, Truncated, Fragments uint64
	// KernelDrops are frames the kernel dropped because the capture
	// buffer was full (PACKET_STATISTICS).
	KernelDrops uint64
	// Pending is the number of requests waiting for a reply now.
	Pending int
	// MaxPending is the configured bound of Pending.
	MaxPending int
}

// pendingKey finds a pending request from its reply: the reply goes from
// server to client and its Origin echoes the request's Transmit (basic
// mode) or its Receive (interleaved mode).
type pendingKey struct {
	client, server         [16]byte
	clientPort, serverPort uint16
	// alt marks an interleaved request's second entry, under its
	// Receive. The primary entry (under Transmit) identifies the request;
	// an alternate one never makes another request a duplicate, evicts
	// or removes its entries.
	alt bool
	ts  Timestamp
}

// finishedReq remembers a request that left the pending table, so that
// a copy of it or of its reply captured on another interface is known
// for what it is, whichever capture socket's reader gets to it first.
type finishedReq struct {
	key      pendingKey // primary key
	origin   Timestamp  // Origin of the reply that completed it
	captured int64      // request capture time (Unix ns)
	replied  int64      // reply capture time, if hasReply
	reqIface int32
	repIface int32
	hasReply bool
}

// recentFinished is how many finished requests are remembered (a power
// of two): a direct-mapped table, so a copy is recognised as long as the
// other interface's reader is no more than a few thousand requests
// behind. Copies are within sameFrameWindow of capture time anyway.
const (
	recentBits     = 12
	recentFinished = 1 << recentBits
)

// bucket is where k's request is remembered in Passive.recent.
func (k *pendingKey) bucket() uint32 {
	h := uint64(k.ts) ^ binary.LittleEndian.Uint64(k.client[:8]) ^ binary.LittleEndian.Uint64(k.client[8:])<<7 ^
		binary.LittleEndian.Uint64(k.server[8:])<<13 ^ uint64(k.clientPort)<<32 ^ uint64(k.serverPort)<<48
	return uint32((h * 0x9e3779b97f4a7c15) >> (64 - recentBits))
}

// replySeen is a captured reply that completes a pending request.
type replySeen struct {
	h           Header
	length      int
	iface       int
	captured    int64
	interleaved bool
}

type pendingReq struct {
	h        Header
	ext      Extensions
	length   uint16
	client   netip.AddrPort
	server   netip.AddrPort
	captured int64  // Unix ns, kernel capture time of the request
	epoch    uint64 // gap epoch when captured
	iface    int    // capture socket it came from
	alt      bool   // also indexed under h.Receive (interleaved)
	// prev and next link live entries in capture order (oldest first),
	// and free entries through next; slot index+1, 0 = none.
	prev, next uint32
}

// Passive pairs captured requests and replies into observations. It is
// safe for concurrent use by several capture sockets.
type Passive struct {
	cfg      PassiveConfig
	clients  *ClientTable
	consumer Consumer

	mu sync.Mutex
	// slots holds the pending requests: live ones in a list in capture
	// order (head is the oldest), the others in a free list. A matched
	// request leaves the list at once, so only requests still waiting
	// use capacity.
	slots      []pendingReq
	head, tail uint32 // live list, slot index+1
	free       uint32 // free list, slot index+1
	// n is the number of live entries (changed under mu, read without).
	n     atomic.Int64
	index map[pendingKey]uint32
	// recent holds the latest finished requests (see finishedReq).
	recent []finishedReq
	// epoch counts capture gaps (kernel drops, unreadable frames the
	// daemon may have sent).
	epoch atomic.Uint64
	obs   Observation
	state atomic.Pointer[ClockState]
	// lastState is when state was last replaced (Unix ns).
	lastState int64

	c struct {
		requests, replies, matched, unmatched, unanswered, lost  atomic.Uint64
		overflows, duplicates, ignOut, ignIn, invalid, truncated atomic.Uint64
		kernelDrops, copies, ignOther, fragments                 atomic.Uint64
	}
}

// NewPassive makes a matcher that records into clients and emits to
// consumer. All memory is allocated up front.
func NewPassive(cfg PassiveConfig, clients *ClientTable, consumer Consumer) *Passive {
	if cfg.ReplyTimeout <= 0 {
		cfg.ReplyTimeout = time.Second
	}
	if cfg.MaxPending < 1 {
		cfg.MaxPending = 65536
	}
	if consumer == nil {
		consumer = Consumers(nil)
	}
	p := &Passive{cfg: cfg, clients: clients, consumer: consumer,
		slots:  make([]pendingReq, cfg.MaxPending),
		index:  make(map[pendingKey]uint32, 2*cfg.MaxPending),
		recent: make([]finishedReq, recentFinished)}
	for i := range p.slots {
		p.slots[i].next = uint32(i + 2)
	}
	p.slots[len(p.slots)-1].next = 0
	p.free = 1
	p.state.Store(&ClockState{Leap: LeapAlarm})
	return p
}

// SetConsumer sets where observations go. Call it before the capture
// starts.
func (p *Passive) SetConsumer(c Consumer) {
	p.mu.Lock()
	p.consumer = c
	p.mu.Unlock()
}

// Load returns the clock state the daemon advertised in its latest
// ordinary reply, so the server_* metrics describe the daemon.
func (p *Passive) Load() *ClockState { return p.state.Load() }

// Counters returns a snapshot of the counters.
func (p *Passive) Counters() PassiveCounters {
	return PassiveCounters{
		Requests: p.c.requests.Load(), Replies: p.c.replies.Load(),
		Matched: p.c.matched.Load(), Unmatched: p.c.unmatched.Load(),
		Unanswered: p.c.unanswered.Load(), Lost: p.c.lost.Load(),
		Overflows: p.c.overflows.Load(), Duplicates: p.c.duplicates.Load(), Copies: p.c.copies.Load(),
		IgnoredOutgoingRequests: p.c.ignOut.Load(), IgnoredIncomingReplies: p.c.ignIn.Load(), IgnoredOtherHost: p.c.ignOther.Load(),
		Invalid: p.c.invalid.Load(), Truncated: p.c.truncated.Load(), Fragments: p.c.fragments.Load(),
		KernelDrops: p.c.kernelDrops.Load(),
		Pending:     int(p.n.Load()), MaxPending: p.cfg.MaxPending,
	}
}

// CaptureGap records that the capture lost n frames (kernel drops). Any
// request pending now may have lost its reply, so it will be recorded as
// DropCaptureLost rather than guessed unanswered.
func (p *Passive) CaptureGap(n uint64) {
	if n == 0 {
		return
	}
	p.c.kernelDrops.Add(n)
	p.epoch.Add(1)
}

// Packet direction as far as the capture can tell (sll_pkttype).
type Direction uint8

const (
	// DirIncoming: addressed to this host.
	DirIncoming Direction = iota
	// DirOutgoing: sent by this host.
	DirOutgoing
	// DirOther: neither (a mirror port or promiscuous capture).
	DirOther
)

// Packet handles one captured UDP datagram with port 123 on either side:
// payload from src to dst, captured at capNanos (Unix ns). Requests and
// replies are told apart by the NTP mode, then by direction.
func (p *Passive) Packet(payload []byte, src, dst netip.AddrPort, dir Direction, capNanos int64) {
	p.PacketOn(0, payload, src, dst, dir, capNanos)
}

// sameFrameWindow: a request (or reply) identical to one pending or
// recently paired, captured on another interface within this time, is the
// same frame seen twice (a VLAN and its parent, a bond and its slaves).
const sameFrameWindow = int64(time.Millisecond)

// PacketOn is Packet for a frame captured on capture socket iface (any
// number that tells the capture's interfaces apart).
func (p *Passive) PacketOn(iface int, payload []byte, src, dst netip.AddrPort, dir Direction, capNanos int64) {
	if p.ignoreOther(dir) {
		return
	}
	if len(payload) == 0 {
		p.c.invalid.Add(1)
		return
	}
	mode := payload[0] & 7
	isReply := (mode == ModeServer || mode == ModePassive) && src.Port() == ntpPort
	switch {
	case isReply && dir == DirIncoming:
		p.c.ignIn.Add(1)
	case isReply:
		p.reply(iface, payload, src, dst, dir, capNanos)
	case dst.Port() != ntpPort:
		// From port 123 to elsewhere, but not a reply: not a request to
		// the daemon either (e.g. a mode 6 response).
		p.c.invalid.Add(1)
	case dir == DirOutgoing:
		p.c.ignOut.Add(1)
	default:
		p.request(iface, payload, src, dst, capNanos)
	}
}

// ignoreOther counts and reports a frame of direction dir that is not to
// be read: one neither to nor from this host, unless on a mirror port.
func (p *Passive) ignoreOther(dir Direction) bool {
	if dir == DirOther && !p.cfg.Mirror {
		p.c.ignOther.Add(1)
		return true
	}
	return false
}

// Truncated counts a frame of direction dir longer than the capture
// buffer (2048 bytes); its content is not read. If this host did not
// receive it, it may have been one of the daemon's replies: a gap in the
// capture, so requests pending now become DropCaptureLost, not
// unanswered. (A frame this host received is not the daemon's reply, so
// a flood of large datagrams cannot hide unanswered requests.)
func (p *Passive) Truncated(dir Direction) {
	if p.ignoreOther(dir) {
		return
	}
	p.c.truncated.Add(1)
	if dir != DirIncoming {
		p.epoch.Add(1)
	}
}

// Fragment counts the first fragment of a fragmented IP datagram from
// src to dst (later fragments carry no UDP header and are not
// captured). Fragments are not reassembled: if the daemon may have sent
// it (from port 123, not received by this host), it is a gap like a
// kernel drop.
func (p *Passive) Fragment(src, dst netip.AddrPort, dir Direction) {
	if p.ignoreOther(dir) {
		return
	}
	p.c.fragments.Add(1)
	if src.Port() == ntpPort && dir != DirIncoming {
		p.epoch.Add(1)
	}
}

// Invalid counts a frame that passed the filter but could not be
// decoded. It is not a gap: garbage is not a reply.
func (p *Passive) Invalid(dir Direction) {
	if p.ignoreOther(dir) {
		return
	}
	p.c.invalid.Add(1)
}

// isCopy reports whether a request with primary key k, captured on iface
// at capNanos, is a copy of one captured on another interface: one still
// pending, or one already finished (its reply may have been read first
// by the other interface's reader). The caller holds p.mu.
func (p *Passive) isCopy(iface int, k pendingKey, capNanos int64) bool {
	if slot, ok := p.index[k]; ok {
		r := &p.slots[slot]
		return r.iface != iface && abs64(capNanos-r.captured) < sameFrameWindow
	}
	e := &p.recent[k.bucket()]
	return e.key == k && int(e.reqIface) != iface && abs64(capNanos-e.captured) < sameFrameWindow
}

// isReplyCopy reports whether a reply to k (its Origin in k.ts), which
// matches no pending request, is a copy of the reply that completed a
// request on another interface. The caller holds p.mu.
func (p *Passive) isReplyCopy(iface int, k pendingKey, capNanos int64) bool {
	e := &p.recent[k.bucket()]
	if !e.hasReply || int(e.repIface) == iface || abs64(capNanos-e.replied) >= sameFrameWindow {
		return false
	}
	ek := e.key
	ek.ts = e.origin
	return ek == k
}

func (p *Passive) request(iface int, req []byte, client, server netip.AddrPort, capNanos int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(req) >= HeaderLength && p.isCopy(iface, keyOf(client, server, Timestamp(binary.BigEndian.Uint64(req[offTransmit:]))), capNanos) {
		p.c.copies.Add(1)
		return
	}
	p.c.requests.Add(1)
	obs := &p.obs
	*obs = Observation{
		Received: time.Unix(0, capNanos),
		Client:   client,
		Local:    server,
		Length:   uint16(min(len(req), 0xffff)),
	}
	obs.Leap, obs.Version, obs.Mode = req[0]>>6, (req[0]>>3)&7, req[0]&7
	var h Header
	if err := DecodeHeader(req, &h); err != nil {
		obs.Drop = DropTooShort
		p.consumer.Observe(obs)
		return
	}
	setRequestFields(obs, &h)
	if _, err := replyModeFor(&h, client.Port()); err != nil {
		obs.Drop = DropReasonOf(err)
		p.consumer.Observe(obs)
		return
	}
	ext, err := ParseExtensions(req)
	if err != nil {
		obs.Extensions = ext
		obs.Drop = DropMalformed
		p.consumer.Observe(obs)
		return
	}

	k := keyOf(client, server, h.Transmit)
	if old, ok := p.index[k]; ok {
		// The same request again while the first is pending (a replay
		// or a flood of copies): the first reply will complete the
		// newer one; the older one's fate is unknown.
		p.c.duplicates.Add(1)
		p.finish(old, nil, DropCaptureLost)
	}
	if p.free == 0 {
		p.c.overflows.Add(1)
		p.finish(p.head-1, nil, DropCaptureLost)
	}
	slot := p.free - 1
	r := &p.slots[slot]
	p.free = r.next
	*r = pendingReq{h: h, ext: ext, length: obs.Length, client: client, server: server,
		captured: capNanos, epoch: p.epoch.Load(), iface: iface, prev: p.tail}
	if p.tail != 0 {
		p.slots[p.tail-1].next = slot + 1
	} else {
		p.head = slot + 1
	}
	p.tail = slot + 1
	p.n.Add(1)
	p.index[k] = slot
	// An interleaved reply's Origin is the request's Receive field. Only
	// one pending request can hold an alternate key; primary keys are
	// apart from alternate ones.
	if h.Origin != 0 && h.Receive != 0 && h.Receive != h.Transmit {
		ka := keyOf(client, server, h.Receive)
		ka.alt = true
		if _, taken := p.index[ka]; !taken {
			p.index[ka] = slot
			r.alt = true
		}
	}
}

func (p *Passive) reply(iface int, rep []byte, server, client netip.AddrPort, dir Direction, capNanos int64) {
	rs := replySeen{length: len(rep), iface: iface, captured: capNanos}
	h := &rs.h
	if DecodeHeader(rep, h) != nil {
		p.c.replies.Add(1)
		p.c.invalid.Add(1)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// A basic reply's Origin is a request's Transmit, an interleaved
	// one's a request's Receive.
	k := keyOf(client, server, h.Origin)
	slot, ok := p.index[k]
	if !ok {
		k.alt = true
		slot, ok = p.index[k]
		k.alt = false
	}
	if !ok {
		if p.isReplyCopy(iface, k, capNanos) {
			p.c.copies.Add(1)
			return
		}
		p.c.replies.Add(1)
		p.c.unmatched.Add(1)
		return
	}
	p.c.replies.Add(1)
	r := &p.slots[slot]
	rs.interleaved = h.Origin != r.h.Transmit
	p.c.matched.Add(1)
	p.finish(slot, &rs, DropNone)
	// The daemon's advertised state, from its ordinary replies; only from
	// replies this host sent, so that on a mirror port no other server's
	// replies stand in for it.
	if dir == DirOutgoing && !isKiss(h) && capNanos-p.lastState >= int64(time.Second) {
		p.lastState = capNanos
		st := *p.state.Load()
		st.Synchronized = h.Leap != LeapAlarm && h.Stratum != 0
		st.Leap, st.Stratum, st.Precision = h.Leap, h.Stratum, h.Precision
		st.RootDelay, st.RootDispersion, st.RefID, st.Reference = h.RootDelay, h.RootDispersion, h.RefID, h.Reference
		p.state.Store(&st)
	}
}

// isKiss reports whether a reply is a kiss-o'-death that refuses the
// client: stratum 0 with the code RATE, DENY or RSTR. Other stratum-0
// replies (ntpd's INIT or STEP while unsynchronised, chrony's when
// unsynchronised) are ordinary answers with real timestamps.
func isKiss(h *Header) bool {
	return h.Stratum == 0 && (h.RefID == kissRATE || h.RefID == kissDENY || h.RefID == kissRSTR)
}

// finishBatch is how many requests Expire and Flush finish under one
// hold of p.mu: after a burst the daemon left unanswered, the capture
// readers wait for one batch, not for all of it.
const finishBatch = 256

// Expire records every request older than the reply timeout as
// unanswered (or lost, if the capture had a gap meanwhile). The capture
// calls it periodically with the current time.
func (p *Passive) Expire(nowNanos int64) {
	deadline := nowNanos - int64(p.cfg.ReplyTimeout)
	p.finishOldest(func(r *pendingReq) (DropReason, bool) {
		if r.captured > deadline {
			return DropNone, false
		}
		if r.epoch != p.epoch.Load() {
			return DropCaptureLost, true
		}
		return DropUnanswered, true
	})
}

// Flush records every pending request as it stands, for shutdown: those
// without a reply yet are DropCaptureLost (their fate is unknown).
func (p *Passive) Flush() {
	p.finishOldest(func(*pendingReq) (DropReason, bool) { return DropCaptureLost, true })
}

// finishOldest finishes pending requests oldest first, with the reason
// fate gives, until fate says stop or none is left, releasing p.mu
// every finishBatch requests.
func (p *Passive) finishOldest(fate func(*pendingReq) (DropReason, bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := 1; p.head != 0; n++ {
		reason, ok := fate(&p.slots[p.head-1])
		if !ok {
			return
		}
		p.finish(p.head-1, nil, reason)
		if n%finishBatch == 0 {
			p.mu.Unlock()
			p.mu.Lock()
		}
	}
}

// finish turns pending request slot into an observation, with the reply
// rs (nil if none) or the drop reason, and frees the slot. The caller
// holds p.mu.
func (p *Passive) finish(slot uint32, rs *replySeen, drop DropReason) {
	r := &p.slots[slot]
	// Remove this request's own index entries only.
	k := keyOf(r.client, r.server, r.h.Transmit)
	if s, ok := p.index[k]; ok && s == slot {
		delete(p.index, k)
	}
	if r.alt {
		ka := keyOf(r.client, r.server, r.h.Receive)
		ka.alt = true
		if s, ok := p.index[ka]; ok && s == slot {
			delete(p.index, ka)
		}
	}
	// Remember it, for copies from another interface.
	fin := finishedReq{key: k, captured: r.captured, reqIface: int32(r.iface)}
	if rs != nil {
		fin.origin, fin.replied, fin.repIface, fin.hasReply = rs.h.Origin, rs.captured, int32(rs.iface), true
	}
	p.recent[k.bucket()] = fin
	if rs != nil && rs.h.Origin != r.h.Transmit {
		ko := k
		ko.ts = rs.h.Origin
		p.recent[ko.bucket()] = fin
	}
	var rep *Header
	var repLen int
	var interleaved bool
	if rs != nil {
		rep, repLen, interleaved = &rs.h, rs.length, rs.interleaved
	}
	if r.prev != 0 {
		p.slots[r.prev-1].next = r.next
	} else {
		p.head = r.next
	}
	if r.next != 0 {
		p.slots[r.next-1].prev = r.prev
	} else {
		p.tail = r.prev
	}
	p.n.Add(-1)
	defer func() {
		r.prev, r.next = 0, p.free
		p.free = slot + 1
	}()
	switch drop {
	case DropUnanswered:
		p.c.unanswered.Add(1)
	case DropCaptureLost:
		p.c.lost.Add(1)
	}

	// A kiss-o'-death carries no usable time: it echoes the request's
	// Transmit in Receive and Transmit.
	kod := rep != nil && isKiss(rep)
	// T2: the daemon's receive time from its reply; without one (or with
	// a KoD), the capture time of the request (same host, same clock).
	rx := r.captured
	if rep != nil && !kod {
		rx = rep.Receive.UnixNano(r.captured)
	}
	obs := &p.obs
	*obs = Observation{
		Received:   time.Unix(0, rx),
		Client:     r.client,
		Local:      r.server,
		Length:     r.length,
		Extensions: r.ext,
		Drop:       drop,
	}
	h := &r.h
	obs.Leap, obs.Version, obs.Mode = h.Leap, h.Version, h.Mode
	setRequestFields(obs, h)
	if rep != nil {
		obs.ReplyLength = uint16(min(repLen, 0xffff))
		switch {
		case kod:
			// RATE is rate limiting; DENY and RSTR refuse the client.
			obs.KoD = true
			obs.Drop = DropDenied
			if rep.RefID == kissRATE {
				obs.Drop = DropRateLimit
			}
		case interleaved:
			// Transmit is the precise T3 of the previous reply; this
			// reply's own T3 is not on the wire.
			obs.ServerTransmit = rep.Transmit
		default:
			obs.ServerTransmit = rep.Transmit
			obs.Processing = rep.Transmit.Sub(rep.Receive)
		}
	}

	t2 := TimestampFromUnixNano(rx)
	if rep != nil && !kod {
		t2 = rep.Receive
	}
	a := r.client.Addr().As16()
	s := p.clients.shard(&a)
	s.mu.Lock()
	e, created := s.lookup(p.clients, a)
	if !created && rx < e.lastSeen {
		// An older request completes after a newer one (it waited for
		// its reply timeout): count it without rewinding the client's
		// exchange state.
		e.requests++
		obs.Implementation = e.impl
		if real, _ := realTransmit(e.impl); real && h.Transmit != 0 && h.Precision != precisionDataMinimised {
			obs.Method, obs.Offset = MethodApparent, transmitTime(h, e.impl).Sub(t2)
		}
	} else {
		track(e, created, h, r.client.Port(), rx, t2, obs)
		e.lastT3 = 0
		if rep != nil && !interleaved && !kod {
			e.lastT3 = rep.Transmit
		}
	}
	if obs.Drop != DropNone {
		e.drops++
	}
	s.mu.Unlock()
	if interleaved {
		obs.Interleaved = true
	}
	p.consumer.Observe(obs)
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func setRequestFields(obs *Observation, h *Header) {
	obs.Stratum, obs.Poll, obs.Precision = h.Stratum, h.Poll, h.Precision
	obs.RootDelay, obs.RootDispersion, obs.RefID = h.RootDelay, h.RootDispersion, h.RefID
	obs.Reference, obs.Origin, obs.Receive, obs.Transmit = h.Reference, h.Origin, h.Receive, h.Transmit
}

func keyOf(client, server netip.AddrPort, ts Timestamp) pendingKey {
	return pendingKey{client: client.Addr().As16(), server: server.Addr().As16(),
		clientPort: client.Port(), serverPort: server.Port(), ts: ts}
}

// PassiveStatsOf reports on passive mode for the exporter: the client
// table, and the clock state the daemon advertises in its replies, with
// the kernel's error estimates of this host's clock from host.
func PassiveStatsOf(table *ClientTable, p *Passive, host ClockStateSource) Stats {
	return tableStats{table, passiveClock{p, host}}
}

type passiveClock struct {
	p    *Passive
	host ClockStateSource
}

func (c passiveClock) Load() *ClockState {
	st := *c.p.Load()
	if c.host != nil {
		h := c.host.Load()
		st.MaxError, st.EstError = h.MaxError, h.EstError
	}
	return &st
}
