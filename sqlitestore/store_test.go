package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

func TestOpenCreatesDatabase(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	st, err := os.Stat(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("database mode = %v, want 0600", m)
	}
	db := rawDB(t, cfg.Path)
	if v := queryInt(t, db, "PRAGMA user_version"); v != int64(SchemaVersion()) {
		t.Errorf("user_version = %d, want %d", v, SchemaVersion())
	}
	if v := queryInt(t, db, "PRAGMA auto_vacuum"); v != 2 {
		t.Errorf("auto_vacuum = %d, want 2 (incremental)", v)
	}
	var jm string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&jm); err != nil || jm != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", jm, err)
	}
	for _, tbl := range []string{"observations", "clients", "client_hours"} {
		if n := queryInt(t, db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?", tbl); n != 1 {
			t.Errorf("table %s missing", tbl)
		}
	}
	// SQLite gives the -wal and -shm files the database's mode.
	for _, suffix := range []string{"-wal", "-shm"} {
		st, err := os.Stat(cfg.Path + suffix)
		if err != nil {
			t.Errorf("%s: %v", suffix, err)
		} else if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", suffix, st.Mode().Perm())
		}
	}
	closeStore(t, s)
	// Reopening migrates nothing and works.
	s = openStore(t, cfg)
	closeStore(t, s)
	// A closed store's database opens read-only (WAL files gone).
	r := openReader(t, cfg.Path)
	if _, err := r.ListClients(context.Background(), ListOptions{}); err != nil {
		t.Fatalf("ListClients after close: %v", err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	closeStore(t, s)
	{
		db := rawWriteDB(t, cfg.Path)
		if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	_, err := Open(context.Background(), cfg, nil)
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open: err = %v, want ErrNewerSchema", err)
	}
	want := fmt.Sprintf("was written by a newer ntpexp (schema 99, this build knows %d); upgrade ntpexp or point database.path elsewhere", SchemaVersion())
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), cfg.Path) {
		t.Errorf("error %q lacks %q and the path", err, want)
	}
	if _, err := OpenReadOnly(cfg.Path); !errors.Is(err, ErrNewerSchema) {
		t.Errorf("OpenReadOnly: err = %v, want ErrNewerSchema", err)
	}
}

func TestOpenRefusesForeignDatabase(t *testing.T) {
	cfg := testConfig(t)
	db := rawWriteDB(t, cfg.Path)
	if _, err := db.Exec("CREATE TABLE other (x)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "not an ntpexp database") {
		t.Fatalf("Open foreign db: err = %v", err)
	}
	if err := os.WriteFile(cfg.Path, []byte("this is not sqlite, definitely not a database file at all......................................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "not a usable ntpexp database") {
		t.Fatalf("Open garbage: err = %v", err)
	}
}

func TestOpenMissingDirectory(t *testing.T) {
	cfg := testConfig(t)
	cfg.Path = filepath.Join(t.TempDir(), "missing", "ntpexp.db")
	_, err := Open(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "does not exist: create it") || !strings.Contains(err.Error(), filepath.Dir(cfg.Path)) {
		t.Fatalf("err = %v", err)
	}
	if _, err := OpenReadOnly(cfg.Path); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("OpenReadOnly: err = %v", err)
	}
}

func TestOpenUnwritableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		// Root writes any directory: check as nobody instead.
		peers.RerunAsNobody(t, "TestOpenUnwritableDirectory")
		return
	}
	cfg := testConfig(t)
	dir := filepath.Dir(cfg.Path)
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	_, err := Open(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "is not writable") || !strings.Contains(err.Error(), "chown") {
		t.Fatalf("err = %v", err)
	}
}

func TestOpenLockedDatabase(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	closeStore(t, s)
	// Another process holding an exclusive lock looks like this.
	db := rawWriteDB(t, cfg.Path)
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"PRAGMA locking_mode = EXCLUSIVE", "BEGIN EXCLUSIVE", "INSERT INTO clients (client, first_seen_ns, last_seen_ns, requests, drops, last_version, last_mode, last_poll, last_implementation) VALUES (x'01020304', 0, 0, 0, 0, 0, 0, 0, 0)"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	defer conn.ExecContext(ctx, "ROLLBACK")
	start := time.Now()
	_, err = Open(ctx, cfg, nil)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
	t.Logf("locked error after %v: %v", time.Since(start), err)
}

func TestConfigValidate(t *testing.T) {
	base := Config{Path: "/tmp/x.db"}
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Path = "" }, "database.path must be set"},
		{func(c *Config) { c.Path = ":memory:" }, "database.path must be a plain file path"},
		{func(c *Config) { c.BatchSize = -1 }, "database.batch_size must be > 0"},
		{func(c *Config) { c.FlushInterval = -time.Second }, "database.flush_interval must be > 0"},
		{func(c *Config) { c.QueueSize = -5 }, "database.queue_size must be > 0"},
		{func(c *Config) { c.QueueSize = 10; c.BatchSize = 20 }, "database.queue_size (10) must be >= database.batch_size (20)"},
		{func(c *Config) { c.RetentionDays = -1 }, "database.retention_days must be > 0"},
		{func(c *Config) { c.RetentionDays = 50; c.RollupRetentionDays = 40 }, "database.rollup_retention_days (40) must be >= database.retention_days (50)"},
		{func(c *Config) { c.CleanupInterval = -1 }, "database.cleanup_interval must be > 0"},
		{func(c *Config) { c.AddressMode = "scramble" }, `database.address_mode must be full, truncate or hash, not "scramble"`},
		{func(c *Config) { c.AddressMode = AddressHash }, "database.address_key must be at least 16 bytes"},
	} {
		c := base
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want %q", err, tc.want)
		}
	}
	if err := base.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	if _, err := Open(context.Background(), Config{Path: "/tmp/x.db", BatchSize: -3}, nil); err == nil {
		t.Error("Open accepted an invalid config")
	}
}

func TestOpenPathWithSpecialCharacters(t *testing.T) {
	cfg := testConfig(t)
	cfg.Path = filepath.Join(t.TempDir(), "we ird?#%&name.db")
	s := openStore(t, cfg)
	closeStore(t, s)
	if _, err := os.Stat(cfg.Path); err != nil {
		t.Fatalf("database not at its path: %v", err)
	}
	r := openReader(t, cfg.Path)
	if _, err := r.Stats(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
}

// TestOneWriterPerDatabase: a second writer on the same file is refused
// with the first one's pid, readers are not; once the first closes, the
// next writer gets in.
func TestOneWriterPerDatabase(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	_, err := Open(context.Background(), cfg, nil)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", os.Getpid())) {
		t.Fatalf("second writer: err = %v, want ErrInUse naming pid %d", err, os.Getpid())
	}
	if st, err := os.Stat(cfg.Path + ".lock"); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v", st, err)
	}
	r, err := OpenReadOnly(cfg.Path)
	if err != nil {
		t.Fatalf("reader beside the writer: %v", err)
	}
	r.Close()
	closeStore(t, s)
	s2 := openStore(t, cfg)
	closeStore(t, s2)
}

// TestLockFileOwnedByDatabaseOwner: root (an operator's db vacuum) leaves
// the lock file to the database's owner, so the service, running as
// that user, can still take the lock.
func TestLockFileOwnedByDatabaseOwner(t *testing.T) {
	peers.RequireRoot(t, "create files as root for another user")
	cfg := testConfig(t)
	dir := filepath.Dir(cfg.Path)
	const uid, gid = 65534, 65534
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	closeStore(t, openStore(t, cfg))
	if err := os.Chown(cfg.Path, uid, gid); err != nil {
		t.Fatal(err)
	}
	os.Remove(cfg.Path + ".lock")
	closeStore(t, openStore(t, cfg)) // as root
	st, err := os.Stat(cfg.Path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != uid || sys.Gid != gid {
		t.Errorf("lock file owned by %d:%d, want the database's %d:%d", sys.Uid, sys.Gid, uid, gid)
	}
}
