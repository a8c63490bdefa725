package sqlitestore

import (
	"database/sql/driver"
	"fmt"
	"math"

	"github.com/ntpexp/ntpexp/ntp"
)

// rollupCache keeps the writer's recent client_hours rows in memory,
// merged, so that a transaction writes each (hour, client) row it touches
// once, whole, without reading it back first. The database stays the
// truth: every transaction writes the merged rows with its raw rows, and
// the cache is dropped whenever it might disagree with the database (a
// failed transaction, a maintenance request, a write by another
// connection, retention deleting rollups).
type rollupCache struct {
	rows map[hourKey]*hourState
	// totals holds the hours rows (client_hours summed per hour).
	totals map[int64]*hourTotals
	// complete[h] is true when every stored row of hour h is in rows (the
	// hour had no rows when the cache first met it), so a row missing
	// from rows is new; false when missing rows must be read.
	complete map[int64]bool
	newest   int64 // newest hour touched
	trimmed  int64 // newest when trim last evicted old hours
	max      int   // rows kept at most between transactions
}

func newRollupCache(max int) rollupCache {
	return rollupCache{rows: make(map[hourKey]*hourState), totals: make(map[int64]*hourTotals),
		complete: make(map[int64]bool), max: max}
}

// reset forgets everything.
func (c *rollupCache) reset() {
	clear(c.rows)
	clear(c.totals)
	clear(c.complete)
}

// dropBefore forgets the hours before hour.
func (c *rollupCache) dropBefore(hour int64) {
	for h := range c.complete {
		if h < hour {
			delete(c.complete, h)
		}
	}
	for h := range c.totals {
		if h < hour {
			delete(c.totals, h)
		}
	}
	for k := range c.rows {
		if k.hour < hour {
			delete(c.rows, k)
		}
	}
}

func (c *rollupCache) touch(hour int64) {
	c.newest = max(c.newest, hour)
}

// trim bounds the cache after a commit. When a new hour starts, rows of
// hours before the previous one go (late observations for them are rare
// and read their row back); if the cache is still too big, everything
// goes.
func (c *rollupCache) trim() {
	if c.newest > c.trimmed || len(c.rows) > c.max {
		c.trimmed = c.newest
		c.dropBefore(c.newest - 3600)
	}
	if len(c.rows) > c.max {
		c.reset()
	}
}

// hourState is one client_hours row.
type hourState struct {
	requests, drops, rateLimited, kod int64
	offCount, offMin, offMax          int64
	offSum                            float64
	delayCount, delayMin, delayMax    int64
	delaySum                          float64
	versions, impls, methods          int64
	// blobs holds offset_hist, delay_hist and tallies back to back.
	blobs            []byte
	offLen, delayLen int32
}

func (h *hourState) offHist() []byte { return h.blobs[:h.offLen:h.offLen] }
func (h *hourState) delayHist() []byte {
	return h.blobs[h.offLen : h.offLen+h.delayLen : h.offLen+h.delayLen]
}
func (h *hourState) tallies() []byte { return h.blobs[h.offLen+h.delayLen:] }

// add merges one observation into the row and into its hour's totals;
// the row's histograms and tallies go to the decoded pairs.
func (h *hourState) add(o *ntp.Observation, off, delay, tallies *countPairs, t *hourTotals) {
	t.dirty = true
	t.requests++
	if o.Drop != ntp.DropNone {
		t.drops++
	}
	h.requests++
	if o.Drop != ntp.DropNone {
		h.drops++
	}
	if o.Drop == ntp.DropRateLimit {
		h.rateLimited++
	}
	if o.KoD {
		h.kod++
	}
	if o.Method != ntp.MethodNone {
		v := int64(o.Offset)
		widen(&h.offCount, &h.offMin, &h.offMax, v)
		h.offSum += float64(v)
		b := histBucket(v)
		off.add(b, 1)
		widen(&t.offCount, &t.offMin, &t.offMax, v)
		t.offHist.add(b, 1)
	}
	if o.Method == ntp.MethodExchange {
		v := int64(o.Delay)
		widen(&h.delayCount, &h.delayMin, &h.delayMax, v)
		h.delaySum += float64(v)
		b := histBucket(v)
		delay.add(b, 1)
		widen(&t.delayCount, &t.delayMin, &t.delayMax, v)
		t.delayHist.add(b, 1)
	}
	for _, k := range [...]int{
		tallyKey(tallyVersion, o.Version),
		tallyKey(tallyMode, o.Mode),
		tallyKey(tallyImplementation, uint8(o.Implementation)),
		tallyKey(tallyDrop, uint8(o.Drop)),
		tallyKey(tallyMethod, uint8(o.Method)),
	} {
		tallies.add(k, 1)
		t.tallies.add(k, 1)
	}
	h.versions |= 1 << (o.Version & 63)
	h.impls |= 1 << (uint8(o.Implementation) & 63)
	h.methods |= 1 << (uint8(o.Method) & 63)
}

// encode stores the pairs as the row's blobs.
func (h *hourState) encode(off, delay, tallies countPairs) {
	b := off.appendEncoded(h.blobs[:0])
	h.offLen = int32(len(b))
	b = delay.appendEncoded(b)
	h.delayLen = int32(len(b)) - h.offLen
	h.blobs = tallies.appendEncoded(b)
	if h.blobs == nil {
		h.blobs = []byte{} // the columns are NOT NULL
	}
}

// scan reads a row selected with hourColumns.
func (h *hourState) scan(v []driver.Value) error {
	ints := []*int64{&h.requests, &h.drops, &h.rateLimited, &h.kod, &h.offCount, &h.offMin, &h.offMax}
	for i, p := range ints {
		*p, _ = v[i].(int64) // NULL min/max read as 0; offCount says they are unset
	}
	h.offSum = toFloat(v[7])
	h.delayCount, _ = v[8].(int64)
	h.delayMin, _ = v[9].(int64)
	h.delayMax, _ = v[10].(int64)
	h.delaySum = toFloat(v[11])
	oh, ok1 := v[12].([]byte)
	dh, ok2 := v[13].([]byte)
	th, ok3 := v[14].([]byte)
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("%w: rollup blob of type %T, %T, %T", errBadSparse, v[12], v[13], v[14])
	}
	h.versions, _ = v[15].(int64)
	h.impls, _ = v[16].(int64)
	h.methods, _ = v[17].(int64)
	h.blobs = append(append(append(h.blobs[:0], oh...), dh...), th...)
	h.offLen, h.delayLen = int32(len(oh)), int32(len(dh))
	return nil
}

func toFloat(v driver.Value) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	}
	return 0
}

// hourTotals is one hours row, kept decoded.
type hourTotals struct {
	clients, requests, drops       int64
	offCount, offMin, offMax       int64
	absLo, absHi                   int64
	hasAbs                         bool
	delayCount, delayMin, delayMax int64
	offHist, delayHist, tallies    countPairs
	dirty                          bool // changed by the current transaction
}

// addRow accounts for a client_hours row after a merge: one more row if
// it is new, and its |offset| range. A row's range only widens as it
// merges, so the smallest lower and largest upper bound seen so far are
// those of the hour's rows as they are now.
func (t *hourTotals) addRow(h *hourState, isNew bool) {
	if isNew {
		t.clients++
	}
	if h.offCount == 0 {
		return
	}
	lo, hi := absBounds(h.offMin, h.offMax)
	if !t.hasAbs {
		t.absLo, t.absHi, t.hasAbs = lo, hi, true
	} else {
		t.absLo, t.absHi = min(t.absLo, lo), max(t.absHi, hi)
	}
	t.dirty = true
}

// absBounds is the range of |offset| given the signed minimum and
// maximum, like absRange, saturating at MaxInt64 (which converts to the
// same float64 as |MinInt64|).
func absBounds(lo, hi int64) (int64, int64) {
	abs := func(v int64) int64 {
		if v >= 0 {
			return v
		}
		if v == math.MinInt64 {
			return math.MaxInt64
		}
		return -v
	}
	var l int64
	switch {
	case lo >= 0:
		l = lo
	case hi <= 0:
		l = abs(hi)
	}
	return l, max(abs(lo), abs(hi))
}

// scan reads a row selected with totalsColumns.
func (t *hourTotals) scan(v []driver.Value) error {
	ints := []*int64{&t.clients, &t.requests, &t.drops, &t.offCount, &t.offMin, &t.offMax, &t.absLo, &t.absHi,
		&t.delayCount, &t.delayMin, &t.delayMax}
	for i, p := range ints {
		*p, _ = v[i].(int64)
	}
	t.hasAbs = v[6] != nil
	for i, p := range []*countPairs{&t.offHist, &t.delayHist, &t.tallies} {
		b, ok := v[11+i].([]byte)
		if !ok {
			return fmt.Errorf("%w: hours blob of type %T", errBadSparse, v[11+i])
		}
		if err := p.decodeInto(b); err != nil {
			return err
		}
	}
	return nil
}

// widen counts v into a running count n and range [lo, hi].
func widen(n, lo, hi *int64, v int64) {
	if *n == 0 {
		*lo, *hi = v, v
	} else {
		*lo, *hi = min(*lo, v), max(*hi, v)
	}
	*n++
}
