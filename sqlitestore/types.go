package sqlitestore

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// TimeFormat is how every time in query results is written: RFC 3339 in
// UTC with nine fractional digits, so that strings sort like times.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Time is a UTC instant that encodes as TimeFormat in JSON and text.
type Time struct{ time.Time }

// TimeOf converts t.
func TimeOf(t time.Time) Time { return Time{t.UTC()} }

func timeFromNS(ns int64) Time { return Time{time.Unix(0, ns).UTC()} }

func timePtrFromNS(ns *int64) *Time {
	if ns == nil {
		return nil
	}
	t := timeFromNS(*ns)
	return &t
}

// String returns t in TimeFormat.
func (t Time) String() string { return t.UTC().Format(TimeFormat) }

// MarshalText implements encoding.TextMarshaler.
func (t Time) MarshalText() ([]byte, error) { return t.UTC().AppendFormat(nil, TimeFormat), nil }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(TimeFormat)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, TimeFormat)
	return append(b, '"'), nil
}

// UnmarshalText accepts any RFC 3339 time.
func (t *Time) UnmarshalText(b []byte) error {
	v, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return err
	}
	t.Time = v.UTC()
	return nil
}

// UnmarshalJSON accepts a JSON string holding an RFC 3339 time.
func (t *Time) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("time must be a JSON string: %w", err)
	}
	return t.UnmarshalText([]byte(s))
}

// ObservationRow is one raw observation as exported and as listed in a
// client's detail. Field names (JSON tags, CSV header) are a contract;
// docs/fields.md describes each.
type ObservationRow struct {
	Time                  Time       `json:"time"`
	ClientIP              netip.Addr `json:"client_ip"`
	ClientPort            uint16     `json:"client_port"`
	LocalIP               netip.Addr `json:"local_ip"`
	Version               uint8      `json:"version"`
	Mode                  uint8      `json:"mode"`
	Leap                  uint8      `json:"leap"`
	Stratum               uint8      `json:"stratum"`
	Poll                  int8       `json:"poll"`
	Precision             int8       `json:"precision"`
	RootDelaySeconds      float64    `json:"root_delay_seconds"`
	RootDispersionSeconds float64    `json:"root_dispersion_seconds"`
	RefID                 string     `json:"ref_id"`
	DropReason            string     `json:"drop_reason"`
	ProcessingSeconds     float64    `json:"processing_seconds"`
	OffsetSeconds         *float64   `json:"offset_seconds"`
	OffsetMethod          string     `json:"offset_method"`
	DelaySeconds          *float64   `json:"delay_seconds"`
	Interleaved           bool       `json:"interleaved"`
	Implementation        string     `json:"implementation"`
	// Beyond the contract's fields.
	LocalPort       uint16 `json:"local_port"`
	Length          uint16 `json:"length"`
	ReplyLength     uint16 `json:"reply_length"`
	KoD             bool   `json:"kod"`
	ExtensionFields uint8  `json:"extension_fields"`
	MACLength       uint8  `json:"mac_length"`
	// TransmitHex is the request's raw Transmit timestamp (16 hex digits).
	TransmitHex string `json:"transmit"`
	// OriginHex and ReceiveHex are the request's raw Origin and Receive
	// timestamps; ServerTransmitHex is T3 of the reply (0 when none).
	OriginHex         string `json:"origin"`
	ReceiveHex        string `json:"receive"`
	ServerTransmitHex string `json:"server_transmit"`
}

// ObservationFields is the CSV header of an export, in column order (the
// same names as the JSON keys).
var ObservationFields = []string{
	"time", "client_ip", "client_port", "local_ip", "version", "mode", "leap",
	"stratum", "poll", "precision", "root_delay_seconds", "root_dispersion_seconds",
	"ref_id", "drop_reason", "processing_seconds", "offset_seconds", "offset_method",
	"delay_seconds", "interleaved", "implementation",
	"local_port", "length", "reply_length", "kod", "extension_fields", "mac_length", "transmit",
	"origin", "receive", "server_transmit",
}

// appendCSV appends the row's fields in ObservationFields order; unknown
// values (null in JSON) are empty. Export writes CSV through a faster path
// (appendObservationCSV); this is the reference it must match, byte for
// byte, when written with encoding/csv (TestExportCSVMatchesEncodingCSV).
func (o *ObservationRow) appendCSV(rec []string) []string {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	pf := func(v *float64) string {
		if v == nil {
			return ""
		}
		return f(*v)
	}
	addr := func(a netip.Addr) string {
		if !a.IsValid() {
			return ""
		}
		return a.String()
	}
	return append(rec,
		o.Time.String(), addr(o.ClientIP), u(uint64(o.ClientPort)), addr(o.LocalIP),
		u(uint64(o.Version)), u(uint64(o.Mode)), u(uint64(o.Leap)), u(uint64(o.Stratum)),
		i(int64(o.Poll)), i(int64(o.Precision)), f(o.RootDelaySeconds), f(o.RootDispersionSeconds),
		o.RefID, o.DropReason, f(o.ProcessingSeconds), pf(o.OffsetSeconds), o.OffsetMethod,
		pf(o.DelaySeconds), strconv.FormatBool(o.Interleaved), o.Implementation,
		u(uint64(o.LocalPort)), u(uint64(o.Length)), u(uint64(o.ReplyLength)), strconv.FormatBool(o.KoD),
		u(uint64(o.ExtensionFields)), u(uint64(o.MACLength)), o.TransmitHex,
		o.OriginHex, o.ReceiveHex, o.ServerTransmitHex,
	)
}

// FormatRefID renders a reference ID. For stratum 0 and 1 it is an ASCII
// code (kiss code or clock source, e.g. "GPS", "RATE") when its bytes,
// without trailing NULs, are non-empty and printable; otherwise, and for
// stratum 2 and above (where it is an IPv4 address or the hash of an IPv6
// one), it is written as a dotted quad.
func FormatRefID(stratum uint8, refID uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], refID)
	if stratum <= 1 {
		n := 4
		for n > 0 && b[n-1] == 0 {
			n--
		}
		ok := n > 0
		for _, c := range b[:n] {
			if c < 0x20 || c > 0x7e {
				ok = false
			}
		}
		if ok {
			return string(b[:n])
		}
	}
	return netip.AddrFrom4(b).String()
}

// ClientRow summarises one client. The JSON names are a contract.
type ClientRow struct {
	ClientIP           netip.Addr `json:"client_ip"`
	FirstSeen          Time       `json:"first_seen"`
	LastSeen           Time       `json:"last_seen"`
	Requests           int64      `json:"requests"`
	Drops              int64      `json:"drops"`
	AvgIntervalSeconds *float64   `json:"avg_interval_seconds"`
	Version            uint8      `json:"version"`
	Mode               uint8      `json:"mode"`
	Poll               int8       `json:"poll"`
	Implementation     string     `json:"implementation"`
	LastOffsetSeconds  *float64   `json:"last_offset_seconds"`
	LastOffsetMethod   string     `json:"last_offset_method"`
	LastOffsetAt       *Time      `json:"last_offset_at"`
	LastDelaySeconds   *float64   `json:"last_delay_seconds"`
	LastDelayAt        *Time      `json:"last_delay_at"`
	LastLocalIP        netip.Addr `json:"last_local_ip"`
}

// HourRow is one hour of one client's rollup.
type HourRow struct {
	Hour                Time     `json:"hour"`
	Requests            int64    `json:"requests"`
	Drops               int64    `json:"drops"`
	RateLimited         int64    `json:"rate_limited"`
	KoD                 int64    `json:"kod"`
	OffsetCount         int64    `json:"offset_count"`
	OffsetMinSeconds    *float64 `json:"offset_min_seconds"`
	OffsetMaxSeconds    *float64 `json:"offset_max_seconds"`
	OffsetMeanSeconds   *float64 `json:"offset_mean_seconds"`
	AbsOffsetP50Seconds *float64 `json:"abs_offset_p50_seconds"`
	DelayCount          int64    `json:"delay_count"`
	DelayMinSeconds     *float64 `json:"delay_min_seconds"`
	DelayMaxSeconds     *float64 `json:"delay_max_seconds"`
	DelayMeanSeconds    *float64 `json:"delay_mean_seconds"`
	DelayP50Seconds     *float64 `json:"delay_p50_seconds"`
	Versions            []int    `json:"versions"`
	Implementations     []string `json:"implementations"`
	OffsetMethods       []string `json:"offset_methods"`
}

// ClientDetail is a client's summary, its newest raw observations and its
// hourly history.
type ClientDetail struct {
	Client  ClientRow        `json:"client"`
	Hours   int              `json:"hours"`
	Latest  []ObservationRow `json:"latest"`
	History []HourRow        `json:"history"`
}

// Quantiles summarise a distribution in seconds. P50, P90 and P99 come
// from the rollup histograms (within about 12%, see docs/fields.md); Max
// is exact. All are null when Count is 0.
type Quantiles struct {
	Count int64    `json:"count"`
	P50   *float64 `json:"p50"`
	P90   *float64 `json:"p90"`
	P99   *float64 `json:"p99"`
	Max   *float64 `json:"max"`
}

// Talker is a client ranked by requests.
type Talker struct {
	ClientIP netip.Addr `json:"client_ip"`
	Requests int64      `json:"requests"`
	Drops    int64      `json:"drops"`
}

// Stats summarises a window of whole hours, from the rollups.
type Stats struct {
	Hours            int              `json:"hours"`
	Since            Time             `json:"since"`
	Requests         int64            `json:"requests"`
	Answered         int64            `json:"answered"`
	Dropped          int64            `json:"dropped"`
	UniqueClients    int64            `json:"unique_clients"`
	ByVersion        map[string]int64 `json:"by_version"`
	ByMode           map[string]int64 `json:"by_mode"`
	ByImplementation map[string]int64 `json:"by_implementation"`
	ByOffsetMethod   map[string]int64 `json:"by_offset_method"`
	DropsByReason    map[string]int64 `json:"drops_by_reason"`
	// AbsOffsetSeconds is the distribution of |offset| over observations
	// with an offset; DelaySeconds of delay over exchange observations.
	AbsOffsetSeconds Quantiles `json:"abs_offset_seconds"`
	DelaySeconds     Quantiles `json:"delay_seconds"`
	TopTalkers       []Talker  `json:"top_talkers"`
	// Clients whose requests revealed their clock (offset method other
	// than none at least once in the window), and those that did not.
	ClientsRevealingClock    int64 `json:"clients_revealing_clock"`
	ClientsNotRevealingClock int64 `json:"clients_not_revealing_clock"`
}

// Anomaly kinds.
const (
	KindClockWrongHours = "clock_wrong_hours"
	KindOffset          = "offset"
	KindDelay           = "delay"
	KindRateLimited     = "rate_limited"
)

// Anomaly is one client's anomaly of one kind, with evidence.
type Anomaly struct {
	Kind     string     `json:"kind"`
	ClientIP netip.Addr `json:"client_ip"`
	// Count is how many raw observations in the window exceed the
	// threshold (for rate_limited: how many requests were rate limited).
	Count int64 `json:"count"`
	// Total is how many observations in the window had the measurement
	// (for rate_limited: all requests).
	Total int64 `json:"total"`
	// WorstSeconds is the largest |value| in the window, with its sign.
	WorstSeconds  *float64 `json:"worst_seconds"`
	LatestSeconds *float64 `json:"latest_seconds"`
	LatestAt      *Time    `json:"latest_at"`
	// Method is the offset method of the latest offset.
	Method         string `json:"method"`
	KoD            int64  `json:"kod"`
	LastSeen       Time   `json:"last_seen"`
	Implementation string `json:"implementation"`
}

// Anomalies is the result of an anomaly query.
type Anomalies struct {
	Hours                  int       `json:"hours"`
	Since                  Time      `json:"since"`
	DelayThresholdSeconds  float64   `json:"delay_threshold_seconds"`
	OffsetThresholdSeconds float64   `json:"offset_threshold_seconds"`
	Anomalies              []Anomaly `json:"anomalies"`
}

func seconds(ns int64) float64 { return float64(ns) / 1e9 }

func secondsPtr(ns *int64) *float64 {
	if ns == nil {
		return nil
	}
	v := seconds(*ns)
	return &v
}

func f64(v float64) *float64 { return &v }

func blobAddr(b []byte) netip.Addr {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}
	}
	return a
}

func methodName(m int64) string { return ntp.OffsetMethod(m).String() }

func implName(i int64) string { return ntp.Implementation(i).String() }

func dropName(d int64) string { return ntp.DropReason(d).String() }
