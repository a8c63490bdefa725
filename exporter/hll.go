package exporter

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Distinct-client counting.
//
// ntpexp_clients_seen{window} is estimated with HyperLogLog sketches so that
// it neither depends on the bounded client table of the ntp package nor
// grows with the number of clients. Each sketch has 2^12 one-byte registers
// (4 KiB, relative standard error about 1.6 %). Sketches are kept in two
// time-bucketed rings: one-minute slots for the 5m and 1h windows and
// fifteen-minute slots for the 24h window. A window is the union (register
// maximum) of the slots it covers, including the current, partial one, so
// it reaches back at least the window length and at most one slot more.

const (
	hllPrecision = 12
	hllRegisters = 1 << hllPrecision
	// hllQ is the number of hash bits left after the register index; a
	// register holds a rank in 0..hllQ+1.
	hllQ = 64 - hllPrecision

	// hllSeed perturbs the address hash so that sketch positions are not
	// a plain function of well-known address patterns.
	hllSeed = 0x6e747065_78702d31
)

// hllSketch is a HyperLogLog sketch with 2^hllPrecision registers.
type hllSketch [hllRegisters]uint8

// mix64 is a 64-bit finalising mixer (xor-shift-multiply, SplitMix style):
// a bijection with full avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hashAddr hashes the 16-byte form of an address (IPv4 addresses in their
// IPv4-mapped form, zones ignored). It does not allocate.
func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	return mix64(lo ^ mix64(hi^hllSeed))
}

// hllPosition splits a hash into a register index (the top hllPrecision
// bits) and the rank of the remaining bits (position of the first one bit,
// 1-based, at most hllQ+1).
func hllPosition(h uint64) (idx uint32, rank uint8) {
	idx = uint32(h >> hllQ)
	w := h<<hllPrecision | 1<<(hllPrecision-1)
	return idx, uint8(bits.LeadingZeros64(w)) + 1
}

func (s *hllSketch) insert(idx uint32, rank uint8) {
	if s[idx] < rank {
		s[idx] = rank
	}
}

func (s *hllSketch) merge(o *hllSketch) {
	for i, r := range o {
		if s[i] < r {
			s[i] = r
		}
	}
}

func (s *hllSketch) reset() { *s = hllSketch{} }

// estimate returns the cardinality estimate. It uses the improved raw
// estimator of O. Ertl, "New cardinality estimation algorithms for
// HyperLogLog sketches" (2017), which is unbiased over the whole range
// without empirical correction tables or a switch to linear counting.
func (s *hllSketch) estimate() float64 {
	var c [hllQ + 2]int
	for _, r := range s {
		c[r]++
	}
	if c[0] == hllRegisters {
		return 0
	}
	const m = float64(hllRegisters)
	z := m * hllTau(1-float64(c[hllQ+1])/m)
	for k := hllQ; k >= 1; k-- {
		z = 0.5 * (z + float64(c[k]))
	}
	z += m * hllSigma(float64(c[0])/m)
	return m * m / (2 * math.Ln2 * z)
}

// hllSigma is σ(x) = x + Σ_{k≥1} x^(2^k)·2^(k−1), for 0 ≤ x < 1.
func hllSigma(x float64) float64 {
	if x >= 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

// hllTau is τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))²·2^−k) / 3, for 0 ≤ x ≤ 1.
func hllTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == prev {
			return z / 3
		}
	}
}

// hllRing is a ring of sketches, one per time slot of a fixed width. Slot
// numbers are Unix seconds divided by the width; the ring holds slots
// cur−len+1 … cur. The zero value is not usable; see newHLLRing.
type hllRing struct {
	width   int64 // seconds per slot
	slots   []hllSketch
	cur     int64
	started bool
}

func newHLLRing(width time.Duration, n int) hllRing {
	return hllRing{width: int64(width / time.Second), slots: make([]hllSketch, n)}
}

// slotOf returns the slot number holding Unix time sec.
func (r *hllRing) slotOf(sec int64) int64 {
	q := sec / r.width
	if sec%r.width < 0 {
		q--
	}
	return q
}

func (r *hllRing) index(slot int64) int {
	n := int64(len(r.slots))
	i := slot % n
	if i < 0 {
		i += n
	}
	return int(i)
}

// advance makes slot the newest one if it is newer than cur, clearing the
// slots it passes over. A slot older than the whole ring (the clock was
// stepped back by more than the ring's span) restarts the ring there.
func (r *hllRing) advance(slot int64) {
	n := int64(len(r.slots))
	switch {
	case !r.started:
		r.cur, r.started = slot, true
	case slot > r.cur:
		from := r.cur + 1
		if slot-n+1 > from {
			from = slot - n + 1
		}
		for s := from; s <= slot; s++ {
			r.slots[r.index(s)].reset()
		}
		r.cur = slot
	case slot <= r.cur-n:
		for i := range r.slots {
			r.slots[i].reset()
		}
		r.cur = slot
	}
}

// slot returns the sketch of slot s, or nil if s is not in the ring.
func (r *hllRing) slot(s int64) *hllSketch {
	if !r.started || s > r.cur || s <= r.cur-int64(len(r.slots)) {
		return nil
	}
	return &r.slots[r.index(s)]
}

func (r *hllRing) insert(sec int64, idx uint32, rank uint8) {
	s := r.slotOf(sec)
	r.advance(s)
	r.slot(s).insert(idx, rank)
}

// Window definitions: slot width, number of past slots merged besides the
// current one, and label value.
const (
	minuteSlot  = time.Minute
	quarterSlot = 15 * time.Minute
	window5m    = 5  // minutes
	window1h    = 60 // minutes
	window24h   = 96 // quarter hours
)

// distinctClients estimates the number of distinct client addresses seen
// in the last 5 minutes, hour and day. It is safe for concurrent use.
type distinctClients struct {
	now  func() time.Time
	desc *prometheus.Desc

	mu       sync.Mutex
	minutes  hllRing // window1h+1 one-minute slots
	quarters hllRing // window24h+1 fifteen-minute slots
}

func newDistinctClients(now func() time.Time) *distinctClients {
	return &distinctClients{
		now: now,
		desc: prometheus.NewDesc("ntpexp_clients_seen",
			"Estimated number of distinct client addresses that sent a request within the window "+
				"(HyperLogLog, about 1.6% relative standard error). "+
				"window is one of 5m, 1h, 24h; a window includes the current, partial 1m (5m, 1h) or 15m (24h) slot.",
			[]string{"window"}, nil),
		minutes:  newHLLRing(minuteSlot, window1h+1),
		quarters: newHLLRing(quarterSlot, window24h+1),
	}
}

// add records that addr sent a request at t. It does not allocate.
func (d *distinctClients) add(t time.Time, addr netip.Addr) {
	idx, rank := hllPosition(hashAddr(addr))
	sec := t.Unix()
	d.mu.Lock()
	d.minutes.insert(sec, idx, rank)
	d.quarters.insert(sec, idx, rank)
	d.mu.Unlock()
}

// mergeSlots merges slots from…to of r into dst, taking the lock once per
// slot so that the packet path waits for at most one 4 KiB merge.
func (d *distinctClients) mergeSlots(dst *hllSketch, r *hllRing, from, to int64) {
	for s := from; s <= to; s++ {
		d.mu.Lock()
		if sk := r.slot(s); sk != nil {
			dst.merge(sk)
		}
		d.mu.Unlock()
	}
}

// windows returns the 5m, 1h and 24h estimates at time now. Slots that
// have aged out are cleared first, so windows empty without traffic.
func (d *distinctClients) windows(now time.Time) (m5, h1, h24 float64) {
	sec := now.Unix()
	d.mu.Lock()
	curM := d.minutes.slotOf(sec)
	curQ := d.quarters.slotOf(sec)
	// Only move forward here: a collection clock behind the observation
	// times must not restart the rings.
	if curM > d.minutes.cur || !d.minutes.started {
		d.minutes.advance(curM)
	}
	if curQ > d.quarters.cur || !d.quarters.started {
		d.quarters.advance(curQ)
	}
	d.mu.Unlock()

	var acc hllSketch
	d.mergeSlots(&acc, &d.minutes, curM-window5m, curM)
	m5 = acc.estimate()
	d.mergeSlots(&acc, &d.minutes, curM-window1h, curM-window5m-1)
	h1 = acc.estimate()
	acc.reset()
	d.mergeSlots(&acc, &d.quarters, curQ-window24h, curQ)
	h24 = acc.estimate()
	return m5, h1, h24
}

// Describe implements prometheus.Collector.
func (d *distinctClients) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

// Collect implements prometheus.Collector.
func (d *distinctClients) Collect(ch chan<- prometheus.Metric) {
	m5, h1, h24 := d.windows(d.now())
	ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, math.Round(m5), "5m")
	ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, math.Round(h1), "1h")
	ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, math.Round(h24), "24h")
}
