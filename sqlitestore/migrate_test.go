package sqlitestore

import (
	"context"
	"database/sql"
	"math"
	"path/filepath"
	"testing"
	"time"
)

// schema1DB creates a database of schema 1, from its migration file as
// released, holding the tables of src (a database of this build) if src is
// not empty.
func schema1DB(t *testing.T, path, src string) {
	t.Helper()
	init, err := migrationFS.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", writerDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	stmts := []string{string(init), "PRAGMA user_version = 1"}
	if src != "" {
		stmts = append(stmts, "ATTACH DATABASE '"+src+"' AS src")
		for _, table := range []string{"observations", "clients", "client_hours", "hours"} {
			stmts = append(stmts, "INSERT INTO main."+table+" SELECT * FROM src."+table)
		}
		// Schema 1 records only the hourly rollups' cutoff.
		stmts = append(stmts, "INSERT INTO main.retention SELECT * FROM src.retention WHERE name = 'client_hours'")
		stmts = append(stmts, "DETACH DATABASE src")
	}
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
}

// TestMigrateFromSchema1 opens databases of schema 1 with this build: an
// empty one, and one with three days of rollups. Both are migrated to the
// current schema. The daily rollups of the second start the day after the
// upgrade, so queries keep reading hourly rollups for the days before:
// stats and anomalies, over rows written before and after the upgrade,
// must still match the reference queries on the hourly rollups.
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
			var reqs int64
			if tc.withData {
				// Rows written by this build, copied into a schema 1 file.
				r := statsFixture(t)
				src = r.Path()
				var err error
				if err = r.db.QueryRow("SELECT sum(requests) FROM client_hours").Scan(&reqs); err != nil {
					t.Fatal(err)
				}
			}
			cfg := testConfig(t)
			cfg.Path = filepath.Join(dir, "v1.db")
			cfg.Now = fixedNow
			schema1DB(t, cfg.Path, src)

			before := time.Now().Unix()
			s := openStore(t, cfg)
			after := time.Now().Unix()
			db := rawDB(t, cfg.Path)
			if v := queryInt(t, db, "PRAGMA user_version"); v != int64(SchemaVersion()) {
				t.Fatalf("user_version = %d after migration, want %d", v, SchemaVersion())
			}
			from := queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_from'")
			if tc.withData {
				// The first whole UTC day after the upgrade.
				if from%86400 != 0 || from <= before || from > after+86400 {
					t.Errorf("client_days_from = %d, want the start of the UTC day after %d", from, before)
				}
				if n := queryInt(t, db, "SELECT sum(requests) FROM client_hours"); n != reqs {
					t.Errorf("hourly rollups count %d requests after migration, want %d", n, reqs)
				}
			} else if from != math.MinInt64 {
				t.Errorf("client_days_from = %d in a database without rollups, want %d (daily rows from the start)", from, int64(math.MinInt64))
			}
			if n := queryInt(t, db, "SELECT count(*) FROM client_days"); n != 0 {
				t.Errorf("%d daily rollups right after migration, want 0 (not backfilled)", n)
			}

			// Write after the upgrade: the days of the fixture get partial
			// daily rows, which queries must not use.
			data := randomObservations(3, 2000)
			for i := range data {
				s.Observe(&data[i])
			}
			waitFor(t, "rows written", func() bool { return s.RowsWritten() == uint64(len(data)) })
			closeStore(t, s)
			if n := queryInt(t, db, "SELECT count(*) FROM client_days"); n == 0 {
				t.Errorf("no daily rollups written after migration")
			}
			r := openReader(t, cfg.Path)
			r.SetClock(fixedNow)
			ctx := context.Background()
			for _, hours := range []int{3, 24, 48, 100} {
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
		})
	}
}
