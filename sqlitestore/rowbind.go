package sqlitestore

/*
#include <stdint.h>

// The SQLite C API, from the amalgamation that github.com/mattn/go-sqlite3
// compiles into this binary (one SQLite library, two callers).
typedef struct sqlite3_stmt sqlite3_stmt;
extern int sqlite3_bind_int64(sqlite3_stmt*, int, long long);
extern int sqlite3_bind_null(sqlite3_stmt*, int);
extern int sqlite3_bind_blob(sqlite3_stmt*, int, const void*, int, void (*)(void*));
extern int sqlite3_step(sqlite3_stmt*);
extern int sqlite3_reset(sqlite3_stmt*);
extern int sqlite3_clear_bindings(sqlite3_stmt*);
typedef struct sqlite3 sqlite3;
extern sqlite3* sqlite3_db_handle(sqlite3_stmt*);
extern int sqlite3_extended_errcode(sqlite3*);
extern const char* sqlite3_errmsg(sqlite3*);

#define OBS_COLS 31
#define COL_CLIENT 1
#define COL_LOCAL 3

// One observations row: every column as an int64 but the two addresses,
// which are blobs of alen/llen bytes (llen 0: NULL); bit c of nulls makes
// column c NULL.
typedef struct {
	int64_t v[OBS_COLS];
	uint32_t nulls;
	uint8_t alen, llen;
	uint8_t addr[16], local[16];
} obs_row;

// insert_rows binds and steps stmt (sqlInsertObservation) once per row.
// It returns 0, or the failing SQLite result code with *done set to the
// rows inserted before it; the statement is left reset, without bindings.
static int insert_rows(sqlite3_stmt* st, const obs_row* rows, int n, int* done) {
	for (int i = 0; i < n; i++) {
		const obs_row* r = &rows[i];
		int rc = 0;
		for (int c = 0; c < OBS_COLS && rc == 0; c++) {
			if (r->nulls & (1u << c)) {
				rc = sqlite3_bind_null(st, c + 1);
			} else if (c == COL_CLIENT) {
				rc = sqlite3_bind_blob(st, c + 1, r->addr, r->alen, (void (*)(void*))0);
			} else if (c == COL_LOCAL) {
				rc = r->llen ? sqlite3_bind_blob(st, c + 1, r->local, r->llen, (void (*)(void*))0)
				             : sqlite3_bind_null(st, c + 1);
			} else {
				rc = sqlite3_bind_int64(st, c + 1, r->v[c]);
			}
		}
		if (rc == 0) {
			rc = sqlite3_step(st);
			if (rc == 101) { // SQLITE_DONE
				rc = 0;
			}
		}
		int rrc = sqlite3_reset(st);
		if (rc == 0) {
			rc = rrc;
		}
		if (rc != 0) {
			*done = i;
			sqlite3_clear_bindings(st);
			return rc;
		}
	}
	*done = n;
	// The blobs were bound without a copy: leave no pointer into Go
	// memory behind.
	sqlite3_clear_bindings(st);
	return 0;
}
*/
import "C"

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"unsafe"

	"github.com/mattn/go-sqlite3"

	"github.com/ntpexp/ntpexp/ntp"
)

// rowBinder inserts raw observations through the SQLite C API directly:
// rows are laid out in C-compatible records and a whole chunk is bound
// and stepped in one cgo call. Through database/sql/driver, each row
// costs a cgo call, an interface value per column (most of them
// allocated) and go-sqlite3's argument marshalling, about a fifth of the
// writer's CPU (docs/performance.md). The statement is still prepared,
// owned and finalised by go-sqlite3; only its handle is borrowed.
type rowBinder struct {
	rows []C.obs_row
}

const rowChunk = 256

// rowBinderEnabled: tests turn it off to compare with the driver path.
var rowBinderEnabled = true

func newRowBinder() *rowBinder {
	return &rowBinder{rows: make([]C.obs_row, 0, rowChunk)}
}

// errNoStmtHandle: go-sqlite3's statement no longer has the field this
// file reads (a newer go-sqlite3); the writer falls back to the driver.
var errNoStmtHandle = errors.New("sqlitestore: go-sqlite3 statement handle not found")

// rawStmt is SQLite's sqlite3_stmt.
type rawStmt = C.sqlite3_stmt

// stmtHandle returns the sqlite3_stmt of a go-sqlite3 statement.
func stmtHandle(st driver.Stmt) (*rawStmt, error) {
	s, ok := st.(*sqlite3.SQLiteStmt)
	if !ok {
		return nil, errNoStmtHandle
	}
	f := reflect.ValueOf(s).Elem().FieldByName("s")
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.Type().Elem().Name() != "_Ctype_struct_sqlite3_stmt" || f.IsNil() {
		return nil, errNoStmtHandle
	}
	return (*C.sqlite3_stmt)(unsafe.Pointer(f.Pointer())), nil
}

// add lays out one row (the columns of sqlInsertObservation, in order).
func (b *rowBinder) add(o *ntp.Observation, client []byte) {
	b.rows = b.rows[:len(b.rows)+1]
	r := &b.rows[len(b.rows)-1]
	v := &r.v
	v[0] = C.int64_t(o.Received.UnixNano())
	v[2] = C.int64_t(o.Client.Port())
	v[4] = C.int64_t(o.Local.Port())
	v[5] = C.int64_t(o.Length)
	v[6] = C.int64_t(o.ReplyLength)
	v[7] = C.int64_t(o.Leap)
	v[8] = C.int64_t(o.Version)
	v[9] = C.int64_t(o.Mode)
	v[10] = C.int64_t(o.Stratum)
	v[11] = C.int64_t(o.Poll)
	v[12] = C.int64_t(o.Precision)
	v[13] = C.int64_t(o.RootDelay)
	v[14] = C.int64_t(o.RootDispersion)
	v[15] = C.int64_t(o.RefID)
	v[16] = C.int64_t(int64(o.Reference))
	v[17] = C.int64_t(int64(o.Origin))
	v[18] = C.int64_t(int64(o.Receive))
	v[19] = C.int64_t(int64(o.Transmit))
	v[20] = C.int64_t(int64(o.ServerTransmit))
	v[21] = C.int64_t(o.Processing)
	v[22] = C.int64_t(o.Drop)
	v[23] = C.int64_t(boolInt(o.KoD))
	v[24] = C.int64_t(o.Method)
	v[25] = C.int64_t(o.Offset)
	v[26] = C.int64_t(o.Delay)
	v[27] = C.int64_t(boolInt(o.Interleaved))
	v[28] = C.int64_t(o.Implementation)
	v[29] = C.int64_t(o.Extensions.Fields)
	v[30] = C.int64_t(o.Extensions.MACLength)
	r.nulls = 0
	if o.Method == ntp.MethodNone {
		r.nulls |= 1 << 25
	}
	if o.Method != ntp.MethodExchange {
		r.nulls |= 1 << 26
	}
	r.alen = C.uint8_t(copy((*[16]byte)(unsafe.Pointer(&r.addr[0]))[:], client))
	r.llen = 0
	if la := o.Local.Addr(); la.IsValid() {
		r.llen = C.uint8_t(putAddr((*[16]byte)(unsafe.Pointer(&r.local[0])), la))
	}
}

// putAddr writes the stored form of a (addrBlob's bytes) into dst.
func putAddr(dst *[16]byte, a netip.Addr) int {
	if a = a.Unmap(); a.Is4() {
		b := a.As4()
		return copy(dst[:], b[:])
	}
	*dst = a.As16()
	return 16
}

// full reports whether the chunk should be flushed.
func (b *rowBinder) full() bool { return len(b.rows) == cap(b.rows) }

// flush inserts the laid-out rows with st and empties the chunk.
func (b *rowBinder) flush(st *rawStmt) error {
	if len(b.rows) == 0 {
		return nil
	}
	var done C.int
	rc := C.insert_rows(st, &b.rows[0], C.int(len(b.rows)), &done)
	b.rows = b.rows[:0]
	if rc != 0 {
		// As go-sqlite3 reports errors: the codes of the connection's
		// last error, with its message.
		db := C.sqlite3_db_handle(st)
		e := sqlite3.Error{Code: sqlite3.ErrNo(rc & 0xff), ExtendedCode: sqlite3.ErrNoExtended(C.sqlite3_extended_errcode(db))}
		return fmt.Errorf("insert observation: %w: %s", e, C.GoString(C.sqlite3_errmsg(db)))
	}
	return nil
}

// insertRowsC is insertRows through the C API: the same rows in the same
// order (grouped by client, see aggregate), a chunk per cgo call.
func (w *writer) insertRowsC(h *rawStmt, batch []ntp.Observation) error {
	b := w.binder
	n := 0
	for _, ci := range w.order {
		c := &w.clientAggs[ci]
		for i := c.head; i >= 0; i = w.rowNext[i] {
			b.add(&batch[i], c.key)
			if !b.full() {
				continue
			}
			if err := b.flush(h); err != nil {
				return err
			}
			w.pace.step()
			if n++; n&3 == 0 {
				if err := w.ctx.Err(); err != nil {
					return err
				}
			}
		}
	}
	return b.flush(h)
}
