package ntp

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// captureSeeds returns the real client requests in testdata/captures.
func captureSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "captures", "*.hex"))
	var out [][]byte
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		b, err := decodeHexFile(string(raw))
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		out = append(out, b)
	}
	return out
}

// decodeHexFile reads hex bytes, ignoring whitespace and # comments.
func decodeHexFile(s string) ([]byte, error) {
	var sb strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		sb.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(sb.String())
}

func fuzzSeeds(f *testing.F) {
	for _, b := range captureSeeds(f) {
		f.Add(b)
	}
	f.Add(request(Header{Version: 4, Mode: ModeClient, Poll: 6, Precision: 32, Transmit: 0x1234}))
	f.Add(request(Header{Version: 1, Mode: ModeReserved, Transmit: 1}))
	f.Add(request(Header{Version: 4, Mode: ModeActive, Stratum: 2, Transmit: 1}))
	f.Add([]byte{0x17, 0x00, 0x03, 0x2a, 0, 0, 0, 0})
	f.Add([]byte{0x16, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(append(request(Header{Version: 4, Mode: ModeClient}), 0, 1, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	f.Add(append(request(Header{Version: 4, Mode: ModeClient}), make([]byte, 72)...))
	f.Add([]byte{})
}

// FuzzParse: the parser never panics or reads past the buffer, and a
// decoded header encodes back to the same 48 bytes.
func FuzzParse(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Header
		if err := DecodeHeader(b, &h); err != nil {
			if len(b) >= HeaderLength {
				t.Fatalf("%d bytes refused: %v", len(b), err)
			}
			return
		}
		out := make([]byte, HeaderLength)
		h.Encode(out)
		if !bytes.Equal(out, b[:HeaderLength]) {
			t.Fatalf("round trip changed the header:\n in %x\nout %x", b[:HeaderLength], out)
		}
		ParseExtensions(b)
	})
}

// FuzzRespond: the responder never panics, answers only client (3),
// symmetric active (1) and NTPv1 (0) requests, and never sends a reply
// longer than the request.
func FuzzRespond(f *testing.F) {
	fuzzSeeds(f)
	r, tc := newTestResponder(DefaultRateLimit)
	reply := make([]byte, 4096)
	f.Fuzz(func(t *testing.T, b []byte) {
		var obs Observation
		tc.now += 1_000_000
		n := r.Respond(b, tc.now, clientA, local, reply, &obs)
		if n > len(b) {
			t.Fatalf("%d-byte reply to a %d-byte request", n, len(b))
		}
		if n == 0 {
			return
		}
		mode, version := b[0]&7, (b[0]>>3)&7
		switch {
		case mode == ModeClient, mode == ModeActive, mode == ModeReserved && version == 1:
		default:
			t.Fatalf("answered mode %d version %d", mode, version)
		}
		if version < 1 || version > 4 {
			t.Fatalf("answered version %d", version)
		}
		if got := reply[0] & 7; got == ModeReserved || got == ModeControl || got == ModePrivate {
			t.Fatalf("reply mode %d", got)
		}
	})
}

// FuzzPassive: the passive matcher never panics and stays within its
// bounds whatever a captured payload holds. Each input is read both as a
// request and as a reply, from a few clients, on two interfaces (copies),
// on a mirror port and not, with time advancing; every request captured
// is pending or recorded.
func FuzzPassive(f *testing.F) {
	fuzzSeeds(f)
	col := &countingConsumer{}
	p := NewPassive(PassiveConfig{MaxPending: 8, ReplyTimeout: time.Second}, NewClientTable(4), col)
	mirror := NewPassive(PassiveConfig{MaxPending: 8, ReplyTimeout: time.Second, Mirror: true}, NewClientTable(4), col)
	server := netip.MustParseAddrPort("192.0.2.1:123")
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).UnixNano()
	f.Fuzz(func(t *testing.T, b []byte) {
		now += int64(100 * time.Millisecond)
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(len(b) % 3)}), 40000)
		for _, p := range []*Passive{p, mirror} {
			p.PacketOn(1, b, client, server, DirIncoming, now)
			p.PacketOn(2, b, client, server, DirIncoming, now+int64(len(b))*10_000) // a copy, if within 1 ms
			p.Packet(b, server, client, DirOutgoing, now)
			p.Packet(b, client, server, DirOther, now)
			if len(b) >= HeaderLength {
				// A reply that echoes the request's Transmit, or (odd
				// lengths) its Receive, on either interface.
				rep := append([]byte(nil), b[:HeaderLength]...)
				rep[0] = rep[0]&^7 | ModeServer
				rep[1] = 2
				copy(rep[24:32], b[40:48])
				if len(b)%2 == 1 {
					copy(rep[24:32], b[32:40])
				}
				p.PacketOn(1+len(b)%2, rep, server, client, DirOutgoing, now+1000)
				p.PacketOn(2-len(b)%2, rep, server, client, DirOutgoing, now+2000)
			}
			if len(b) > 0 && b[0]&0x80 != 0 {
				p.Truncated(DirOutgoing)
				p.Fragment(server, client, DirOutgoing)
			}
			p.Expire(now)
			if n := p.n.Load(); n < 0 || n > 8 || len(p.index) > 16 {
				t.Fatalf("pending %d, index %d: over the bounds", n, len(p.index))
			}
		}
		c, cm := p.Counters(), mirror.Counters()
		if got := c.Requests + cm.Requests - uint64(c.Pending+cm.Pending); got != col.n {
			t.Fatalf("%d requests finished, %d observations", got, col.n)
		}
	})
}

// countingConsumer counts observations (single goroutine).
type countingConsumer struct{ n uint64 }

func (c *countingConsumer) Observe(*Observation) { c.n++ }
