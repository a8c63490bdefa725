package sqlitestore

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Export formats.
const (
	FormatJSON   = "json"
	FormatCSV    = "csv"
	FormatNDJSON = "ndjson"
)

// ExportOptions selects raw observations to export.
type ExportOptions struct {
	// Hours keeps observations received in the last Hours hours (exactly,
	// not aligned to hours); 0 exports every retained row.
	Hours int
	// Client keeps one address or a prefix; the zero Prefix keeps all.
	Client netip.Prefix
	// Format is json (one JSON array), csv (header row first) or ndjson
	// (one JSON object per line); "" means json.
	Format string
}

// CheckFormat validates an export format name.
func CheckFormat(f string) (string, error) {
	switch f {
	case "":
		return FormatJSON, nil
	case FormatJSON, FormatCSV, FormatNDJSON:
		return f, nil
	}
	return "", invalidf("format must be json, csv or ndjson, not %q", f)
}

// exportCachePragma sizes the page cache of an export's connection.
const exportCachePragma = "PRAGMA cache_size = -65536"

// progressEvery is how many rows pass between progress calls.
const progressEvery = 10000

// prefixRange returns the stored-address range [lo, hi] of a prefix and
// the blob length its addresses have.
func prefixRange(p netip.Prefix) (lo, hi []byte) {
	p = p.Masked()
	a := p.Addr()
	b := a.AsSlice()
	h := a.AsSlice()
	bits := p.Bits()
	for i := range h {
		for bit := 0; bit < 8; bit++ {
			if i*8+bit >= bits {
				h[i] |= 0x80 >> bit
			}
		}
	}
	return b, h
}

// ParseClientFilter reads an export's client filter as users write it:
// one address (192.0.2.7, 2001:db8::7) or a CIDR prefix (192.0.2.0/24).
// Export normalises it (masks it, unmaps IPv4-mapped addresses).
func ParseClientFilter(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// normalizePrefix unmaps IPv4-mapped prefixes and sends single addresses
// through the reader's anonymizer.
func (r *Reader) normalizePrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, invalidf("client prefix is invalid")
	}
	a := p.Addr()
	bits := p.Bits()
	if a.Is4In6() {
		if bits < 96 {
			return p, invalidf("client prefix %s mixes IPv4-mapped and IPv6 addresses (write the IPv4 prefix, e.g. 192.0.2.0/24)", p)
		}
		a, bits = a.Unmap(), bits-96
	}
	a = a.WithZone("")
	if bits == a.BitLen() {
		a = r.anon.Addr(a)
		bits = a.BitLen()
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// Export streams raw observations, oldest first, to w in the chosen
// format, writing each row as it is read (memory stays flat). It reads in
// one read transaction on a read-only connection, which never blocks the
// writer; the WAL cannot be checkpointed past the export's snapshot until
// it ends. progress, if not nil, is called every 10000 rows and at the end
// with the rows written so far. It returns the number of rows written.
func (r *Reader) Export(ctx context.Context, opts ExportOptions, w io.Writer, progress func(rows int64)) (int64, error) {
	format, err := CheckFormat(opts.Format)
	if err != nil {
		return 0, err
	}
	if opts.Hours < 0 || opts.Hours > MaxHours {
		return 0, invalidf("hours must be between 0 (all) and %d", MaxHours)
	}
	from := int64(math.MinInt64)
	if opts.Hours > 0 {
		from = r.now().Add(-time.Duration(opts.Hours) * time.Hour).UnixNano()
	}
	q := `SELECT ` + observationColumns + ` FROM observations WHERE time_ns >= ?`
	args := []any{from}
	if opts.Client.IsValid() {
		p, err := r.normalizePrefix(opts.Client)
		if err != nil {
			return 0, err
		}
		lo, hi := prefixRange(p)
		q += ` AND client BETWEEN ? AND ? AND length(client) = ?`
		args = append(args, lo, hi, int64(len(lo)))
	}
	q += ` ORDER BY time_ns, id`

	// One connection for the export, with a larger page cache while it
	// runs: rows are read in time order through the time index, and the
	// table pages of one writer transaction's rows are visited several
	// times; with the default 2 MB cache most visits would read the page
	// from the OS again.
	conn, err := r.db.Conn(ctx)
	if err != nil {
		return 0, explain(r.path, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, exportCachePragma); err != nil {
		return 0, explain(r.path, err)
	}
	defer conn.ExecContext(context.Background(), "PRAGMA cache_size = -2000")
	if format == FormatCSV {
		return r.exportCSV(ctx, conn, q, args, w, progress)
	}

	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, explain(r.path, err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, explain(r.path, err)
	}
	defer rows.Close()

	bw := bufio.NewWriterSize(w, 64<<10)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if format == FormatJSON {
		if _, err := bw.WriteString("["); err != nil {
			return 0, err
		}
	}
	var (
		n   int64
		sc  obsScan
		row ObservationRow
	)
	targets := sc.targets()
	for rows.Next() {
		if err := rows.Scan(targets...); err != nil {
			return n, err
		}
		sc.row(&row)
		buf.Reset()
		if err := enc.Encode(&row); err != nil {
			return n, err
		}
		b := buf.Bytes()
		if format == FormatJSON {
			// "[\n{...},\n{...}\n]\n"
			sep := ",\n"
			if n == 0 {
				sep = "\n"
			}
			bw.WriteString(sep)
			b = b[:len(b)-1] // Encode's newline
		}
		if _, err := bw.Write(b); err != nil {
			return n, err
		}
		n++
		if progress != nil && n%progressEvery == 0 {
			progress(n)
		}
	}
	if err := rows.Err(); err != nil {
		return n, explain(r.path, err)
	}
	if format == FormatJSON {
		end := "\n]\n"
		if n == 0 {
			end = "]\n"
		}
		if _, err := bw.WriteString(end); err != nil {
			return n, err
		}
	}
	if err := bw.Flush(); err != nil {
		return n, err
	}
	if progress != nil {
		progress(n)
	}
	return n, nil
}

// Backup writes a consistent copy of the database to dst with VACUUM
// INTO. It is a read transaction, so a server can keep writing. dst must
// not exist; it is created 0600 (and removed again on failure).
func (r *Reader) Backup(ctx context.Context, dst string) error {
	abs, err := filepath.Abs(dst)
	if err != nil {
		return err
	}
	// VACUUM INTO accepts an existing empty file: creating it first fixes
	// its mode at 0600 and refuses to overwrite anything.
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("backup %s already exists: remove it or choose another name", abs)
		}
		return fmt.Errorf("create backup %s: %w", abs, err)
	}
	f.Close()
	if _, err := r.db.ExecContext(ctx, "VACUUM INTO ?", abs); err != nil {
		os.Remove(abs)
		return fmt.Errorf("backup %s to %s: %w", r.path, abs, explain(r.path, err))
	}
	return nil
}
