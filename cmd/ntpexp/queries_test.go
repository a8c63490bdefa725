package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/exporter/api"
	"github.com/ntpexp/ntpexp/ntp"
	"github.com/ntpexp/ntpexp/sqlitestore"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the commands' current output")

// goldenNow is the fixed "now" of the golden tests: the fixture's requests
// are placed relative to it and the query commands measure their windows
// from it.
var goldenNow = time.Date(2025, 3, 14, 15, 30, 0, 0, time.UTC)

// fixtureRequest is one request of the golden fixture.
type fixtureRequest struct {
	ago    time.Duration // before goldenNow
	client string        // address:port
	mutate func(o *ntp.Observation)
}

// exchange, apparent and hidden set how a request reveals the client's
// clock; version, impl and drop set the rest.
func exchange(off, delay time.Duration) func(*ntp.Observation) {
	return func(o *ntp.Observation) { o.Method, o.Offset, o.Delay = ntp.MethodExchange, off, delay }
}

func apparent(off time.Duration) func(*ntp.Observation) {
	return func(o *ntp.Observation) { o.Method, o.Offset = ntp.MethodApparent, off }
}

func with(fs ...func(*ntp.Observation)) func(*ntp.Observation) {
	return func(o *ntp.Observation) {
		for _, f := range fs {
			f(o)
		}
	}
}

func impl(i ntp.Implementation, version uint8, poll int8) func(*ntp.Observation) {
	return func(o *ntp.Observation) { o.Implementation, o.Version, o.Poll = i, version, poll }
}

func drop(d ntp.DropReason, kod bool) func(*ntp.Observation) {
	return func(o *ntp.Observation) {
		o.Drop, o.KoD, o.Processing = d, kod, 0
		if !kod { // a kiss-o'-death is a reply; other drops send nothing
			o.ReplyLength, o.ServerTransmit = 0, 0
		}
	}
}

// fixtureRequests are the golden fixture's clients, one of each kind the
// query commands tell apart:
//
//	192.0.2.10      chrony, good clock and path, 3 days of history
//	198.51.100.7    ntpd, clock 200 ms fast (offset anomaly)
//	2001:db8::53    timesyncd over IPv6, hides its clock
//	203.0.113.5     ntpdate, clock 3 hours slow (clock_wrong_hours)
//	203.0.113.99    ntpdig, rate limited with kiss-o'-death replies
//	192.0.2.200     ntpsec, long round trips (delay anomaly)
//	198.51.100.250  chrony, last seen 3 days ago (not active)
//	192.0.2.77      an NTPv1 request dropped as bad_version
func fixtureRequests() []fixtureRequest {
	var rs []fixtureRequest
	add := func(ago time.Duration, client string, fs ...func(*ntp.Observation)) {
		rs = append(rs, fixtureRequest{ago: ago, client: client, mutate: with(fs...)})
	}
	chrony := impl(ntp.ImplChrony, 4, 6)
	for i, ago := range []time.Duration{70 * time.Hour, 47 * time.Hour, 30 * time.Hour, 5 * time.Hour,
		3*time.Hour + 10*time.Minute, 2 * time.Hour, 61 * time.Minute, 20 * time.Minute} {
		add(ago, "192.0.2.10:123", chrony,
			exchange(time.Duration(120+15*i)*time.Microsecond, time.Duration(8000+350*i)*time.Microsecond))
	}
	ntpd := impl(ntp.ImplNTPd, 4, 10)
	for i := 0; i < 5; i++ {
		add(time.Duration(17*i+3)*time.Minute, "198.51.100.7:123", ntpd,
			exchange(time.Duration(210+4*i)*time.Millisecond, time.Duration(31+i)*time.Millisecond))
	}
	for i := 0; i < 3; i++ {
		add(time.Duration(35*i+12)*time.Minute+41*time.Second, "[2001:db8::53]:55123", impl(ntp.ImplTimesyncd, 4, 11))
	}
	for i := 0; i < 3; i++ {
		add(time.Duration(2*i+1)*time.Hour+7*time.Minute, "203.0.113.5:123", impl(ntp.ImplNTPdate, 3, 6),
			apparent(-3*time.Hour-time.Duration(2*i)*time.Second-450*time.Millisecond))
	}
	for i := 0; i < 8; i++ {
		fs := []func(*ntp.Observation){impl(ntp.ImplNTPdig, 4, 0), apparent(time.Duration(3+i) * time.Millisecond)}
		if i >= 3 {
			fs = append(fs, drop(ntp.DropRateLimit, i%2 == 1))
		}
		add(9*time.Minute-time.Duration(i)*2*time.Second, "203.0.113.99:40123", fs...)
	}
	for i := 0; i < 4; i++ {
		add(time.Duration(26+15*i)*time.Minute, "192.0.2.200:123", impl(ntp.ImplNTPsec, 4, 7),
			exchange(time.Duration(4+i)*time.Millisecond, time.Duration(180+25*i)*time.Millisecond))
	}
	for i := 0; i < 3; i++ {
		add(72*time.Hour-time.Duration(i)*64*time.Second, "198.51.100.250:123", chrony,
			exchange(-time.Duration(40+i)*time.Microsecond, 2*time.Millisecond+time.Duration(i)*100*time.Microsecond))
	}
	add(50*time.Minute, "192.0.2.77:123", impl(ntp.ImplUnknown, 1, 0), drop(ntp.DropBadVersion, false))
	return rs
}

// writeGoldenFixture writes the fixture's requests through the real
// store (so rows, client summaries and rollups are written as serve
// writes them) into a new database in dir and returns its path.
func writeGoldenFixture(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "golden.db")
	cfg := sqlitestore.Config{
		Path:          path,
		BatchSize:     1000,
		FlushInterval: time.Hour,
		Now:           func() time.Time { return goldenNow },
	}
	s, err := sqlitestore.Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("192.0.2.123:123")
	for _, r := range fixtureRequests() {
		at := goldenNow.Add(-r.ago)
		o := ntp.Observation{
			Received:       at,
			Client:         netip.MustParseAddrPort(r.client),
			Local:          local,
			Length:         48,
			ReplyLength:    48,
			Version:        4,
			Mode:           3,
			Precision:      -20,
			Origin:         ntp.TimestampFromTime(at.Add(-time.Second)),
			Transmit:       ntp.TimestampFromTime(at.Add(-5 * time.Millisecond)),
			ServerTransmit: ntp.TimestampFromTime(at.Add(25 * time.Microsecond)),
			Processing:     25 * time.Microsecond,
		}
		r.mutate(&o)
		s.Observe(&o)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := s.RowsWritten(); n != uint64(len(fixtureRequests())) {
		t.Fatalf("fixture: %d rows written, want %d", n, len(fixtureRequests()))
	}
	return path
}

// runGolden runs the ntpexp command line in-process, as main does.
func runGolden(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/ntpexp/ -run TestQueryGolden -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (if the change is intended, rerun with -update and review the diff):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestQueryGolden runs each query command, as the old tool's users type
// it, on a fixed database at a fixed time, and compares its output (the
// human table and --output json) with testdata/*.golden.
func TestQueryGolden(t *testing.T) {
	dir := t.TempDir()
	db := writeGoldenFixture(t, dir)
	conf := filepath.Join(dir, "config.json")
	if err := os.WriteFile(conf, []byte(`{"database": {"path": "`+db+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	saved := queryClock
	queryClock = func() time.Time { return goldenNow }
	t.Cleanup(func() { queryClock = saved })

	tests := []struct {
		golden string
		args   []string
		json   bool // also --output json
	}{
		{"list", []string{"list"}, true},
		{"list-active-24h", []string{"list", "--active", "--hours", "24"}, true},
		{"detail", []string{"detail", "192.0.2.10"}, true},
		{"detail-ipv6", []string{"detail", "2001:db8::53"}, false},
		{"stats-48h", []string{"stats", "--hours", "48"}, true},
		{"anomalies", []string{"anomalies", "--delay-threshold", "0.1", "--offset-threshold", "0.05"}, true},
		{"export-24h-json", []string{"export", "--hours", "24", "--format", "json"}, false},
		{"export-24h-csv", []string{"export", "--hours", "24", "--format", "csv"}, false},
		{"export-24h-ndjson", []string{"export", "--hours", "24", "--format", "ndjson"}, false},
		{"export-client-csv", []string{"export", "--client-ip", "203.0.113.99", "--format", "csv"}, false},
	}
	for _, tc := range tests {
		variants := [][]string{tc.args}
		if tc.json {
			variants = append(variants, append(append([]string{}, tc.args...), "--output", "json"))
		}
		for i, args := range variants {
			name := tc.golden + ".golden"
			if i == 1 {
				name = tc.golden + ".json.golden"
			}
			t.Run(name, func(t *testing.T) {
				stdout, stderr, code := runGolden(t, append([]string{"--config", conf}, args...)...)
				if code != 0 {
					t.Fatalf("ntpexp %s: exit %d: %s", strings.Join(args, " "), code, stderr)
				}
				if stderr != "" {
					t.Errorf("ntpexp %s wrote to stderr: %s", strings.Join(args, " "), stderr)
				}
				checkGolden(t, name, stdout)
			})
		}
	}
}

// goldenConfig writes the golden fixture and a config file pointing at it,
// and fixes the query clock.
func goldenConfig(t *testing.T) (conf, db string) {
	t.Helper()
	dir := t.TempDir()
	db = writeGoldenFixture(t, dir)
	conf = filepath.Join(dir, "config.json")
	if err := os.WriteFile(conf, []byte(`{"database": {"path": "`+db+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	saved := queryClock
	queryClock = func() time.Time { return goldenNow }
	t.Cleanup(func() { queryClock = saved })
	return conf, db
}

// TestQueryBadArguments: every mistake exits 2 with a message naming it,
// whether the command line or the store catches it.
func TestQueryBadArguments(t *testing.T) {
	conf, _ := goldenConfig(t)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"list", "--hours", "0"}, "--hours 0: must be a whole number of hours from 1 to 100000"},
		{[]string{"list", "--active", "--hours=-1"}, "--hours -1: must be"},
		{[]string{"stats", "--hours", "100001"}, "--hours 100001: must be"},
		{[]string{"stats", "--hours", "two"}, "--hours"},
		{[]string{"detail", "300.1.2.3"}, `"300.1.2.3" is not an IP address`},
		{[]string{"detail", "192.0.2.10", "--latest", "0"}, "--latest 0: must be from 1 to 10000"},
		{[]string{"anomalies", "--delay-threshold=-0.1"}, "must be more than 0 seconds"},
		{[]string{"anomalies", "--offset-threshold", "1e-10"}, "offset_threshold must be at least 1e-9 seconds"},
		{[]string{"export", "--hours=-1"}, "--hours -1: must be a whole number of hours from 0"},
		{[]string{"export", "--format", "xml"}, "--format"},
		{[]string{"export", "--client-ip", "192.0.2.300"}, `--client-ip "192.0.2.300": want an IP address or a CIDR prefix`},
		{[]string{"export", "--client-ip", "::ffff:192.0.2.0/64"}, "mixes IPv4-mapped and IPv6"},
	} {
		stdout, stderr, code := runGolden(t, append([]string{"--config", conf}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.msg) || stdout != "" {
			t.Errorf("ntpexp %s: exit %d, stderr %q, stdout %q; want exit %d and %q", strings.Join(tc.args, " "), code, stderr, stdout, exitUsage, tc.msg)
		}
	}
}

// TestExportToFile: -o writes the same rows as standard output, 0600 like
// the database; a failed export leaves neither the file nor a part file.
func TestExportToFile(t *testing.T) {
	conf, _ := goldenConfig(t)
	want, stderr, code := runGolden(t, "--config", conf, "export", "--format", "csv")
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "rows.csv")
	// An existing file is replaced only when the export is complete.
	if err := os.WriteFile(out, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runGolden(t, "--config", conf, "export", "--format", "csv", "-o", out); code != 0 {
		t.Fatalf("export -o: exit %d: %s", code, stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want || len(want) < 100 {
		t.Errorf("export -o wrote %d bytes, standard output got %d", len(got), len(want))
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Errorf("export file mode %v, want 0600", st.Mode().Perm())
	}

	// Through a symbolic link, the target is replaced, not the link.
	target := filepath.Join(t.TempDir(), "target.csv")
	link := filepath.Join(dir, "link.csv")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runGolden(t, "--config", conf, "export", "--format", "csv", "-o", link); code != 0 {
		t.Fatalf("export -o link: exit %d: %s", code, stderr)
	}
	if got, err := os.ReadFile(target); err != nil || string(got) != want {
		t.Errorf("export through a link: target holds %d bytes (%v), want %d", len(got), err, len(want))
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("export replaced the link itself: %v %v", st, err)
	}
	os.Remove(link)

	// The store refuses this prefix after the file is opened.
	failed := filepath.Join(dir, "failed.csv")
	if _, stderr, code := runGolden(t, "--config", conf, "export", "--client-ip", "::ffff:192.0.2.0/64", "-o", failed); code != exitUsage {
		t.Fatalf("failing export: exit %d: %s", code, stderr)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("after a failed export the directory holds %v, want only rows.csv", names)
	}

	if _, stderr, code := runGolden(t, "--config", conf, "export", "-o", filepath.Join(dir, "no-such-dir", "x.json")); code != exitFailure || !strings.Contains(stderr, "the directory must exist and be writable") {
		t.Errorf("export into a missing directory: exit %d, %q", code, stderr)
	}
}

// TestQueryAPIMatchesCLI: the API answers with the same content as the
// command line's --output json (and the same CSV), defaults included.
func TestQueryAPIMatchesCLI(t *testing.T) {
	conf, db := goldenConfig(t)
	r, err := sqlitestore.OpenReadOnly(db)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetClock(func() time.Time { return goldenNow })
	srv := httptest.NewServer(api.New(r, nil))
	defer srv.Close()
	for _, tc := range []struct {
		path string
		args []string
		raw  bool // compare bytes, not JSON values
	}{
		{"/api/clients", []string{"list", "--output", "json"}, false},
		{"/api/clients?active=true&hours=24", []string{"list", "--active", "--hours", "24", "--output", "json"}, false},
		{"/api/clients/192.0.2.10", []string{"detail", "192.0.2.10", "--output", "json"}, false},
		{"/api/clients/2001:db8::53?hours=5&latest=3", []string{"detail", "2001:db8::53", "--hours", "5", "--latest", "3", "--output", "json"}, false},
		{"/api/stats", []string{"stats", "--output", "json"}, false},
		{"/api/stats?hours=48", []string{"stats", "--hours", "48", "--output", "json"}, false},
		{"/api/anomalies", []string{"anomalies", "--output", "json"}, false},
		{"/api/anomalies?delay_threshold=0.01&offset_threshold=0.001&hours=72", []string{"anomalies", "--delay-threshold", "0.01", "--offset-threshold", "0.001", "--hours", "72", "--output", "json"}, false},
		{"/api/export?hours=24", []string{"export", "--hours", "24"}, false},
		{"/api/export?format=csv&client_ip=203.0.113.0/24", []string{"export", "--format", "csv", "--client-ip", "203.0.113.0/24"}, true},
		{"/api/export?format=ndjson", []string{"export", "--format", "ndjson"}, true},
	} {
		resp, err := srv.Client().Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s %v", tc.path, resp.StatusCode, body, err)
		}
		stdout, stderr, code := runGolden(t, append([]string{"--config", conf}, tc.args...)...)
		if code != 0 {
			t.Fatalf("ntpexp %s: exit %d: %s", strings.Join(tc.args, " "), code, stderr)
		}
		if len(stdout) < 20 {
			t.Fatalf("ntpexp %s: output too short to compare: %q", strings.Join(tc.args, " "), stdout)
		}
		if tc.raw {
			if string(body) != stdout {
				t.Errorf("GET %s differs from ntpexp %s:\n%s\n---\n%s", tc.path, strings.Join(tc.args, " "), body, stdout)
			}
			continue
		}
		var a, c any
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		if err := json.Unmarshal([]byte(stdout), &c); err != nil {
			t.Fatalf("ntpexp %s: %v", strings.Join(tc.args, " "), err)
		}
		if !reflect.DeepEqual(a, c) {
			t.Errorf("GET %s differs from ntpexp %s:\n%s\n---\n%s", tc.path, strings.Join(tc.args, " "), body, stdout)
		}
	}
}

// TestVacuumRefusedWhileWriting: db vacuum does not run beside another
// writer (a serve); it says who holds the database and what to do, and
// runs once the writer is gone.
func TestVacuumRefusedWhileWriting(t *testing.T) {
	conf, db := goldenConfig(t)
	s, err := sqlitestore.Open(context.Background(), sqlitestore.Config{Path: db}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runGolden(t, "--config", conf, "db", "vacuum")
	if code != exitFailure || !strings.Contains(stderr, fmt.Sprintf("(pid %d)", os.Getpid())) || !strings.Contains(stderr, "for a full VACUUM, stop it first") {
		t.Errorf("db vacuum beside a writer: exit %d, %q", code, stderr)
	}
	// Queries and backups need no lock.
	if _, stderr, code := runGolden(t, "--config", conf, "list"); code != 0 {
		t.Errorf("list beside a writer: exit %d: %s", code, stderr)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runGolden(t, "--config", conf, "db", "vacuum"); code != 0 {
		t.Errorf("db vacuum after the writer closed: exit %d: %s", code, stderr)
	}
}

// TestBackupCommand: db backup writes a 0600 copy that the query commands
// read like the original, and refuses to overwrite a file.
func TestBackupCommand(t *testing.T) {
	conf, _ := goldenConfig(t)
	dst := filepath.Join(t.TempDir(), "copy.db")
	_, stderr, code := runGolden(t, "--config", conf, "db", "backup", dst)
	if code != 0 || !strings.Contains(stderr, "written to "+dst) {
		t.Fatalf("db backup: exit %d: %s", code, stderr)
	}
	if st, err := os.Stat(dst); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("backup file: %v, %v", st, err)
	}
	want, _, _ := runGolden(t, "--config", conf, "stats", "--hours", "48", "--output", "json")
	got, stderr, code := runGolden(t, "--database.path", dst, "stats", "--hours", "48", "--output", "json")
	if code != 0 || got != want || len(want) < 100 {
		t.Errorf("stats on the backup (exit %d, %s) differ from the original:\n%s\n---\n%s", code, stderr, got, want)
	}
	if _, stderr, code := runGolden(t, "--config", conf, "db", "backup", dst); code != exitUsage || !strings.Contains(stderr, "already exists") {
		t.Errorf("db backup onto an existing file: exit %d: %s", code, stderr)
	}
}
