package exporter

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Per-client series.
//
// The series labelled client="<IP address>" are bounded: at most
// MetricsConfig.MaxClients clients carry them, the most recently active ones
// (least recently used is evicted, and all its series are deleted). Clients
// in MetricsConfig.Watch always carry them and are not counted against
// MaxClients, but are themselves bounded by MaxWatchedClients; watched
// clients beyond that bound are treated like any other client.
//
// Admission: when all MaxClients places are taken, a new client only
// replaces the least recently used one if that one has been idle for at
// least MetricsConfig.ClientMinIdle (default 5 minutes). Otherwise the new
// client gets no series (it is still counted by every aggregate metric).
// This keeps each client's series alive for several scrape intervals and
// bounds the churn (series creation allocates) to MaxClients per
// ClientMinIdle, so that a busy public server with far more clients than
// MaxClients does not create and delete series on every packet. With a
// negative ClientMinIdle the set is a plain LRU.

// Per-client bucket layouts: coarser than the aggregate ones to keep the
// series count per client small.
var (
	clientOffsetBuckets = symmetricBuckets(1e-4, 1e-3, 0.01, 0.05, 0.1, 1, 10, 60, 3600)
	clientDelayBuckets  = []float64{1e-3, 0.01, 0.05, 0.1, 0.5, 1}
)

// clientSeries holds one client's children of the per-client vectors. Its
// metric fields are immutable after creation.
type clientSeries struct {
	addr     netip.Addr
	label    string
	requests prometheus.Counter
	offset   prometheus.Observer
	delay    prometheus.Observer
	// lastOffset is created on the client's first offset, not with the
	// other series: a gauge of 0 would read as a perfectly synchronised
	// client, and many clients never reveal their clock.
	lastOffset atomic.Pointer[gaugeBox]
	// exchange is set once the client produced a full-exchange offset;
	// from then on its less accurate apparent offsets are ignored.
	exchange atomic.Bool
	watched  bool
	// lastSeen is the Unix time in nanoseconds of the client's latest
	// request; guarded by clientTracker.mu.
	lastSeen int64
	// LRU links (unwatched clients only), guarded by clientTracker.mu.
	prev, next *clientSeries
}

type clientTracker struct {
	requests   *prometheus.CounterVec
	offset     *prometheus.HistogramVec
	delay      *prometheus.HistogramVec
	lastOffset *prometheus.GaugeVec
	count      prometheus.GaugeFunc

	max        int // <= 0: only watched clients
	maxWatched int
	minIdle    int64 // nanoseconds; < 0: plain LRU
	watch      []netip.Prefix

	mu       sync.Mutex
	byAddr   map[netip.Addr]*clientSeries
	lru      clientSeries // sentinel: lru.next is the most recent
	lruLen   int
	nWatched int
	total    atomic.Int64
}

func newClientTracker(maxClients, maxWatched int, minIdle time.Duration, watch []netip.Prefix, nativeFactor float64) *clientTracker {
	t := &clientTracker{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ntpexp_client_requests_total",
			Help: "Requests received from the client since its series were created " +
				"(bounded set of clients; see ntpexp_client_series_clients).",
		}, []string{"client"}),
		offset: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ntpexp_client_clock_offset_seconds",
			Help: "Client clock offset (client minus server) per client; full-exchange offsets once " +
				"the client has produced one, apparent offsets (including one-way delay) before.",
			Buckets:                         clientOffsetBuckets,
			NativeHistogramBucketFactor:     nativeFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBucketsPerClient,
			NativeHistogramMinResetDuration: nativeMinResetDuration,
		}, []string{"client"}),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "ntpexp_client_round_trip_delay_seconds",
			Help:                            "Round-trip delay of full NTP exchanges per client.",
			Buckets:                         clientDelayBuckets,
			NativeHistogramBucketFactor:     nativeFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBucketsPerClient,
			NativeHistogramMinResetDuration: nativeMinResetDuration,
		}, []string{"client"}),
		lastOffset: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ntpexp_client_last_offset_seconds",
			Help: "Most recent clock offset of the client (client minus server), same method preference as " +
				"ntpexp_client_clock_offset_seconds. Absent until the client revealed an offset.",
		}, []string{"client"}),
		max:        maxClients,
		maxWatched: maxWatched,
		minIdle:    int64(minIdle),
		watch:      watch,
		byAddr:     make(map[netip.Addr]*clientSeries),
	}
	t.lru.next, t.lru.prev = &t.lru, &t.lru
	t.count = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ntpexp_client_series_clients",
		Help: "Number of clients that currently carry per-client series (LRU-tracked plus watched).",
	}, func() float64 { return float64(t.total.Load()) })
	return t
}

func (t *clientTracker) collectors() []prometheus.Collector {
	return []prometheus.Collector{t.requests, t.offset, t.delay, t.lastOffset, t.count}
}

func (t *clientTracker) isWatched(a netip.Addr) bool {
	a = a.WithZone("")
	for _, p := range t.watch {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// get returns the series of addr (unmapped) seen at now (Unix
// nanoseconds), creating them and evicting the least recently used client
// if needed and allowed, or nil if addr carries no series. Only creation
// and eviction allocate.
func (t *clientTracker) get(addr netip.Addr, now int64) *clientSeries {
	if t.max <= 0 && len(t.watch) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cs, ok := t.byAddr[addr]; ok {
		cs.lastSeen = now
		if !cs.watched && t.lru.next != cs {
			t.unlink(cs)
			t.pushFront(cs)
		}
		return cs
	}
	watched := len(t.watch) > 0 && t.nWatched < t.maxWatched && t.isWatched(addr)
	if !watched && t.max <= 0 {
		return nil
	}
	if !watched && t.lruLen >= t.max {
		oldest := t.lru.prev
		// A negative idle time means the clock was stepped back: admit.
		if idle := now - oldest.lastSeen; t.minIdle >= 0 && idle >= 0 && idle < t.minIdle {
			return nil
		}
		t.evict(oldest)
	}
	label := addr.String()
	cs := &clientSeries{
		addr:     addr,
		label:    label,
		requests: t.requests.WithLabelValues(label),
		offset:   t.offset.WithLabelValues(label),
		delay:    t.delay.WithLabelValues(label),
		watched:  watched,
		lastSeen: now,
	}
	t.byAddr[addr] = cs
	if watched {
		t.nWatched++
	} else {
		t.pushFront(cs)
	}
	t.total.Add(1)
	return cs
}

type gaugeBox struct{ g prometheus.Gauge }

// setLastOffset sets the client's last-offset gauge, creating it on first
// use (one allocation per client).
func (t *clientTracker) setLastOffset(cs *clientSeries, v float64) {
	b := cs.lastOffset.Load()
	if b == nil {
		t.mu.Lock()
		if t.byAddr[cs.addr] != cs {
			// Evicted meanwhile: its series are gone.
			t.mu.Unlock()
			return
		}
		if b = cs.lastOffset.Load(); b == nil {
			b = &gaugeBox{t.lastOffset.WithLabelValues(cs.label)}
			cs.lastOffset.Store(b)
		}
		t.mu.Unlock()
	}
	b.g.Set(v)
}

// evict removes an LRU client and deletes all its series. t.mu is held.
func (t *clientTracker) evict(cs *clientSeries) {
	t.unlink(cs)
	delete(t.byAddr, cs.addr)
	t.requests.DeleteLabelValues(cs.label)
	t.offset.DeleteLabelValues(cs.label)
	t.delay.DeleteLabelValues(cs.label)
	t.lastOffset.DeleteLabelValues(cs.label)
	t.total.Add(-1)
}

func (t *clientTracker) unlink(cs *clientSeries) {
	cs.prev.next, cs.next.prev = cs.next, cs.prev
	cs.prev, cs.next = nil, nil
	t.lruLen--
}

func (t *clientTracker) pushFront(cs *clientSeries) {
	cs.prev, cs.next = &t.lru, t.lru.next
	t.lru.next.prev = cs
	t.lru.next = cs
	t.lruLen++
}
