package sqlitestore

import (
	"bufio"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net/netip"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/ntpexp/ntpexp/ntp"
)

// exportCSV is Export's CSV path. It reads on the driver connection and
// formats each row straight into a byte buffer: database/sql's Scan
// (reflection for every column) and the intermediate ObservationRow and
// field strings cost more than SQLite itself. The output is byte for byte
// what encoding/csv writes for ObservationRow.appendCSV (a test holds the
// two together).
func (r *Reader) exportCSV(ctx context.Context, conn *sql.Conn, q string, args []any, w io.Writer, progress func(rows int64)) (int64, error) {
	var n int64
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(driver.Conn)
		if !ok {
			return errNotDriverConn
		}
		bt, ok := dc.(driver.ConnBeginTx)
		if !ok {
			return errNotDriverConn
		}
		tx, err := bt.BeginTx(ctx, driver.TxOptions{ReadOnly: true})
		if err != nil {
			return explain(r.path, err)
		}
		defer tx.Rollback()
		st, err := c.Prepare(q)
		if err != nil {
			return explain(r.path, err)
		}
		defer st.Close()
		nv := make([]driver.NamedValue, len(args))
		for i, a := range args {
			nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
		}
		qc, ok := st.(driver.StmtQueryContext)
		if !ok {
			return errNotDriverConn
		}
		rows, err := qc.QueryContext(ctx, nv)
		if err != nil {
			return explain(r.path, err)
		}
		defer rows.Close()

		bw := bufio.NewWriterSize(w, 64<<10)
		line := make([]byte, 0, 512)
		for i, f := range ObservationFields {
			if i > 0 {
				line = append(line, ',')
			}
			line = appendCSVField(line, f)
		}
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return err
		}
		dest := make([]driver.Value, len(rows.Columns()))
		if len(dest) != 30 {
			return errors.New("sqlitestore: export query has unexpected columns")
		}
		for {
			err := rows.Next(dest)
			if err == io.EOF {
				break
			}
			if err != nil {
				return explain(r.path, err)
			}
			line = appendObservationCSV(line[:0], dest)
			if _, err := bw.Write(line); err != nil {
				return err
			}
			n++
			if progress != nil && n%progressEvery == 0 {
				progress(n)
			}
		}
		return bw.Flush()
	})
	if err != nil {
		return n, err
	}
	if progress != nil {
		progress(n)
	}
	return n, nil
}

// appendObservationCSV appends one CSV record (with its newline) for a row
// of observationColumns, as obsScan.row and appendCSV would render it.
func appendObservationCSV(b []byte, v []driver.Value) []byte {
	i := func(k int) int64 { x, _ := v[k].(int64); return x }
	stratum := uint8(i(10))

	b = appendTimeNS(b, i(0))
	b = append(b, ',')
	b = appendAddrBlob(b, v[1])
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint16(i(2))), 10)
	b = append(b, ',')
	b = appendAddrBlob(b, v[3])
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint8(i(8))), 10) // version
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint8(i(9))), 10) // mode
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint8(i(7))), 10) // leap
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(stratum), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(int8(i(11))), 10) // poll
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(int8(i(12))), 10) // precision
	b = append(b, ',')
	b = appendShortSeconds(b, uint32(i(13)))
	b = append(b, ',')
	b = appendShortSeconds(b, uint32(i(14)))
	b = append(b, ',')
	b = appendRefID(b, stratum, uint32(i(15)))
	b = append(b, ',')
	b = appendCSVField(b, dropName(i(18)))
	b = append(b, ',')
	b = appendSecondsNS(b, i(17)) // processing
	b = append(b, ',')
	if off, ok := v[21].(int64); ok {
		b = appendSecondsNS(b, off)
	}
	b = append(b, ',')
	b = appendCSVField(b, methodName(i(20)))
	b = append(b, ',')
	if d, ok := v[22].(int64); ok {
		b = appendSecondsNS(b, d)
	}
	b = append(b, ',')
	b = strconv.AppendBool(b, i(23) != 0) // interleaved
	b = append(b, ',')
	b = appendCSVField(b, implName(i(24)))
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint16(i(4))), 10) // local_port
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint16(i(5))), 10) // length
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint16(i(6))), 10) // reply_length
	b = append(b, ',')
	b = strconv.AppendBool(b, i(19) != 0) // kod
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint8(i(25))), 10) // extension fields
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(uint8(i(26))), 10) // MAC length
	b = append(b, ',')
	b = appendHex16(b, i(16)) // transmit
	b = append(b, ',')
	b = appendHex16(b, i(27)) // origin
	b = append(b, ',')
	b = appendHex16(b, i(28)) // receive
	b = append(b, ',')
	b = appendHex16(b, i(29)) // server transmit
	return append(b, '\n')
}

// appendCSVField appends s as encoding/csv writes a field (comma
// separator, LF line ends).
func appendCSVField[S ~string | ~[]byte](b []byte, s S) []byte {
	if !csvNeedsQuotes(s) {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// csvNeedsQuotes is encoding/csv's rule for the comma separator.
func csvNeedsQuotes[S ~string | ~[]byte](s S) bool {
	if len(s) == 0 {
		return false
	}
	if len(s) == 2 && s[0] == '\\' && s[1] == '.' {
		return true
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n', '\r', '"', ',':
			return true
		}
	}
	if c := s[0]; c < utf8.RuneSelf {
		return unicode.IsSpace(rune(c))
	}
	r, _ := utf8.DecodeRuneInString(string(s))
	return unicode.IsSpace(r)
}

func appendAddrBlob(b []byte, v driver.Value) []byte {
	blob, _ := v.([]byte)
	a, ok := netip.AddrFromSlice(blob)
	if !ok {
		return b
	}
	return a.AppendTo(b)
}

// appendRefID appends FormatRefID(stratum, refID) as a CSV field.
func appendRefID(b []byte, stratum uint8, refID uint32) []byte {
	c := [4]byte{byte(refID >> 24), byte(refID >> 16), byte(refID >> 8), byte(refID)}
	if stratum <= 1 {
		n := 4
		for n > 0 && c[n-1] == 0 {
			n--
		}
		ok := n > 0
		for _, x := range c[:n] {
			if x < 0x20 || x > 0x7e {
				ok = false
			}
		}
		if ok {
			return appendCSVField(b, c[:n])
		}
	}
	return netip.AddrFrom4(c).AppendTo(b)
}

// appendShortSeconds appends ntp.Short(v).Seconds() as strconv's 'f', -1.
func appendShortSeconds(b []byte, v uint32) []byte {
	if v == 0 {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, ntp.Short(v).Seconds(), 'f', -1, 64)
}

// appendSecondsNS appends seconds(ns) as strconv.AppendFloat(b,
// float64(ns)/1e9, 'f', -1, 64) does. Below 10^15 ns the exact decimal
// ns/10^9 has at most 15 significant digits, so it is the shortest
// decimal that rounds to that float64 (15 digits always round-trip), and
// it can be written with integer arithmetic.
func appendSecondsNS(b []byte, ns int64) []byte {
	const limit = 1e15
	if ns <= -limit || ns >= limit {
		return strconv.AppendFloat(b, seconds(ns), 'f', -1, 64)
	}
	u := ns
	if u < 0 {
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendInt(b, u/1e9, 10)
	frac := u % 1e9
	if frac == 0 {
		return b
	}
	var d [10]byte
	d[0] = '.'
	for k := 9; k >= 1; k-- {
		d[k] = byte('0' + frac%10)
		frac /= 10
	}
	end := 10
	for d[end-1] == '0' {
		end--
	}
	return append(b, d[:end]...)
}

// appendTimeNS appends timeFromNS(ns).String(): TimeFormat in UTC.
func appendTimeNS(b []byte, ns int64) []byte {
	sec := ns / 1e9
	nsec := ns % 1e9
	if nsec < 0 {
		nsec += 1e9
		sec--
	}
	days := sec / 86400
	sod := sec % 86400
	if sod < 0 {
		sod += 86400
		days--
	}
	y, m, d := civilFromDays(days)
	b = appendDigits(b, y, 4)
	b = append(b, '-')
	b = appendDigits(b, m, 2)
	b = append(b, '-')
	b = appendDigits(b, d, 2)
	b = append(b, 'T')
	b = appendDigits(b, sod/3600, 2)
	b = append(b, ':')
	b = appendDigits(b, sod/60%60, 2)
	b = append(b, ':')
	b = appendDigits(b, sod%60, 2)
	b = append(b, '.')
	b = appendDigits(b, nsec, 9)
	return append(b, 'Z')
}

// civilFromDays converts days since 1970-01-01 to a proleptic Gregorian
// date (the well-known era-based algorithm).
func civilFromDays(z int64) (y, m, d int64) {
	z += 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		m = mp + 3
	} else {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

// appendDigits appends v (>= 0) zero-padded to width digits.
func appendDigits(b []byte, v int64, width int) []byte {
	var d [20]byte
	i := len(d)
	for v > 0 || len(d)-i < width {
		i--
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[i:]...)
}

func appendHex16(b []byte, v int64) []byte {
	const digits = "0123456789abcdef"
	u := uint64(v)
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[(u>>uint(shift))&15])
	}
	return b
}
