package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one schema step; version is the user_version it leaves.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order. File names start
// with their version number: 0001_init.sql leaves user_version 1.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		n := e.Name()
		num, _, ok := strings.Cut(n, "_")
		if !ok || !strings.HasSuffix(n, ".sql") {
			return nil, fmt.Errorf("sqlitestore: bad migration name %q", n)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: bad migration name %q", n)
		}
		b, err := migrationFS.ReadFile("migrations/" + n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: n, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("sqlitestore: migration %s out of sequence", m.name)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema this build writes and reads.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		panic(err)
	}
	return len(ms)
}

// Errors callers can test with errors.Is.
var (
	// ErrNewerSchema: the database was written by a newer ntpexp.
	ErrNewerSchema = errors.New("database schema is newer than this build")
	// ErrOlderSchema: a read-only open found a schema the server has not
	// migrated yet.
	ErrOlderSchema = errors.New("database schema is older than this build")
	// ErrLocked: another process holds a lock that did not clear within the
	// busy timeout.
	ErrLocked = errors.New("database is locked")
	// ErrNotFound: a client has no rows.
	ErrNotFound = errors.New("not found")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store is closed")
	// ErrInUse: another ntpexp process (serve, db vacuum) has the
	// database open for writing.
	ErrInUse = errors.New("database is in use by another ntpexp writer")
	// ErrInvalidArgument: a query argument is out of range or malformed
	// (the caller's mistake: the API answers 400, the CLI exits 2).
	ErrInvalidArgument = errors.New("invalid argument")
)

// argError is an ErrInvalidArgument whose message says what was wrong.
type argError struct{ msg string }

func (e *argError) Error() string        { return e.msg }
func (e *argError) Is(target error) bool { return target == ErrInvalidArgument }

func invalidf(format string, args ...any) error {
	return &argError{fmt.Sprintf(format, args...)}
}

const busyTimeoutMS = 5000

// writerCacheKiB is the writer connection's page cache. The pages every
// transaction touches (the index leaves of the clients it writes, the
// current hour's rollups, the clients table) stay in memory rather than
// being read back from the OS for every batch.
const writerCacheKiB = 64 << 10

// fileURI turns a path into an SQLite URI filename with options.
func fileURI(path string, opts url.Values) string {
	u := url.URL{Scheme: "file", Path: path, OmitHost: true}
	return u.String() + "?" + opts.Encode()
}

// writerDriver is go-sqlite3 with the SQL functions that the writer's
// statements call (histMergeFunc).
const writerDriver = "sqlite3_ntpexp_writer"

func init() {
	sql.Register(writerDriver, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		return c.RegisterFunc(histMergeFunc, histMerge, true)
	}})
}

// writerDSN is the single writer connection's DSN: WAL, immediate
// transactions (so a batch takes the write lock up front and waits for it
// in the busy handler rather than failing on upgrade), synchronous=NORMAL
// (durable at checkpoints; a power cut loses at most the last commits,
// never consistency), incremental auto-vacuum for new files.
func writerDSN(path string) string {
	v := url.Values{}
	v.Set("mode", "rwc")
	v.Set("_journal_mode", "WAL")
	v.Set("_txlock", "immediate")
	v.Set("_busy_timeout", strconv.Itoa(busyTimeoutMS))
	v.Set("_synchronous", "NORMAL")
	v.Set("_auto_vacuum", "incremental")
	v.Set("_cache_size", strconv.Itoa(-writerCacheKiB))
	// The single writer connection is only ever used by one goroutine at
	// a time (database/sql and the writer goroutine see to that), so
	// SQLite's per-connection mutex is pure overhead (about 5% of the
	// writer's CPU time).
	v.Set("_mutex", "no")
	return fileURI(path, v)
}

// writerPragmas are the writer connection's settings that its DSN cannot
// carry. The connection lives as long as the Store (one connection, no
// idle timeout), so setting them once after opening is enough.
var writerPragmas = []string{
	// Checkpoint when the WAL reaches 16384 pages (64 MiB at 4 KiB pages)
	// rather than 1000: a transaction of tens of thousands of rows writes
	// a few thousand pages, so the default would copy the WAL into the
	// database after nearly every commit, rewriting pages that the next
	// transactions modify again. The WAL shrinks back at checkpoints
	// (journal_size_limit) so it does not stay at its high-water mark.
	"PRAGMA wal_autocheckpoint = 16384",
	"PRAGMA journal_size_limit = 67108864",
	// Sorting and temporary B-trees (PRAGMA optimize, retention's IN
	// lists) stay in memory.
	"PRAGMA temp_store = MEMORY",
}

// readerDSN is a read-only connection's DSN. mode=ro makes SQLite refuse
// every write; transactions are deferred so reads take no write lock.
func readerDSN(path string) string {
	v := url.Values{}
	v.Set("mode", "ro")
	v.Set("_txlock", "deferred")
	v.Set("_busy_timeout", strconv.Itoa(busyTimeoutMS))
	return fileURI(path, v)
}

// checkDir explains a missing or unwritable database directory.
func checkDir(path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("database directory %s does not exist: create it (mkdir -p %s, owned by the user ntpexp runs as) or point database.path elsewhere", dir, dir)
	case err != nil:
		return fmt.Errorf("database directory %s: %w", dir, err)
	case !st.IsDir():
		return fmt.Errorf("database directory %s is not a directory: point database.path elsewhere", dir)
	}
	// SQLite creates the -wal and -shm files beside the database, so the
	// directory itself must be writable, not only the file.
	f, err := os.CreateTemp(dir, ".ntpexp-write-check-*")
	if err != nil {
		return fmt.Errorf("database directory %s is not writable by uid %d (%v): chown it to the user ntpexp runs as (chown ntpexp %s) or point database.path elsewhere", dir, os.Getuid(), err, dir)
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return nil
}

// createFile creates the database file 0600 if it does not exist, so that
// SQLite (which would use 0644) and its -wal/-shm files (which copy the
// database's mode) never expose observations to other users. It reports
// whether the file was created.
func createFile(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return true, f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("create database %s: %w", path, err)
	}
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return false, fmt.Errorf("database %s is not writable by uid %d: chown it to the user ntpexp runs as (chown ntpexp %s) or point database.path elsewhere", path, os.Getuid(), path)
		}
		return false, fmt.Errorf("open database %s: %w", path, err)
	}
	return false, f.Close()
}

// writerLock is held by the one process that writes a database: serve,
// or db vacuum. SQLite would let a second writer in, taking turns per
// transaction, but two writers' rollups and background steps would
// interleave, and a full VACUUM would stall serve's batches past the busy
// timeout. The lock is flock(2) on a file beside the database (SQLite
// itself uses fcntl locks, which flock does not touch); the kernel drops
// it when the process ends, however it ends.
type writerLock struct{ f *os.File }

func lockWriter(path string) (*writerLock, error) {
	// One lock per database file, however it is named.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("database lock file %s: %w (the database directory must be writable by the user ntpexp runs as)", name, err)
	}
	if os.Geteuid() == 0 {
		// As SQLite does for the -wal and -shm files: root's lock file
		// belongs to the database's owner, so that the service (another
		// user) can still open it read-write.
		owner := filepath.Dir(path)
		if _, err := os.Stat(path); err == nil {
			owner = path
		}
		if st, err := os.Stat(owner); err == nil {
			if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
				f.Chown(int(sys.Uid), int(sys.Gid))
			}
		}
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(name); rerr == nil && len(bytes.TrimSpace(b)) > 0 {
			holder = " (pid " + string(bytes.TrimSpace(b)) + ")"
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("database %s is open for writing by another ntpexp process%s, a running 'ntpexp serve' or 'ntpexp db vacuum'; a database has one writer: stop that process or point database.path elsewhere (queries, exports and backups work alongside it): %w", path, holder, ErrInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	// Who holds it, for the message above; best effort.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &writerLock{f}, nil
}

// release lets the next writer in. The file stays: removing it would let
// a process that opened it before the removal lock a file nobody else sees.
func (l *writerLock) release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// explain turns SQLite errors met while opening into messages that say
// what to do.
func explain(path string, err error) error {
	if err == nil {
		return nil
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrBusy, sqlite3.ErrLocked:
			return fmt.Errorf("database %s is locked by another process (%v); stop the other process or wait: %w", path, err, ErrLocked)
		case sqlite3.ErrNotADB, sqlite3.ErrCorrupt:
			return fmt.Errorf("%s is not a usable ntpexp database (%v); point database.path elsewhere", path, err)
		case sqlite3.ErrReadonly, sqlite3.ErrPerm, sqlite3.ErrAuth:
			return fmt.Errorf("database %s is not writable (%v): chown it and its directory to the user ntpexp runs as", path, err)
		case sqlite3.ErrCantOpen:
			return fmt.Errorf("cannot open database %s (%v): check that the file and its directory exist and are readable", path, err)
		case sqlite3.ErrFull:
			return fmt.Errorf("database %s: disk full (%v)", path, err)
		}
	}
	return fmt.Errorf("database %s: %w", path, err)
}

func newerSchemaError(path string, have, known int) error {
	return fmt.Errorf("database %s was written by a newer ntpexp (schema %d, this build knows %d); upgrade ntpexp or point database.path elsewhere: %w", path, have, known, ErrNewerSchema)
}

// migrate brings the schema to the latest version, one transaction per
// migration, recording progress in PRAGMA user_version.
func migrate(ctx context.Context, db *sql.DB, path string) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	var have int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&have); err != nil {
		return explain(path, err)
	}
	if have > len(ms) {
		return newerSchemaError(path, have, len(ms))
	}
	if have == 0 {
		// A file with tables but no version is someone else's database.
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n); err != nil {
			return explain(path, err)
		}
		if n > 0 {
			return fmt.Errorf("%s holds tables but no ntpexp schema version; it is not an ntpexp database: point database.path elsewhere", path)
		}
	}
	for _, m := range ms[have:] {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return explain(path, err)
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			tx.Rollback()
			return fmt.Errorf("database %s: migration %s: %w", path, m.name, explain(path, err))
		}
		// user_version is part of the database header, so setting it in
		// the transaction commits the step atomically.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.version)); err != nil {
			tx.Rollback()
			return explain(path, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("database %s: migration %s: %w", path, m.name, explain(path, err))
		}
	}
	return nil
}

// isBusy reports whether err is a lock conflict worth retrying.
func isBusy(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked
	}
	return false
}

// fileSize returns the size of a file, 0 when it does not exist.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
