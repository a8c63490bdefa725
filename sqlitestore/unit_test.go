package sqlitestore

import (
	"crypto/hmac"
	"crypto/sha256"
	"math"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"
	"time"
)

func TestAnonymizeAddr(t *testing.T) {
	key := []byte("test key, sixteen bytes plus")
	for _, tc := range []struct {
		mode AddressMode
		in   string
		want string
	}{
		{AddressFull, "192.0.2.77", "192.0.2.77"},
		{AddressFull, "::ffff:192.0.2.77", "192.0.2.77"},
		{AddressFull, "fe80::1%eth0", "fe80::1"},
		{AddressTruncate, "192.0.2.77", "192.0.2.0"},
		{AddressTruncate, "::ffff:192.0.2.77", "192.0.2.0"},
		{AddressTruncate, "2001:db8:aaaa:bbbb::1", "2001:db8:aaaa::"},
	} {
		if got := AnonymizeAddr(tc.mode, key, netip.MustParseAddr(tc.in)); got.String() != tc.want {
			t.Errorf("AnonymizeAddr(%s, %s) = %s, want %s", tc.mode, tc.in, got, tc.want)
		}
	}
	// Hash: HMAC-SHA256 of the 16-byte form, first 16 bytes, first byte fd.
	for _, in := range []string{"192.0.2.77", "2001:db8::1", "::ffff:192.0.2.77"} {
		a := netip.MustParseAddr(in)
		got := AnonymizeAddr(AddressHash, key, a)
		m := hmac.New(sha256.New, key)
		b := a.Unmap().As16()
		m.Write(b[:])
		sum := m.Sum(nil)
		var want [16]byte
		copy(want[:], sum)
		want[0] = 0xfd
		if got != netip.AddrFrom16(want) {
			t.Errorf("hash(%s) = %s, want %s", in, got, netip.AddrFrom16(want))
		}
		if !netip.MustParsePrefix("fd00::/8").Contains(got) {
			t.Errorf("hash(%s) = %s outside fd00::/8", in, got)
		}
	}
	// A long key is hashed first, as HMAC does.
	long := make([]byte, 100)
	a := netip.MustParseAddr("198.51.100.1")
	m := hmac.New(sha256.New, long)
	b := a.As16()
	m.Write(b[:])
	var want [16]byte
	copy(want[:], m.Sum(nil))
	want[0] = 0xfd
	if got := AnonymizeAddr(AddressHash, long, a); got != netip.AddrFrom16(want) {
		t.Errorf("long key: %s, want %s", got, netip.AddrFrom16(want))
	}
	if AnonymizeAddr(AddressHash, []byte("other key 0123456789"), a) == AnonymizeAddr(AddressHash, key, a) {
		t.Error("different keys give the same hash")
	}
	var nilAnon *Anonymizer
	if got := nilAnon.Addr(netip.MustParseAddr("::ffff:1.2.3.4")); got.String() != "1.2.3.4" {
		t.Errorf("nil anonymizer: %s", got)
	}
	if _, err := NewAnonymizer(AddressHash, nil); err == nil {
		t.Error("hash without key accepted")
	}
	if _, err := ParseAddressMode("bogus"); err == nil {
		t.Error("bogus mode accepted")
	}
}

func TestFormatSeconds(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0 s"},
		{-1.5, "-1.5 s"},
		{0.0123, "12.3 ms"},
		{0.00085, "850 µs"},
		{850e-9, "850 ns"},
		{0.5e-9, "0.5 ns"},
		{0.0009996, "1 ms"},
		{59.9999, "1 min"},
		{90, "1.5 min"},
		{7200, "2 h"},
		{-3 * 86400, "-3 d"},
		{55.2 * 365.25 * 86400, "55.2 y"},
		{2000 * 365.25 * 86400, "2000 y"},
		{math.NaN(), "NaN"},
	} {
		if got := FormatSeconds(tc.v); got != tc.want {
			t.Errorf("FormatSeconds(%g) = %q, want %q", tc.v, got, tc.want)
		}
	}
	if FormatSecondsPtr(nil) != "-" {
		t.Error("nil is not -")
	}
}

func TestFormatRefID(t *testing.T) {
	for _, tc := range []struct {
		stratum uint8
		id      uint32
		want    string
	}{
		{1, 0x47505300, "GPS"},
		{0, 0x52415445, "RATE"},
		{0, 0, "0.0.0.0"},
		{1, 0x01020304, "1.2.3.4"},
		{2, 0x47505300, "71.80.83.0"},
		{3, 0xc0000201, "192.0.2.1"},
	} {
		if got := FormatRefID(tc.stratum, tc.id); got != tc.want {
			t.Errorf("FormatRefID(%d, %#x) = %q, want %q", tc.stratum, tc.id, got, tc.want)
		}
	}
}

func TestHistogram(t *testing.T) {
	// Buckets: edges are exact and increasing.
	if histBucket(0) != 0 || histBucket(99) != 0 || histBucket(100) != 1 || histBucket(math.MaxInt64) != histBuckets-1 {
		t.Errorf("bucket bounds: %d %d %d %d", histBucket(0), histBucket(99), histBucket(100), histBucket(math.MaxInt64))
	}
	if histBucket(int64(100*time.Millisecond)) != 61 || histEdges[60] != int64(100*time.Millisecond) {
		t.Errorf("100 ms is not an edge: bucket %d, edge %d", histBucket(int64(100*time.Millisecond)), histEdges[60])
	}
	for i := 1; i < len(histEdges); i++ {
		if histEdges[i] <= histEdges[i-1] {
			t.Fatalf("edges not increasing at %d", i)
		}
	}
	// Quantiles of a log-normal sample are within 13% of the exact ones.
	rng := rand.New(rand.NewPCG(7, 7))
	vals := make([]float64, 20000)
	s := sparseCounts{}
	var h hist
	for i := range vals {
		v := math.Exp(rng.NormFloat64()*2 + 13) // around 0.4 ms
		vals[i] = v
		s.add(histBucket(int64(v)), 1)
	}
	enc, _ := s.appendEncoded(nil, nil)
	if err := h.merge(enc); err != nil {
		t.Fatal(err)
	}
	sort.Float64s(vals)
	h.observeRange(vals[0], vals[len(vals)-1])
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got, ok := h.quantile(q)
		if !ok || math.Abs(got-exact)/exact > 0.13 {
			t.Errorf("q%.2f = %g, exact %g", q, got, exact)
		}
	}
	if _, ok := (&hist{}).quantile(0.5); ok {
		t.Error("empty histogram has a quantile")
	}
	if err := decodeSparse([]byte{5, 1, 3, 1}, func(int, uint64) {}); err == nil {
		t.Error("decreasing keys accepted")
	}
	if err := decodeSparse([]byte{0x80}, func(int, uint64) {}); err == nil {
		t.Error("truncated varint accepted")
	}
}
