package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"
)

// schema1DB creates a database of schema 1, from its migration file as
// released, holding the tables of src (a database of this build) if src is
// not empty.
func schema1DB(t *testing.T, path, src string) { schemaDB(t, path, src, 1) }

// schemaDB creates a database of an older schema (1 or 2), from the
// migration files as released, holding the tables of src (a database of
// this build) as far as that schema has them, if src is not empty.
func schemaDB(t *testing.T, path, src string, version int) {
	t.Helper()
	var stmts []string
	for _, name := range []string{"migrations/0001_init.sql", "migrations/0002_client_days.sql"}[:version] {
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		stmts = append(stmts, string(b))
	}
	db, err := sql.Open("sqlite3", writerDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	stmts = append(stmts, fmt.Sprintf("PRAGMA user_version = %d", version))
	if src != "" {
		stmts = append(stmts, "ATTACH DATABASE '"+src+"' AS src")
		for _, table := range []string{"observations", "clients", "client_hours", "hours"} {
			stmts = append(stmts, "INSERT INTO main."+table+" SELECT * FROM src."+table)
		}
		if version == 1 {
			// Schema 1 records only the hourly rollups' cutoff.
			stmts = append(stmts, "INSERT INTO main.retention SELECT * FROM src.retention WHERE name = 'client_hours'")
		} else {
			stmts = append(stmts, "DELETE FROM main.retention", "INSERT INTO main.retention SELECT * FROM src.retention",
				`INSERT INTO main.client_days SELECT day, client, requests, drops, rate_limited, kod,
					offset_count, offset_min_ns, offset_max_ns, delay_count, delay_min_ns, delay_max_ns FROM src.client_days`)
		}
		stmts = append(stmts, "DETACH DATABASE src")
	}
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
}

// TestMigrateFromSchema2 opens a database of schema 2 with this build:
// its daily rollups have no histograms (NULL), and stay so when rows are
// added to their days; anomaly counts over them use the hourly
// histograms instead and must match the reference queries, as must
// stats, before and after writing into those days.
func TestMigrateFromSchema2(t *testing.T) {
	r := statsFixture(t)
	src := r.Path()
	days := queryInt(t, r.db, "SELECT count(*) FROM client_days")
	if days == 0 {
		t.Fatal("the fixture has no daily rollups to upgrade")
	}
	cfg := testConfig(t)
	cfg.Path = filepath.Join(t.TempDir(), "v2.db")
	cfg.Now = fixedNow
	schemaDB(t, cfg.Path, src, 2)
	s := openStore(t, cfg)
	db := rawDB(t, cfg.Path)
	if v := queryInt(t, db, "PRAGMA user_version"); v != int64(SchemaVersion()) {
		t.Fatalf("user_version = %d after migration, want %d", v, SchemaVersion())
	}
	if n := queryInt(t, db, "SELECT count(*) FROM client_days WHERE offset_hist IS NULL AND delay_hist IS NULL"); n != days {
		t.Errorf("%d of %d upgraded daily rows without histograms", n, days)
	}
	check := func() {
		t.Helper()
		rd := openReader(t, cfg.Path)
		rd.SetClock(fixedNow)
		checkQueriesMatchReference(t, rd)
	}
	check()
	// Late rows into the upgraded days, and new days.
	data := randomObservations(5, 3000)
	for i := range data {
		s.Observe(&data[i])
	}
	waitFor(t, "rows written", func() bool { return s.RowsWritten() == uint64(len(data)) })
	closeStore(t, s)
	if n := queryInt(t, db, "SELECT count(*) FROM client_days WHERE offset_hist IS NULL"); n < days {
		t.Errorf("%d daily rows without histograms after writing, want the %d upgraded ones at least", n, days)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM client_days WHERE offset_hist IS NOT NULL"); n == 0 {
		t.Error("no daily rows with histograms after writing")
	}
	unknownDayHistsOK = true
	defer func() { unknownDayHistsOK = false }()
	checkDailyRollups(t, db, false)
	check()
}

// TestMigrateFromSchema1 opens databases of schema 1 with this build: an
// empty one, and one with three days of rollups. Both are migrated to the
// current schema at once; the daily rollups of the second are then
// backfilled by the writer, an hour at a time, and stats and anomalies,
// over rows written before and after the upgrade, must match the
// reference queries on the hourly rollups.
func TestMigrateFromSchema1(t *testing.T) {
	tests := []struct {
		name     string
		withData bool
	}{
		{"empty", false},
		{"with data", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := ""
			var reqs, oldest int64
			if tc.withData {
				// Rows written by this build, copied into a schema 1 file.
				r := statsFixture(t)
				src = r.Path()
				if err := r.db.QueryRow("SELECT sum(requests), min(hour) FROM client_hours").Scan(&reqs, &oldest); err != nil {
					t.Fatal(err)
				}
			}
			cfg := testConfig(t)
			cfg.Path = filepath.Join(dir, "v1.db")
			cfg.Now = fixedNow
			schema1DB(t, cfg.Path, src)

			s := openStore(t, cfg)
			db := rawDB(t, cfg.Path)
			if v := queryInt(t, db, "PRAGMA user_version"); v != int64(SchemaVersion()) {
				t.Fatalf("user_version = %d after migration, want %d", v, SchemaVersion())
			}
			// Daily rollups from the hour of the upgrade, or from the start
			// in a database without rollups yet.
			if to := queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_to'"); to != hourOf(t0.UnixNano()) {
				t.Errorf("client_days_to = %d after migration, want the hour of the upgrade %d", to, hourOf(t0.UnixNano()))
			}
			if tc.withData {
				// The writer backfills on its own, between (no) batches.
				waitFor(t, "the backfill", func() bool {
					return queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_from'") == oldest
				})
			}
			from := queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_from'")
			if tc.withData {
				if from != oldest {
					t.Errorf("client_days_from = %d after the backfill, want the oldest hour %d", from, oldest)
				}
				if n := queryInt(t, db, "SELECT sum(requests) FROM client_hours"); n != reqs {
					t.Errorf("hourly rollups count %d requests after migration, want %d", n, reqs)
				}
				want := queryInt(t, db, "SELECT sum(requests) FROM client_hours WHERE hour < ?", hourOf(t0.UnixNano()))
				if n := queryInt(t, db, "SELECT sum(requests) FROM client_days"); n != want || want == 0 {
					t.Errorf("daily rollups count %d requests after the backfill, want %d (every hour before the upgrade's)", n, want)
				}
			} else if from != math.MinInt64 {
				t.Errorf("client_days_from = %d in a database without rollups, want %d (daily rows from the start)", from, int64(math.MinInt64))
			}

			// Write after the upgrade, into the backfilled hours (late rows).
			data := randomObservations(3, 2000)
			for i := range data {
				s.Observe(&data[i])
			}
			waitFor(t, "rows written", func() bool { return s.RowsWritten() == uint64(len(data)) })
			closeStore(t, s)
			checkDailyRollups(t, db, true)
			r := openReader(t, cfg.Path)
			r.SetClock(fixedNow)
			checkQueriesMatchReference(t, r)
		})
	}
}

// checkQueriesMatchReference compares Stats and Anomalies over several
// windows with the reference queries on the hourly rollups.
func checkQueriesMatchReference(t *testing.T, r *Reader) {
	t.Helper()
	ctx := context.Background()
	for _, hours := range []int{1, 3, 5, 16, 24, 35, 40, 48, 100} {
		got, err := r.Stats(ctx, hours)
		if err != nil {
			t.Fatal(err)
		}
		want, err := r.refStats(ctx, hours)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := jsonOf(t, got), jsonOf(t, want); g != w {
			t.Errorf("Stats(%d):\n got %s\nwant %s", hours, g, w)
		}
		o := AnomalyOptions{Hours: hours, OffsetThreshold: 0.004, DelayThreshold: 0.05}
		gotA, err := r.Anomalies(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		wantA, err := r.refAnomalies(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := jsonOf(t, gotA), jsonOf(t, wantA); g != w {
			t.Errorf("Anomalies(%+v):\n got %s\nwant %s", o, g, w)
		}
	}
}

// setDailyHists sets the daily rows' histograms to their hours' in
// [from, to), merged, as the writer keeps them.
func setDailyHists(t *testing.T, db *sql.DB, from, to int64) {
	t.Helper()
	m := hourHistsByDay(t, db, from, to)
	for k, h := range m {
		off, _ := h[0].appendEncoded([]byte{}, nil)
		delay, _ := h[1].appendEncoded([]byte{}, nil)
		if _, err := db.Exec(`UPDATE client_days SET offset_hist = ?, delay_hist = ? WHERE day = ? AND client = ?`,
			off, delay, k.day, []byte(k.client)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQueriesUseDailyRollupsOfTheirRange sets the daily rollups to the
// hours of a range (computed here from the hourly rollups, as they are
// defined), for ranges ending at, before and within days, with and
// without a retention cutoff: whatever the range, stats and anomalies
// must match the reference queries on the hourly rollups.
func TestQueriesUseDailyRollupsOfTheirRange(t *testing.T) {
	h := func(d time.Duration) int64 { return hourOf(t0.Add(d).UnixNano()) }
	ranges := []struct {
		name     string
		from, to int64
		cutoff   int64 // if not 0, retention then deletes hourly rollups before it
	}{
		{"everything", math.MinInt64, h(time.Hour), 0},
		{"up to the current hour", math.MinInt64, h(0), 0},
		{"up to midnight", math.MinInt64, dayOf(h(0)), 0},
		{"within yesterday", h(-30 * time.Hour), h(-20 * time.Hour), 0},
		{"from yesterday's midnight", dayOf(h(-24 * time.Hour)), h(-2 * time.Hour), 0},
		{"from mid-morning two days ago", h(-50 * time.Hour), h(-time.Hour), 0},
		{"none", math.MinInt64, math.MinInt64, 0},
		// Last, as it deletes rollups: a cutoff early in yesterday, whose
		// daily row then holds hours that are gone from the hourly
		// rollups (35 hours start at 05:00 yesterday).
		{"cut at 03:00 yesterday", math.MinInt64, h(0), dayOf(h(-24*time.Hour)) + 3*3600},
	}
	for _, v := range []struct{ expired, hists bool }{{false, true}, {true, true}, {false, false}, {true, false}} {
		expired := v.expired
		r := statsFixtureRetained(t, expired)
		db := rawWriteDB(t, r.Path())
		for _, rg := range ranges {
			// hists=false: daily rows without histograms, as written
			// before schema 3.
			t.Run(fmt.Sprintf("%s/expired=%v/hists=%v", rg.name, expired, v.hists), func(t *testing.T) {
				for _, q := range []string{
					`DELETE FROM client_days`,
					`INSERT INTO client_days (day, client, requests, drops, rate_limited, kod,
						offset_count, offset_min_ns, offset_max_ns, delay_count, delay_min_ns, delay_max_ns)
						SELECT hour - (hour % 86400 + 86400) % 86400 AS day, client,
						sum(requests), sum(drops), sum(rate_limited), sum(kod),
						sum(offset_count), min(offset_min_ns), max(offset_max_ns),
						sum(delay_count), min(delay_min_ns), max(delay_max_ns)
						FROM client_hours WHERE hour >= ?1 AND hour < ?2 GROUP BY day, client`,
					`UPDATE retention SET cutoff = ?1 WHERE name = 'client_days_from'`,
					`UPDATE retention SET cutoff = ?2 WHERE name = 'client_days_to'`,
				} {
					if _, err := db.Exec(q, rg.from, rg.to); err != nil {
						t.Fatal(err)
					}
				}
				if v.hists {
					setDailyHists(t, db, rg.from, rg.to)
				}
				if rg.cutoff != 0 {
					for _, q := range []string{
						`DELETE FROM client_hours WHERE hour < ?1`,
						`DELETE FROM hours WHERE hour < ?1`,
						`INSERT INTO retention (name, cutoff) VALUES ('client_hours', ?1)
							ON CONFLICT (name) DO UPDATE SET cutoff = max(cutoff, excluded.cutoff)`,
					} {
						if _, err := db.Exec(q, rg.cutoff); err != nil {
							t.Fatal(err)
						}
					}
				}
				checkQueriesMatchReference(t, r)
			})
		}
	}
}
