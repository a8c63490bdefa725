package sqlitestore

import (
	"encoding/binary"
	"errors"
	"math"
	"sort"
)

// Histograms of |offset| and delay in client_hours use fixed log-scale
// buckets on nanoseconds, ten per decade from 100 ns:
//
//	bucket 0:        0 <= v < 100 ns
//	bucket i (1..170): histEdges[i-1] <= v < histEdges[i]
//	histEdges[i] = round(100 ns * 10^(i/10))
//
// so bucket 170 ends at 1e19 ns, above the largest Duration. A bucket
// spans a factor of 10^0.1 (about 1.26); a quantile reported at the
// bucket's geometric centre is within about 12% of the true value.
const histBuckets = 171

var histEdges = func() [histBuckets - 1]int64 {
	var e [histBuckets - 1]int64
	for i := range e {
		v := math.Round(100 * math.Pow(10, float64(i)/10))
		if v > math.MaxInt64 {
			e[i] = math.MaxInt64
		} else {
			e[i] = int64(v)
		}
	}
	return e
}()

// histBucket returns the bucket of a non-negative value in nanoseconds.
func histBucket(ns int64) int {
	if ns < 0 {
		ns = -ns
		if ns < 0 { // MinInt64
			return histBuckets - 1
		}
	}
	return sort.Search(len(histEdges), func(i int) bool { return histEdges[i] > ns })
}

// histBounds returns the bucket's [lo, hi) in nanoseconds.
func histBounds(b int) (lo, hi float64) {
	if b == 0 {
		return 0, float64(histEdges[0])
	}
	lo = float64(histEdges[b-1])
	if b < len(histEdges) {
		hi = float64(histEdges[b])
	} else {
		hi = 1e19
	}
	return lo, hi
}

// Sparse count encoding, shared by the histograms and by tallies: a
// sequence of pairs (uvarint key, uvarint count), keys strictly
// increasing, counts > 0. The empty histogram is the empty blob.
//
// tallies keys are dimension<<8 | value, with the dimensions below.
const (
	tallyVersion        = 1
	tallyMode           = 2
	tallyImplementation = 3
	tallyDrop           = 4
	tallyMethod         = 5
)

func tallyKey(dim int, v uint8) int { return dim<<8 | int(v) }

var errBadSparse = errors.New("sqlitestore: malformed sparse count blob")

// sparseCounts is a small map from key to count with a stable encoding.
type sparseCounts map[int]uint64

func (s sparseCounts) add(k int, n uint64) { s[k] += n }

// appendEncoded appends the encoding of s to dst.
func (s sparseCounts) appendEncoded(dst []byte, keys []int) ([]byte, []int) {
	keys = keys[:0]
	for k, n := range s {
		if n > 0 {
			keys = append(keys, k)
		}
	}
	sort.Ints(keys)
	for _, k := range keys {
		dst = binary.AppendUvarint(dst, uint64(k))
		dst = binary.AppendUvarint(dst, s[k])
	}
	return dst, keys
}

// decodeSparse calls fn for every (key, count) in b.
func decodeSparse(b []byte, fn func(k int, n uint64)) error {
	prev := -1
	for len(b) > 0 {
		k, n := binary.Uvarint(b)
		if n <= 0 || k > 1<<20 || int(k) <= prev {
			return errBadSparse
		}
		b = b[n:]
		c, n := binary.Uvarint(b)
		if n <= 0 {
			return errBadSparse
		}
		b = b[n:]
		fn(int(k), c)
		prev = int(k)
	}
	return nil
}

// mergeSparse adds the counts in b to s.
func mergeSparse(s sparseCounts, b []byte) error {
	return decodeSparse(b, func(k int, n uint64) { s[k] += n })
}

// hist is a dense histogram for computing quantiles.
type hist struct {
	counts [histBuckets]uint64
	total  uint64
	// min and max of the values, when known, clamp the estimates.
	min, max float64
	hasMin   bool
}

func (h *hist) merge(b []byte) error {
	return decodeSparse(b, func(k int, n uint64) {
		if k < histBuckets {
			h.counts[k] += n
			h.total += n
		}
	})
}

// observeRange records the exact minimum and maximum (nanoseconds).
func (h *hist) observeRange(lo, hi float64) {
	if !h.hasMin || lo < h.min {
		h.min = lo
	}
	if !h.hasMin || hi > h.max {
		h.max = hi
	}
	h.hasMin = true
}

// quantile returns the q-quantile (0 < q <= 1) in nanoseconds: the
// geometric centre of the bucket holding the rank ceil(q*total), clamped
// to the known range. It returns false when empty.
func (h *hist) quantile(q float64) (float64, bool) {
	if h.total == 0 {
		return 0, false
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for b, n := range h.counts {
		seen += n
		if seen >= rank {
			lo, hi := histBounds(b)
			v := math.Sqrt(lo * hi)
			if b == 0 {
				v = hi / 2
			}
			if h.hasMin {
				v = math.Max(h.min, math.Min(h.max, v))
			}
			return v, true
		}
	}
	return h.max, true
}

// countAbove returns how many values are certainly > ns (whole buckets
// starting at or above ns).
func (h *hist) countAbove(ns float64) uint64 {
	var n uint64
	for b, c := range h.counts {
		if lo, _ := histBounds(b); lo > ns {
			n += c
		}
	}
	return n
}

// countPairs is a sparse count set kept as a slice sorted by key: the
// writer's working form of a histogram or tallies blob. Rollup rows hold
// a few dozen keys at most, so a sorted slice beats a map and reuses its
// memory across rows.
type countPairs []countPair

type countPair struct {
	k int
	n uint64
}

// add adds n to key k.
func (p *countPairs) add(k int, n uint64) {
	s := *p
	i := len(s)
	for i > 0 && s[i-1].k > k {
		i--
	}
	if i > 0 && s[i-1].k == k {
		s[i-1].n += n
		return
	}
	s = append(s, countPair{})
	copy(s[i+1:], s[i:])
	s[i] = countPair{k, n}
	*p = s
}

// decodeInto replaces p with the counts encoded in b.
func (p *countPairs) decodeInto(b []byte) error {
	s := (*p)[:0]
	err := decodeSparse(b, func(k int, n uint64) { s = append(s, countPair{k, n}) })
	*p = s
	return err
}

// appendEncoded appends the encoding of p (see sparseCounts) to dst.
func (p countPairs) appendEncoded(dst []byte) []byte {
	for _, c := range p {
		if c.n > 0 {
			dst = binary.AppendUvarint(dst, uint64(c.k))
			dst = binary.AppendUvarint(dst, c.n)
		}
	}
	return dst
}
