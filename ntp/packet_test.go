package ntp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// chronyRequest is a request of chrony 4.3 in basic mode (see
// testdata/captures): VN4, client mode, poll -4 (minpoll -4), precision
// 0x20, random Transmit.
const chronyRequestHex = "23 00 fc 20 00000000 00000000 00000000 0000000000000000 0000000000000000 0000000000000000 5c0f73a6e2d5c01b"

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(string(bytes.ReplaceAll([]byte(s), []byte(" "), nil)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeHeaderGolden(t *testing.T) {
	b := mustHex(t, chronyRequestHex)
	var h Header
	if err := DecodeHeader(b, &h); err != nil {
		t.Fatal(err)
	}
	want := Header{Leap: 0, Version: 4, Mode: 3, Poll: -4, Precision: 32, Transmit: 0x5c0f73a6e2d5c01b}
	if h != want {
		t.Fatalf("got %+v\nwant %+v", h, want)
	}
	out := make([]byte, HeaderLength)
	h.Encode(out)
	if !bytes.Equal(out, b) {
		t.Fatalf("Encode round trip:\n got %x\nwant %x", out, b)
	}
}

func TestEncodeGolden(t *testing.T) {
	h := Header{Leap: 0, Version: 4, Mode: 4, Stratum: 2, Poll: 6, Precision: -24,
		RootDelay: 0x00000010, RootDispersion: 0x00000020, RefID: DefaultRefID,
		Reference: 0xed00000000000001, Origin: 0x1122334455667788, Receive: 0xed11111122222222, Transmit: 0xed11111133333333}
	got := make([]byte, HeaderLength)
	h.Encode(got)
	want := mustHex(t, "24 02 06 e8 00000010 00000020 7f7f0101 ed00000000000001 1122334455667788 ed11111122222222 ed11111133333333")
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %x\nwant %x", got, want)
	}
}

func TestDecodeHeaderShort(t *testing.T) {
	var h Header
	for n := 0; n < HeaderLength; n++ {
		if err := DecodeHeader(make([]byte, n), &h); !errors.Is(err, ErrTooShort) {
			t.Fatalf("len %d: err %v", n, err)
		}
	}
}

func TestParseExtensions(t *testing.T) {
	ef := func(typ, n int) []byte {
		b := make([]byte, n)
		b[0], b[1], b[2], b[3] = byte(typ>>8), byte(typ), byte(n>>8), byte(n)
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	hdr := make([]byte, HeaderLength)
	cases := []struct {
		name   string
		pkt    []byte
		want   Extensions
		wantOK bool
	}{
		{"plain 48", hdr, Extensions{}, true},
		{"MD5 MAC 68", cat(hdr, make([]byte, 20)), Extensions{MACLength: 20}, true},
		{"SHA1 MAC 72", cat(hdr, make([]byte, 24)), Extensions{MACLength: 24}, true},
		{"MS-SNTP 120", cat(hdr, make([]byte, 72)), Extensions{MACLength: 72}, true},
		{"one EF", cat(hdr, ef(0x0104, 36)), Extensions{Fields: 1}, true},
		{"two EFs and MAC", cat(hdr, ef(0x0104, 16), ef(0x0204, 32), make([]byte, 20)), Extensions{Fields: 2, MACLength: 20}, true},
		{"EF too short", cat(hdr, ef(1, 16)[:12]), Extensions{}, false},
		{"EF length past end", cat(hdr, ef(1, 16)[:4], make([]byte, 12))[:HeaderLength+16], Extensions{}, false},
		{"EF length not multiple of 4", cat(hdr, func() []byte { b := ef(1, 28); b[3] = 26; return b }()), Extensions{}, false},
		{"EF length below 16", cat(hdr, func() []byte { b := ef(1, 16); b[3] = 8; return b }()), Extensions{}, false},
	}
	// length past end: claim 64 with 16 present
	cases[7].pkt[HeaderLength+3] = 64
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseExtensions(c.pkt)
			if (err == nil) != c.wantOK {
				t.Fatalf("err = %v, want ok=%v", err, c.wantOK)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if c.wantOK && got != c.want {
				t.Fatalf("got %+v want %+v", got, c.want)
			}
		})
	}
}
