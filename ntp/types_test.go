package ntp

import (
	"testing"
	"time"
)

func TestTimestampRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		t    time.Time
		want Timestamp
	}{
		{"unix epoch", time.Unix(0, 0), Timestamp(ntpEpochOffset) << 32},
		{"half second", time.Unix(0, 500_000_000), Timestamp(ntpEpochOffset)<<32 | 1<<31},
		// 2036-02-07T06:28:16Z is the end of era 0: seconds field wraps to 0.
		{"era 1 start", time.Date(2036, 2, 7, 6, 28, 16, 0, time.UTC), 0},
		{"era 1 plus 1s", time.Date(2036, 2, 7, 6, 28, 17, 0, time.UTC), 1 << 32},
		{"last second of era 0", time.Date(2036, 2, 7, 6, 28, 15, 0, time.UTC), 0xffffffff << 32},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := TimestampFromTime(c.t)
			if got != c.want {
				t.Fatalf("TimestampFromTime(%v) = %#x, want %#x", c.t, uint64(got), uint64(c.want))
			}
			back := got.Time(c.t.Add(10 * 365 * 24 * time.Hour))
			if !back.Equal(c.t) {
				t.Fatalf("Time() = %v, want %v", back, c.t)
			}
		})
	}
}

func TestTimestampSubAcrossEra(t *testing.T) {
	before := TimestampFromTime(time.Date(2036, 2, 7, 6, 28, 15, 750_000_000, time.UTC))
	after := TimestampFromTime(time.Date(2036, 2, 7, 6, 28, 16, 250_000_000, time.UTC))
	if d := after.Sub(before); d != 500*time.Millisecond {
		t.Fatalf("after-before = %v, want 500ms", d)
	}
	if d := before.Sub(after); d != -500*time.Millisecond {
		t.Fatalf("before-after = %v, want -500ms", d)
	}
	// A client ten years behind is still read as exactly that.
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	old := now.AddDate(-10, 0, 0)
	if d := TimestampFromTime(old).Sub(TimestampFromTime(now)); d != old.Sub(now) {
		t.Fatalf("ten years: %v, want %v", d, old.Sub(now))
	}
}

func TestTimestampNanosecondPrecision(t *testing.T) {
	base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).UnixNano()
	for ns := int64(0); ns < 2000; ns += 7 {
		ts := TimestampFromUnixNano(base + ns)
		if got := ts.UnixNano(base); got != base+ns {
			t.Fatalf("ns %d: got %d", ns, got-base)
		}
	}
}

func TestShort(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want Short
	}{
		{0, 0}, {time.Second, 0x10000}, {500 * time.Millisecond, 0x8000}, {-time.Second, 0},
		{100 * time.Hour, 0xffffffff},
	}
	for _, c := range cases {
		if got := ShortFromDuration(c.d); got != c.want {
			t.Errorf("ShortFromDuration(%v) = %#x, want %#x", c.d, got, c.want)
		}
	}
	if d := Short(0x18000).Duration(); d != 1500*time.Millisecond {
		t.Errorf("Duration = %v", d)
	}
}

func TestDropReasonOf(t *testing.T) {
	for _, r := range DropReasons() {
		if r.String() == "" || r.String() == "unknown" {
			t.Errorf("reason %d has no name", r)
		}
		if got, ok := ParseDropReason(r.String()); !ok || got != r {
			t.Errorf("ParseDropReason(%q) = %v", r, got)
		}
	}
	if DropReasonOf(nil) != DropNone || DropReasonOf(ErrControl) != DropControl || DropReasonOf(ErrPrivate) != DropPrivate {
		t.Fatal("DropReasonOf mapping wrong")
	}
}

func TestParseRefID(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    uint32
		stratum uint8
	}{
		{"GPS", 'G'<<24 | 'P'<<16 | 'S'<<8, 1},
		{"PPS", 'P'<<24 | 'P'<<16 | 'S'<<8, 1},
		{"192.0.2.1", 192<<24 | 2<<8 | 1, 2},
		{"127.127.1.1", DefaultRefID, 2},
	} {
		got, err := ParseRefID(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRefID(%q) = %#x, %v", c.in, got, err)
		}
		if s := FormatRefID(got, c.stratum); s != c.in {
			t.Errorf("FormatRefID(%#x) = %q, want %q", got, s, c.in)
		}
	}
	for _, bad := range []string{"", "TOOLONG", "a\x01"} {
		if _, err := ParseRefID(bad); err == nil {
			t.Errorf("ParseRefID(%q) accepted", bad)
		}
	}
}
