package ntp

import (
	"errors"
	"time"
)

// Timestamp is a 64-bit NTP timestamp: 32 bits of seconds since the start
// of an NTP era and 32 bits of fraction. The era is not on the wire; Time
// resolves it against a pivot time.
type Timestamp uint64

// Short is the 32-bit NTP short format (16.16 seconds) used for root delay
// and root dispersion.
type Short uint32

const (
	nanosPerSecond = 1_000_000_000
	// ntpEpochOffset is the number of seconds from the NTP prime epoch
	// (1900-01-01) to the Unix epoch (1970-01-01).
	ntpEpochOffset = 2_208_988_800
	// eraSeconds is the length of one NTP era (2^32 s).
	eraSeconds = 1 << 32
)

// TimestampFromUnixNano converts a Unix time in nanoseconds to an NTP
// timestamp. The era is dropped (it is not on the wire), so dates after
// 2036-02-07 wrap correctly into era 1. The fraction is rounded to nearest.
func TimestampFromUnixNano(ns int64) Timestamp {
	secs := ns / nanosPerSecond
	nsec := ns % nanosPerSecond
	if nsec < 0 {
		secs--
		nsec += nanosPerSecond
	}
	frac := (uint64(nsec)<<32 + nanosPerSecond/2) / nanosPerSecond
	// Seconds since 1900 modulo 2^32: unsigned arithmetic wraps at the era.
	s := uint64(secs+ntpEpochOffset) + frac>>32
	return Timestamp(s<<32 | frac&0xffffffff)
}

// TimestampFromTime converts t to an NTP timestamp (see TimestampFromUnixNano).
func TimestampFromTime(t time.Time) Timestamp { return TimestampFromUnixNano(t.UnixNano()) }

// Seconds returns the seconds field.
func (t Timestamp) Seconds() uint32 { return uint32(t >> 32) }

// Fraction returns the fraction field.
func (t Timestamp) Fraction() uint32 { return uint32(t) }

// UnixNano resolves the era of t as the one that puts t closest to pivot
// (a Unix time in nanoseconds) and returns it as Unix nanoseconds. This is
// correct for any t within ±68 years of the pivot, across era boundaries.
func (t Timestamp) UnixNano(pivot int64) int64 {
	return pivot + int64(t.Sub(TimestampFromUnixNano(pivot)))
}

// Time resolves t against pivot; see UnixNano.
func (t Timestamp) Time(pivot time.Time) time.Time {
	return time.Unix(0, t.UnixNano(pivot.UnixNano())).UTC()
}

// Sub returns t − u as a duration. The difference is taken modulo 2^64
// and read as signed, so it is correct across an era boundary as long as
// the true difference is within ±68 years. It rounds to the nanosecond.
func (t Timestamp) Sub(u Timestamp) time.Duration {
	return FixedToDuration(int64(t - u))
}

// FixedToDuration converts a signed 32.32 fixed-point number of seconds to
// a Duration, rounding to the nearest nanosecond.
func FixedToDuration(d int64) time.Duration {
	neg := d < 0
	u := uint64(d)
	if neg {
		u = uint64(-d)
	}
	secs := u >> 32
	frac := u & 0xffffffff
	ns := secs*nanosPerSecond + (frac*nanosPerSecond+1<<31)>>32
	if neg {
		return -time.Duration(ns)
	}
	return time.Duration(ns)
}

// Duration returns the short-format value as a duration.
func (s Short) Duration() time.Duration {
	return time.Duration((uint64(s)*nanosPerSecond + 1<<15) >> 16)
}

// Seconds returns the short-format value in seconds.
func (s Short) Seconds() float64 { return float64(s) / 65536 }

// ShortFromDuration converts a non-negative duration to short format,
// saturating at the largest representable value (about 18 hours).
func ShortFromDuration(d time.Duration) Short {
	if d <= 0 {
		return 0
	}
	v := (uint64(d)<<16 + nanosPerSecond/2) / nanosPerSecond
	if v > 0xffffffff {
		return 0xffffffff
	}
	return Short(v)
}

// DropReason says why a request was not answered normally.
type DropReason uint8

const (
	DropNone DropReason = iota
	// DropTooShort: shorter than the 48-byte header.
	DropTooShort
	// DropBadVersion: version 0 or above 4.
	DropBadVersion
	// DropBadMode: a mode that is never answered (0 except NTPv1 clients,
	// 2, 4, 5).
	DropBadMode
	// DropControl: mode 6 (ntpq control). Never answered: amplification.
	DropControl
	// DropPrivate: mode 7 (ntpdc private, e.g. monlist). Never answered.
	DropPrivate
	// DropMalformed: extension fields or MAC with an impossible length.
	DropMalformed
	// DropRateLimit: over the per-client rate limit (a KoD may still be sent).
	DropRateLimit
	// DropSendError: the reply could not be sent.
	DropSendError
	// DropUnanswered (passive mode): the monitored daemon sent no reply
	// within the reply timeout, and the capture lost nothing meanwhile.
	DropUnanswered
	// DropCaptureLost (passive mode): whether the daemon answered is not
	// known, because the capture lost packets or its pending table was full.
	DropCaptureLost
	// DropDenied (passive mode): the daemon answered with a kiss-o'-death
	// other than RATE (DENY, RSTR, …).
	DropDenied
	numDropReasons
)

var dropNames = [...]string{"", "too_short", "bad_version", "bad_mode", "mode_control", "mode_private", "malformed", "rate_limit", "send_error", "unanswered", "capture_lost", "denied"}

func (r DropReason) String() string {
	if int(r) < len(dropNames) {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons lists every drop reason (excluding DropNone), for bounded
// label sets.
func DropReasons() []DropReason {
	rs := make([]DropReason, 0, numDropReasons-1)
	for r := DropTooShort; r < numDropReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// Sentinel errors returned by the parser and the responder. Each maps to a
// DropReason through DropReasonOf.
var (
	ErrTooShort   = errors.New("ntp: packet shorter than 48 bytes")
	ErrBadVersion = errors.New("ntp: unsupported version")
	ErrBadMode    = errors.New("ntp: mode not answered")
	ErrControl    = errors.New("ntp: mode 6 control request not answered")
	ErrPrivate    = errors.New("ntp: mode 7 private request not answered")
	ErrMalformed  = errors.New("ntp: malformed extension field or MAC")
	ErrRateLimit  = errors.New("ntp: client over rate limit")
)

// DropReasonOf maps an error from this package to its drop reason.
func DropReasonOf(err error) DropReason {
	switch {
	case err == nil:
		return DropNone
	case errors.Is(err, ErrTooShort):
		return DropTooShort
	case errors.Is(err, ErrBadVersion):
		return DropBadVersion
	case errors.Is(err, ErrBadMode):
		return DropBadMode
	case errors.Is(err, ErrControl):
		return DropControl
	case errors.Is(err, ErrPrivate):
		return DropPrivate
	case errors.Is(err, ErrMalformed):
		return DropMalformed
	case errors.Is(err, ErrRateLimit):
		return DropRateLimit
	default:
		return DropSendError
	}
}

// Implementation is a client software class recognised from its requests.
// The set is bounded; each class is backed by a test vector from the real
// client or its source code.
type Implementation uint8

const (
	ImplUnknown Implementation = iota
	ImplChrony
	ImplNTPsec
	ImplNTPd
	ImplNTPdig
	ImplNTPdate
	ImplSNTP
	ImplTimesyncd
	ImplBusybox
	ImplAndroid
	numImpl
)

var implNames = [...]string{"unknown", "chrony", "ntpsec", "ntpd", "ntpdig", "ntpdate", "sntp", "timesyncd", "busybox", "android"}

func (i Implementation) String() string {
	if int(i) < len(implNames) {
		return implNames[i]
	}
	return "unknown"
}

// Implementations lists every class, for bounded label sets.
func Implementations() []Implementation {
	is := make([]Implementation, 0, numImpl)
	for i := ImplUnknown; i < numImpl; i++ {
		is = append(is, i)
	}
	return is
}

// ParseImplementation is the inverse of String.
func ParseImplementation(s string) (Implementation, bool) {
	for i, n := range implNames {
		if n == s {
			return Implementation(i), true
		}
	}
	return ImplUnknown, false
}

// ParseDropReason is the inverse of String ("" is DropNone).
func ParseDropReason(s string) (DropReason, bool) {
	for i, n := range dropNames {
		if n == s {
			return DropReason(i), true
		}
	}
	return DropNone, false
}

// Extensions describes what follows the 48-byte header of a request.
type Extensions struct {
	// Fields is the number of NTPv4 extension fields (RFC 7822).
	Fields uint8
	// MACLength is the length of a trailing MAC (key ID plus digest): 20
	// (MD5), 24 (SHA-1) or 72 (MS-SNTP extended authenticator); 0 if none.
	MACLength uint8
}
