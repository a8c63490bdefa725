package sqlitestore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden files")

// fixture writes a small fixed dataset relative to t0 and returns a
// Reader whose clock is t0.
//
//	192.0.2.10    chrony v4, 4 exchanges, one with a 150 ms delay
//	2001:db8::20  ntpd v3, clock 2 h ahead (apparent offsets)
//	198.51.100.30 unknown v4, no clock info, 2 of 5 rate limited (1 KoD)
//	203.0.113.40  seen 3 days ago only, apparent offset 200 ms
//	192.0.2.50    sntp, one apparent offset of 80 ms
func fixture(t *testing.T) (*Reader, string) {
	t.Helper()
	cfg := testConfig(t)
	cfg.Now = fixedNow
	s := openStore(t, cfg)
	var all []ntp.Observation
	add := func(o ntp.Observation) { all = append(all, o) }
	m := time.Millisecond
	for i, x := range []struct {
		ago        time.Duration
		off, delay time.Duration
	}{{3 * time.Hour, 1 * m, 10 * m}, {2 * time.Hour, 2 * m, 20 * m}, {time.Hour, -3 * m, 150 * m}, {10 * time.Minute, m / 2, 15 * m}} {
		o := withOffset(obs(t0.Add(-x.ago), "192.0.2.10:123"), ntp.MethodExchange, x.off, x.delay)
		o.Poll = int8(6 + i)
		add(o)
	}
	for _, ago := range []time.Duration{30, 20, 10} {
		o := withOffset(obs(t0.Add(-ago*time.Minute), "[2001:db8::20]:123"), ntp.MethodApparent, 2*time.Hour+ago*time.Second, 0)
		o.Version, o.Implementation, o.Poll = 3, ntp.ImplNTPd, 10
		add(o)
	}
	for i := 0; i < 5; i++ {
		o := obs(t0.Add(-5*time.Minute+time.Duration(i)*time.Second), "198.51.100.30:40123")
		o.Implementation = ntp.ImplUnknown
		o.Stratum, o.RefID = 1, 0x47505300 // "GPS"
		if i >= 3 {
			o.Drop, o.ReplyLength, o.Processing, o.ServerTransmit = ntp.DropRateLimit, 0, 0, 0
			o.KoD = i == 4
		}
		add(o)
	}
	add(withOffset(obs(t0.Add(-72*time.Hour), "203.0.113.40:123"), ntp.MethodApparent, 200*m, 0))
	e := withOffset(obs(t0.Add(-2*time.Hour), "192.0.2.50:123"), ntp.MethodApparent, 80*m, 0)
	e.Implementation = ntp.ImplSNTP
	add(e)
	for i := range all {
		s.Observe(&all[i])
	}
	closeStore(t, s)
	r := openReader(t, cfg.Path)
	r.SetClock(fixedNow)
	return r, cfg.Path
}

// golden compares v's indented JSON with testdata/name.golden.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n%s", name, path, got)
	}
}

func TestQueriesGolden(t *testing.T) {
	r, _ := fixture(t)
	ctx := context.Background()

	all, err := r.ListClients(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "clients", all)
	active, err := r.ListClients(ctx, ListOptions{Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || len(active) != 4 {
		t.Errorf("%d clients, %d active in 24 h; want 5 and 4", len(all), len(active))
	}
	if lim, _ := r.ListClients(ctx, ListOptions{Limit: 2}); len(lim) != 2 {
		t.Errorf("Limit 2 gave %d rows", len(lim))
	}
	if old, _ := r.ListClients(ctx, ListOptions{Active: true, Hours: 96}); len(old) != 5 {
		t.Errorf("active within 96 h: %d, want 5", len(old))
	}

	st, err := r.Stats(ctx, 24)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "stats", st)
	if st.Requests != 13 || st.Answered != 11 || st.UniqueClients != 4 {
		t.Errorf("stats: %d requests, %d answered, %d clients", st.Requests, st.Answered, st.UniqueClients)
	}
	if st.ClientsRevealingClock != 3 || st.ClientsNotRevealingClock != 1 {
		t.Errorf("revealing %d, not %d; want 3, 1", st.ClientsRevealingClock, st.ClientsNotRevealingClock)
	}

	an, err := r.Anomalies(ctx, AnomalyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "anomalies", an)
	var kinds []string
	for _, a := range an.Anomalies {
		kinds = append(kinds, a.Kind+" "+a.ClientIP.String())
	}
	want := []string{"clock_wrong_hours 2001:db8::20", "offset 192.0.2.50", "delay 192.0.2.10", "rate_limited 198.51.100.30"}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("anomalies = %q, want %q", kinds, want)
	}

	d, err := r.ClientDetail(ctx, netip.MustParseAddr("192.0.2.10"), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "detail", d)
	if len(d.Latest) != 2 || len(d.History) != 4 {
		t.Errorf("detail: %d latest, %d hours", len(d.Latest), len(d.History))
	}
	if _, err := r.ClientDetail(ctx, netip.MustParseAddr("192.0.2.99"), 0, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown client: %v", err)
	}

	// Human rendering does not fail and shows natural units.
	var buf bytes.Buffer
	for _, f := range []func() error{
		func() error { return RenderClients(&buf, all) },
		func() error { return RenderStats(&buf, st) },
		func() error { return RenderAnomalies(&buf, an) },
		func() error { return RenderClientDetail(&buf, d) },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{"150 ms", "2 h", "192.0.2.10", "clock_wrong_hours", "2025-03-14T15:20:00Z"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("rendering lacks %q:\n%s", s, buf.String())
		}
	}
	if testing.Verbose() {
		t.Logf("rendered:\n%s", buf.String())
	}
}

func TestQueryParameterValidation(t *testing.T) {
	r, _ := fixture(t)
	ctx := context.Background()
	if _, err := r.ListClients(ctx, ListOptions{Hours: -1}); err == nil {
		t.Error("negative hours accepted")
	}
	if _, err := r.ListClients(ctx, ListOptions{Limit: -1}); err == nil {
		t.Error("negative limit accepted")
	}
	if _, err := r.Stats(ctx, MaxHours+1); err == nil {
		t.Error("huge hours accepted")
	}
	if _, err := r.Anomalies(ctx, AnomalyOptions{DelayThreshold: -1}); err == nil {
		t.Error("negative threshold accepted")
	}
	if _, err := r.ClientDetail(ctx, netip.Addr{}, 0, 0); err == nil {
		t.Error("invalid address accepted")
	}
	if _, err := r.Export(ctx, ExportOptions{Format: "xml"}, &bytes.Buffer{}, nil); err == nil {
		t.Error("format xml accepted")
	}
}

func TestExportFormats(t *testing.T) {
	r, _ := fixture(t)
	ctx := context.Background()
	const total = 14

	var buf bytes.Buffer
	var progress []int64
	n, err := r.Export(ctx, ExportOptions{Format: FormatJSON}, &buf, func(rows int64) { progress = append(progress, rows) })
	if err != nil || n != total {
		t.Fatalf("Export json = %d, %v", n, err)
	}
	if len(progress) == 0 || progress[len(progress)-1] != total {
		t.Errorf("progress calls %v", progress)
	}
	var rows []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
		t.Fatalf("export is not valid JSON: %v\n%s", err, buf.String())
	}
	if len(rows) != total {
		t.Fatalf("%d JSON rows, want %d", len(rows), total)
	}
	for _, f := range ObservationFields {
		if _, ok := rows[0][f]; !ok {
			t.Errorf("JSON row lacks %q", f)
		}
	}
	if len(rows[0]) != len(ObservationFields) {
		t.Errorf("JSON row has %d keys, CSV header %d", len(rows[0]), len(ObservationFields))
	}
	// Oldest first; the 3-day-old client leads.
	if rows[0]["client_ip"] != "203.0.113.40" || rows[0]["time"] != "2025-03-11T15:30:00.000000000Z" {
		t.Errorf("first row %v", rows[0])
	}
	var typed []ObservationRow
	if err := json.Unmarshal(buf.Bytes(), &typed); err != nil {
		t.Fatal(err)
	}
	var gps, rl int
	for _, o := range typed {
		if o.RefID == "GPS" {
			gps++
		}
		if o.DropReason == "rate_limit" {
			rl++
			if o.OffsetSeconds != nil || o.OffsetMethod != "none" {
				t.Errorf("dropped row has offset %v %s", o.OffsetSeconds, o.OffsetMethod)
			}
		}
	}
	if gps != 5 || rl != 2 {
		t.Errorf("ref_id GPS rows %d (want 5), rate_limit rows %d (want 2)", gps, rl)
	}

	buf.Reset()
	if n, err := r.Export(ctx, ExportOptions{Format: FormatCSV}, &buf, nil); err != nil || n != total {
		t.Fatalf("Export csv = %d, %v", n, err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != total+1 || !reflect.DeepEqual(recs[0], ObservationFields) {
		t.Fatalf("csv: %d records, header %v", len(recs), recs[0])
	}

	buf.Reset()
	if n, err := r.Export(ctx, ExportOptions{Format: FormatNDJSON}, &buf, nil); err != nil || n != total {
		t.Fatalf("Export ndjson = %d, %v", n, err)
	}
	sc := bufio.NewScanner(&buf)
	lines := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("ndjson line %d: %v", lines, err)
		}
		lines++
	}
	if lines != total {
		t.Errorf("%d ndjson lines, want %d", lines, total)
	}

	// Filters.
	count := func(o ExportOptions) int64 {
		t.Helper()
		n, err := r.Export(ctx, o, &bytes.Buffer{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct {
		o    ExportOptions
		want int64
	}{
		{ExportOptions{Hours: 24}, 13},
		{ExportOptions{Hours: 1}, 10}, // exact window, from 14:30:00 inclusive
		{ExportOptions{Client: netip.MustParsePrefix("192.0.2.0/24")}, 5},
		{ExportOptions{Client: netip.MustParsePrefix("192.0.2.10/32")}, 4},
		{ExportOptions{Client: netip.MustParsePrefix("::ffff:192.0.2.10/128")}, 4},
		{ExportOptions{Client: netip.MustParsePrefix("2001:db8::/32")}, 3},
		{ExportOptions{Client: netip.MustParsePrefix("0.0.0.0/0")}, 11},
		{ExportOptions{Client: netip.MustParsePrefix("::/0")}, 3},
		{ExportOptions{Client: netip.MustParsePrefix("198.51.100.0/24"), Hours: 1}, 5},
	} {
		if got := count(tc.o); got != tc.want {
			t.Errorf("Export(%+v) = %d rows, want %d", tc.o, got, tc.want)
		}
	}

	// Empty result is still a valid JSON array.
	buf.Reset()
	if _, err := r.Export(ctx, ExportOptions{Client: netip.MustParsePrefix("10.0.0.0/8")}, &buf, nil); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(buf.String()) != "[]" {
		t.Errorf("empty export = %q", buf.String())
	}
}

func TestObservationFieldsMatchJSONTags(t *testing.T) {
	typ := reflect.TypeOf(ObservationRow{})
	var tags []string
	for i := 0; i < typ.NumField(); i++ {
		tags = append(tags, strings.Split(typ.Field(i).Tag.Get("json"), ",")[0])
	}
	if !reflect.DeepEqual(tags, ObservationFields) {
		t.Errorf("JSON tags %v\n!= CSV header %v", tags, ObservationFields)
	}
	var o ObservationRow
	if got := len(o.appendCSV(nil)); got != len(ObservationFields) {
		t.Errorf("CSV record has %d fields, header %d", got, len(ObservationFields))
	}
}
