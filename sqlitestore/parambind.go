package sqlitestore

/*
#include <stdint.h>

typedef struct sqlite3_stmt sqlite3_stmt;
extern int sqlite3_bind_int64(sqlite3_stmt*, int, long long);
extern int sqlite3_bind_double(sqlite3_stmt*, int, double);
extern int sqlite3_bind_null(sqlite3_stmt*, int);
extern int sqlite3_bind_blob(sqlite3_stmt*, int, const void*, int, void (*)(void*));
extern int sqlite3_step(sqlite3_stmt*);
extern int sqlite3_reset(sqlite3_stmt*);
extern int sqlite3_clear_bindings(sqlite3_stmt*);
extern int sqlite3_bind_parameter_count(sqlite3_stmt*);
typedef struct sqlite3 sqlite3;
extern sqlite3* sqlite3_db_handle(sqlite3_stmt*);
extern int sqlite3_extended_errcode(sqlite3*);
extern const char* sqlite3_errmsg(sqlite3*);

enum { PARAM_NULL, PARAM_INT, PARAM_FLOAT, PARAM_BLOB };

// One statement parameter. A blob is len bytes at offset i of the arena.
typedef struct {
	int32_t kind;
	int32_t len;
	int64_t i;
	double f;
} param;

static const char empty_blob[1];

// exec_params binds n parameters to stmt, steps it once (it must return
// no row) and resets it. It returns 0 or the SQLite result code (-1: the
// statement returned a row; -2: n is not the statement's parameter count). The statement is left without bindings, so
// no pointer into the arena stays behind.
static int exec_params(sqlite3_stmt* st, const param* p, int n, const uint8_t* arena) {
	if (sqlite3_bind_parameter_count(st) != n) {
		return -2; // a parameter left unbound would be NULL
	}
	int rc = 0;
	for (int c = 0; c < n && rc == 0; c++) {
		switch (p[c].kind) {
		case PARAM_INT:
			rc = sqlite3_bind_int64(st, c + 1, p[c].i);
			break;
		case PARAM_FLOAT:
			rc = sqlite3_bind_double(st, c + 1, p[c].f);
			break;
		case PARAM_BLOB:
			// A zero-length blob, not NULL: the columns are NOT NULL.
			rc = sqlite3_bind_blob(st, c + 1, p[c].len ? (const void*)(arena + p[c].i) : (const void*)empty_blob,
				p[c].len, (void (*)(void*))0);
			break;
		default:
			rc = sqlite3_bind_null(st, c + 1);
		}
	}
	if (rc == 0) {
		rc = sqlite3_step(st);
		if (rc == 101) { // SQLITE_DONE
			rc = 0;
		} else if (rc == 100) { // SQLITE_ROW
			rc = -1;
		}
	}
	int rrc = sqlite3_reset(st);
	if (rc == 0) {
		rc = rrc;
	}
	sqlite3_clear_bindings(st);
	return rc;
}
*/
import "C"

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mattn/go-sqlite3"
)

// params are the parameters of one write statement, laid out for the
// SQLite C API: values in C records, blob bytes copied into one arena, so
// that a statement is bound and stepped in one cgo call and nothing is
// allocated. Through database/sql/driver every parameter is an interface
// value (an allocation for most integers and every slice) and the driver
// allocates its rows object per statement: one allocation per request in
// the whole process at saturation, and a tenth of the writer's CPU.
//
// Without a statement handle (stmtHandle fails, or rowBinderEnabled is
// off in tests) exec takes the driver path with the same values.
type params struct {
	p     []C.param
	arena []byte
	args  []driver.NamedValue // the driver path's arguments
}

func (ps *params) reset() {
	ps.p = ps.p[:0]
	ps.arena = ps.arena[:0]
}

func (ps *params) null() { ps.p = append(ps.p, C.param{kind: C.PARAM_NULL}) }

func (ps *params) int(v int64) { ps.p = append(ps.p, C.param{kind: C.PARAM_INT, i: C.int64_t(v)}) }

// nullInt is v, or NULL when !ok.
func (ps *params) nullInt(v int64, ok bool) {
	if !ok {
		ps.null()
		return
	}
	ps.int(v)
}

// nullFloat is v, or NULL when !ok.
func (ps *params) nullFloat(v float64, ok bool) {
	if !ok {
		ps.null()
		return
	}
	ps.p = append(ps.p, C.param{kind: C.PARAM_FLOAT, f: C.double(v)})
}

// blob is b (an empty blob when b is empty, never NULL).
func (ps *params) blob(b []byte) {
	ps.p = append(ps.p, C.param{kind: C.PARAM_BLOB, len: C.int32_t(len(b)), i: C.int64_t(len(ps.arena))})
	ps.arena = append(ps.arena, b...)
}

// key is a client's stored address (clientAgg.key): NULL when nil (the
// invalid address), as the driver binds a nil slice.
func (ps *params) key(b []byte) {
	if b == nil {
		ps.null()
		return
	}
	ps.blob(b)
}

// addr is the stored form of a (addrBlob), or NULL for the invalid address.
func (ps *params) addr(a netip.Addr) {
	if !a.IsValid() {
		ps.null()
		return
	}
	var b [16]byte
	n := putAddr(&b, a)
	ps.blob(b[:n])
}

// exec runs st (h: its handle, or nil for the driver path) with the
// parameters, then resets them.
func (ps *params) exec(st driver.Stmt, h *rawStmt) error {
	defer ps.reset()
	if h == nil || !rowBinderEnabled {
		return execStmt(st, ps.driverArgs())
	}
	var arena *C.uint8_t
	if len(ps.arena) > 0 {
		arena = (*C.uint8_t)(&ps.arena[0])
	}
	var p *C.param
	if len(ps.p) > 0 {
		p = &ps.p[0]
	}
	rc := C.exec_params(h, p, C.int(len(ps.p)), arena)
	switch {
	case rc == -1:
		return errors.New("sqlitestore: write statement returned a row")
	case rc == -2:
		return fmt.Errorf("sqlitestore: %d parameters for a statement with %d", len(ps.p), C.sqlite3_bind_parameter_count(h))
	case rc != 0:
		db := C.sqlite3_db_handle(h)
		e := sqlite3.Error{Code: sqlite3.ErrNo(rc & 0xff), ExtendedCode: sqlite3.ErrNoExtended(C.sqlite3_extended_errcode(db))}
		return fmt.Errorf("%w: %s", e, C.GoString(C.sqlite3_errmsg(db)))
	}
	return nil
}

// driverArgs converts the parameters to the driver's arguments.
func (ps *params) driverArgs() []driver.NamedValue {
	ps.args = ps.args[:0]
	for i, p := range ps.p {
		var v driver.Value
		switch p.kind {
		case C.PARAM_INT:
			v = int64(p.i)
		case C.PARAM_FLOAT:
			v = float64(p.f)
		case C.PARAM_BLOB:
			v = append([]byte{}, ps.arena[p.i:int64(p.i)+int64(p.len)]...)
		}
		ps.args = append(ps.args, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	return ps.args
}

// handleOf is stmtHandle, or nil when the driver path must be taken.
func handleOf(st driver.Stmt) *rawStmt {
	h, err := stmtHandle(st)
	if err != nil {
		return nil
	}
	return h
}
