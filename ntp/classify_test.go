package ntp

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClassifyCaptures classifies the real requests captured from chrony,
// NTPsec and ntpdig (testdata/captures, see its README).
func TestClassifyCaptures(t *testing.T) {
	want := map[string]Implementation{
		"chrony": ImplChrony, "chrony-xleave": ImplChrony, "ntpsec-v4": ImplNTPsec,
		// NTPsec with "version 3" sends its full client state, like ntpd
		// classic; the two are indistinguishable on the wire.
		"ntpsec-v3": ImplNTPd, "ntpdig": ImplNTPdig, "ntpdig-faketime": ImplNTPdig,
	}
	f, err := os.Open(filepath.Join("..", "testdata", "captures", "index.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 6 || strings.HasPrefix(cols[0], "#") {
			continue
		}
		file, label, src, arrival := cols[0], cols[1], cols[4], cols[5]
		exp, ok := want[label]
		if !ok {
			t.Fatalf("%s: no expected class for client label %q", file, label)
		}
		raw, err := os.ReadFile(filepath.Join("..", "testdata", "captures", file))
		if err != nil {
			t.Fatal(err)
		}
		b, err := decodeHexFile(string(raw))
		if err != nil {
			t.Fatal(err)
		}
		var h Header
		if err := DecodeHeader(b, &h); err != nil {
			t.Fatal(err)
		}
		ap := netip.MustParseAddrPort(src)
		t2, _ := strconv.ParseUint(strings.TrimPrefix(arrival, "0x"), 16, 64)
		if got := classify(&h, ap.Port(), Timestamp(t2).Seconds(), 0); got != exp {
			t.Errorf("%s (%s): classified %v, want %v", file, label, got, exp)
		}
		n++
	}
	if n < 6 {
		t.Fatalf("only %d captures", n)
	}
}

// TestClassifyFromSource covers clients not packaged here, with requests
// built as their source code builds them.
func TestClassifyFromSource(t *testing.T) {
	now := TimestampFromTime(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	real := now + 0x1234567
	cases := []struct {
		name string
		h    Header
		port uint16
		want Implementation
	}{
		// ntp-4.2.8 sntp/main.c: LI unsynchronised, VN4, poll 8 (NTP_MAXPOLL... "8"), real Transmit.
		{"sntp 4.2.8", Header{Leap: 3, Version: 4, Mode: 3, Poll: 8, Transmit: real}, 40000, ImplSNTP},
		// ntpdate/ntpdate.c transmit(): LI alarm, poll NTP_MINPOLL (3)... precision -6, root delay and dispersion 1.0 s.
		{"ntpdate 4.2.8", Header{Leap: 3, Version: 4, Mode: 3, Poll: 3, Precision: -6, RootDelay: 0x10000, RootDispersion: 0x10000, Transmit: real}, 123, ImplNTPdate},
		// systemd timesyncd-manager.c: only LI/VN/mode, Transmit seconds real and fraction = nanoseconds.
		{"timesyncd", Header{Version: 4, Mode: 3, Transmit: Timestamp(uint64(now.Seconds())<<32 | 123456789)}, 40000, ImplTimesyncd},
		// busybox networking/ntpd.c: Transmit is two rand() halves.
		{"busybox", Header{Version: 4, Mode: 3, Transmit: 0x1b2c3d4e_5f607182}, 123, ImplBusybox},
		// Android SntpClient.java: NTP_VERSION 3, only mode/version and Transmit.
		{"android", Header{Version: 3, Mode: 3, Transmit: real}, 40000, ImplAndroid},
		// ntpd 4.2.8 peer_xmit(): full client state in VN4.
		{"ntpd 4.2.8", Header{Version: 4, Mode: 3, Stratum: 3, Poll: 6, Precision: -23, RootDelay: 0x200, RootDispersion: 0x300, RefID: 0xc0000201, Reference: now - 100<<32, Origin: now - 64<<32, Receive: now - 64<<32 + 5, Transmit: real}, 123, ImplNTPd},
		{"ntpd symmetric active", Header{Version: 4, Mode: 1, Stratum: 2, Poll: 6, Precision: -23, Transmit: real}, 123, ImplNTPd},
		// beevik/ntp: data-minimised like chrony but poll 0 from a random port.
		{"beevik/ntp", Header{Version: 4, Mode: 3, Precision: 32, Transmit: 0xffee}, 40000, ImplUnknown},
		{"nothing at all", Header{Version: 4, Mode: 3, Precision: -10, Transmit: real}, 40000, ImplUnknown},
	}
	for _, c := range cases {
		if got := classify(&c.h, c.port, now.Seconds(), 0); got != c.want {
			t.Errorf("%s: classified %v, want %v", c.name, got, c.want)
		}
	}
	// A fraction at or above 10^9 seen earlier rules timesyncd out.
	h := cases[2].h
	if got := classify(&h, 40000, now.Seconds(), flagNotNanos); got != ImplUnknown {
		t.Errorf("timesyncd after a non-nanosecond fraction: %v", got)
	}
}
