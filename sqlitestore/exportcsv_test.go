package sqlitestore

import (
	"bytes"
	"context"
	"database/sql/driver"
	"encoding/csv"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// referenceCSV renders rows the slow, obviously right way: obsScan.row,
// appendCSV and encoding/csv.
func referenceCSV(t *testing.T, rows [][]driver.Value) []byte {
	t.Helper()
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	cw.Write(ObservationFields)
	for _, v := range rows {
		var sc obsScan
		targets := sc.targets()
		for i, x := range v {
			switch p := targets[i].(type) {
			case *int64:
				*p, _ = x.(int64)
			case *[]byte:
				*p, _ = x.([]byte)
			case interface{ Scan(any) error }:
				if err := p.Scan(x); err != nil {
					t.Fatal(err)
				}
			}
		}
		var row ObservationRow
		sc.row(&row)
		cw.Write(row.appendCSV(nil))
	}
	cw.Flush()
	return buf.Bytes()
}

func TestExportCSVMatchesEncodingCSV(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(xs ...int64) int64 { return xs[rng.IntN(len(xs))] }
	wild := func() int64 {
		switch rng.IntN(4) {
		case 0:
			return int64(rng.Uint64())
		case 1:
			return rng.Int64N(2e9) - 1e9
		case 2:
			return pick(0, 1, -1, 999999999, 1e9, -1e9, 1e15-1, 1e15, -1e15+1, -1e15, math.MaxInt64, math.MinInt64)
		}
		return rng.Int64N(1e16) - 5e15
	}
	refIDs := []int64{0, 0x47505300, 0x52415445, 0x2C222041, 0x20414243, 0x5C2E0000, 0x41420A00, 0xC0000201, 0x7F000001, 0xFFFFFFFF}
	var rows [][]driver.Value
	for n := 0; n < 20000; n++ {
		v := make([]driver.Value, 30)
		for i := range v {
			v[i] = rng.Int64N(300) - 20
		}
		v[0] = pick(wild(), time.Date(2025, 3, 14, 15, 30, 0, rng.IntN(1e9), time.UTC).UnixNano(), math.MinInt64, 0)
		addrs := []driver.Value{[]byte{192, 0, 2, 1}, netip.MustParseAddr("2001:db8::1").AsSlice(), nil, []byte{1, 2, 3}}
		v[1], v[3] = addrs[rng.IntN(2)], addrs[rng.IntN(len(addrs))]
		v[10] = pick(0, 1, 2, 16, 300)
		v[13], v[14] = pick(0, 1, 65536, 65535, 0x12345678, int64(rng.Uint32())), pick(0, 3, 0xFFFFFFFF)
		v[15] = refIDs[rng.IntN(len(refIDs))]
		v[16], v[27], v[28], v[29] = wild(), wild(), wild(), int64(rng.Uint64())
		v[17] = pick(wild(), 20000, 0)
		v[18], v[20], v[24] = rng.Int64N(12), rng.Int64N(4), rng.Int64N(12)
		v[21], v[22] = wild(), wild()
		if rng.IntN(3) == 0 {
			v[21] = nil
		}
		if rng.IntN(3) == 0 {
			v[22] = nil
		}
		rows = append(rows, v)
	}
	want := referenceCSV(t, rows)
	got := make([]byte, 0, len(want))
	for i, f := range ObservationFields {
		if i > 0 {
			got = append(got, ',')
		}
		got = appendCSVField(got, f)
	}
	got = append(got, '\n')
	for _, v := range rows {
		got = appendObservationCSV(got, v)
	}
	if !bytes.Equal(got, want) {
		g, w := bytes.Split(got, []byte("\n")), bytes.Split(want, []byte("\n"))
		for i := range w {
			if i >= len(g) || !bytes.Equal(g[i], w[i]) {
				t.Fatalf("line %d:\n got %s\nwant %s", i, g[i], w[i])
			}
		}
		t.Fatal("outputs differ")
	}
}

func TestAppendSecondsNS(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	check := func(ns int64) {
		t.Helper()
		want := strconv.FormatFloat(seconds(ns), 'f', -1, 64)
		if got := string(appendSecondsNS(nil, ns)); got != want {
			t.Fatalf("appendSecondsNS(%d) = %s, want %s", ns, got, want)
		}
	}
	for _, ns := range []int64{0, 1, -1, 10, 999999999, 1e9, 1e9 + 1, 1e15 - 1, -(1e15 - 1), 1e15, math.MaxInt64, math.MinInt64} {
		check(ns)
	}
	for i := 0; i < 1000000; i++ {
		e := rng.IntN(16)
		check(rng.Int64N(int64(math.Pow10(e))+1) * int64(1-2*rng.IntN(2)))
	}
}

func TestAppendTimeNS(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 1000000; i++ {
		ns := int64(rng.Uint64())
		if i%2 == 0 {
			ns = rng.Int64N(4e18) - 1e18
		}
		if got, want := string(appendTimeNS(nil, ns)), timeFromNS(ns).String(); got != want {
			t.Fatalf("appendTimeNS(%d) = %s, want %s", ns, got, want)
		}
	}
}

// TestExportCSVEndToEnd compares a real CSV export with the reference
// rendering of the same rows.
func TestExportCSVEndToEnd(t *testing.T) {
	r, _ := fixture(t)
	var buf bytes.Buffer
	if _, err := r.Export(context.Background(), ExportOptions{Format: FormatCSV}, &buf, nil); err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if _, err := r.Export(context.Background(), ExportOptions{Format: FormatNDJSON}, &js, nil); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(buf.Bytes())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(js.Bytes()), []byte("\n"))
	if len(recs) != len(lines)+1 {
		t.Fatalf("%d CSV records, %d JSON rows", len(recs), len(lines))
	}
	var want bytes.Buffer
	cw := csv.NewWriter(&want)
	cw.Write(ObservationFields)
	for _, l := range lines {
		var row ObservationRow
		if err := json.Unmarshal(l, &row); err != nil {
			t.Fatal(err)
		}
		cw.Write(row.appendCSV(nil))
	}
	cw.Flush()
	if !bytes.Equal(buf.Bytes(), want.Bytes()) {
		t.Errorf("CSV export:\n%s\nwant\n%s", buf.Bytes(), want.Bytes())
	}
}
