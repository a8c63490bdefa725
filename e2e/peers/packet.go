package peers

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// This file has just enough NTP to probe servers and to answer real clients while recording
// what they send. It is test scaffolding: the product's wire format lives in package ntp.

// ntpEpochOffset is the number of seconds from 1900-01-01 to 1970-01-01.
const ntpEpochOffset = 2208988800

// NTPTime converts t to a 64-bit NTP timestamp (era 0, valid until 2036).
func NTPTime(t time.Time) uint64 {
	sec := uint64(t.Unix() + ntpEpochOffset)
	frac := (uint64(t.Nanosecond()) << 32) / 1e9
	return sec<<32 | frac
}

// FromNTPTime converts a 64-bit NTP timestamp (era 0) to a time.
func FromNTPTime(ts uint64) time.Time {
	sec := int64(ts>>32) - ntpEpochOffset
	nsec := (int64(ts&0xffffffff) * 1e9) >> 32
	return time.Unix(sec, nsec)
}

// NTPDiff returns a − b for two NTP timestamps as a duration, era-safe for |a−b| < 68 years.
func NTPDiff(a, b uint64) time.Duration {
	d := int64(a - b) // 32.32 fixed point, wraps correctly
	sec := d >> 32
	frac := d & 0xffffffff
	return time.Duration(sec)*time.Second + time.Duration((frac*1e9)>>32)
}

// Header is a decoded 48-byte NTP header.
type Header struct {
	Leap, Version, Mode uint8
	Stratum             uint8
	Poll, Precision     int8
	RootDelay, RootDisp uint32 // NTP short format (16.16 s)
	RefID               uint32
	Reference           uint64
	Origin              uint64
	Receive             uint64
	Transmit            uint64
}

// ErrShort is returned by ParseHeader for packets under 48 bytes.
var ErrShort = errors.New("ntp packet shorter than 48 bytes")

// ParseHeader decodes the first 48 bytes of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < 48 {
		return Header{}, ErrShort
	}
	return Header{
		Leap:      b[0] >> 6,
		Version:   (b[0] >> 3) & 7,
		Mode:      b[0] & 7,
		Stratum:   b[1],
		Poll:      int8(b[2]),
		Precision: int8(b[3]),
		RootDelay: binary.BigEndian.Uint32(b[4:]),
		RootDisp:  binary.BigEndian.Uint32(b[8:]),
		RefID:     binary.BigEndian.Uint32(b[12:]),
		Reference: binary.BigEndian.Uint64(b[16:]),
		Origin:    binary.BigEndian.Uint64(b[24:]),
		Receive:   binary.BigEndian.Uint64(b[32:]),
		Transmit:  binary.BigEndian.Uint64(b[40:]),
	}, nil
}

// Marshal encodes h into a 48-byte packet.
func (h Header) Marshal() []byte {
	b := make([]byte, 48)
	b[0] = h.Leap<<6 | (h.Version&7)<<3 | h.Mode&7
	b[1] = h.Stratum
	b[2] = byte(h.Poll)
	b[3] = byte(h.Precision)
	binary.BigEndian.PutUint32(b[4:], h.RootDelay)
	binary.BigEndian.PutUint32(b[8:], h.RootDisp)
	binary.BigEndian.PutUint32(b[12:], h.RefID)
	binary.BigEndian.PutUint64(b[16:], h.Reference)
	binary.BigEndian.PutUint64(b[24:], h.Origin)
	binary.BigEndian.PutUint64(b[32:], h.Receive)
	binary.BigEndian.PutUint64(b[40:], h.Transmit)
	return b
}

// String is a one-line summary for logs.
func (h Header) String() string {
	return fmt.Sprintf("LI=%d VN=%d mode=%d stratum=%d poll=%d precision=%d rootdelay=%#08x rootdisp=%#08x refid=%#08x ref=%#016x org=%#016x rec=%#016x xmt=%#016x",
		h.Leap, h.Version, h.Mode, h.Stratum, h.Poll, h.Precision, h.RootDelay, h.RootDisp, h.RefID,
		h.Reference, h.Origin, h.Receive, h.Transmit)
}

// Probe sends one mode 3 request (VN4, random Transmit) to addr ("127.0.0.1:123") over conn if
// not nil (e.g. from Netns.DialUDP), else from a new loopback socket, and returns the reply's
// header. It checks that the reply is mode 4 and echoes the request's Transmit.
func Probe(conn *net.UDPConn, addr string, timeout time.Duration) (Header, error) {
	if conn == nil {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return Header{}, err
		}
		defer c.Close()
		conn = c.(*net.UDPConn)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	req := Header{Version: 4, Mode: 3, Precision: 32, Transmit: binary.BigEndian.Uint64(rnd[:])}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return Header{}, err
	}
	if _, err := conn.Write(req.Marshal()); err != nil {
		return Header{}, err
	}
	buf := make([]byte, 1024)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return Header{}, err
		}
		h, err := ParseHeader(buf[:n])
		if err != nil || h.Origin != req.Transmit {
			continue // not our reply
		}
		if h.Mode != 4 {
			return h, fmt.Errorf("reply mode %d", h.Mode)
		}
		return h, nil
	}
}

// waitServing probes addr until it answers (through conn made by dial when not nil).
func waitServing(p *Proc, dial func() (*net.UDPConn, error), addr string, timeout time.Duration) error {
	return poll(p, timeout, 50*time.Millisecond, func() (bool, error) {
		var c *net.UDPConn
		if dial != nil {
			var err error
			if c, err = dial(); err != nil {
				return false, err
			}
			defer c.Close()
		}
		_, err := Probe(c, addr, 200*time.Millisecond)
		return err == nil, nil
	})
}

// FormatHex renders a packet the way files in testdata/captures hold it: lowercase hex,
// 16 bytes per line, newline-terminated.
func FormatHex(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		j := min(i+16, len(b))
		sb.WriteString(hex.EncodeToString(b[i:j]))
		sb.WriteByte('\n')
	}
	return sb.String()
}

// ParseHex decodes hex text: whitespace is ignored and lines starting with '#' are comments.
func ParseHex(s string) ([]byte, error) {
	var sb strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		sb.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(sb.String())
}

// ReadHexFile reads a packet written by FormatHex (a file in testdata/captures).
func ReadHexFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseHex(string(b))
}
