package ntp

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ClockSync says where the server learns whether the host clock is
// synchronised.
type ClockSync string

const (
	// ClockSyncKernel trusts the kernel's synchronisation state
	// (adjtimex): an unsynchronised host clock is advertised with
	// leap = alarm. This is the default.
	ClockSyncKernel ClockSync = "kernel"
	// ClockSyncAssume treats the host clock as synchronised whatever the
	// kernel says, for hosts whose clock is kept by something the kernel
	// does not know about (a hypervisor, PTP in hardware), and for tests.
	ClockSyncAssume ClockSync = "assume-synchronized"
)

// assumedDispersion is advertised as root dispersion in ClockSyncAssume mode.
const assumedDispersion = time.Millisecond

// DefaultRefID is the reference ID used unless configured: 127.127.1.1,
// the traditional address of the "local clock" pseudo-source. A server
// that serves its host clock cannot name the host's own upstream.
const DefaultRefID = 127<<24 | 127<<16 | 1<<8 | 1

// HostClock tracks the host clock's state as advertised in replies. It
// reads adjtimex once a second (never per packet) and publishes the
// result atomically.
type HostClock struct {
	mode      ClockSync
	stratum   uint8
	refID     uint32
	precision int8
	state     atomic.Pointer[ClockState]
	// Adjtimex reads the kernel state; replaceable in tests.
	Adjtimex func(*unix.Timex) (int, error)
	// Now returns the current time; replaceable in tests.
	Now func() time.Time
}

// NewHostClock makes a HostClock. stratum is advertised when the clock is
// synchronised (1 … 15); refID likewise.
func NewHostClock(mode ClockSync, stratum uint8, refID uint32) (*HostClock, error) {
	switch mode {
	case ClockSyncKernel, ClockSyncAssume:
	case "":
		mode = ClockSyncKernel
	default:
		return nil, fmt.Errorf("unknown clock sync mode %q (allowed: %s, %s)", mode, ClockSyncKernel, ClockSyncAssume)
	}
	if stratum < 1 || stratum > 15 {
		return nil, fmt.Errorf("stratum %d out of range (allowed: 1 … 15)", stratum)
	}
	c := &HostClock{mode: mode, stratum: stratum, refID: refID, precision: measurePrecision(),
		Adjtimex: unix.Adjtimex, Now: time.Now}
	c.Refresh()
	return c, nil
}

// Load returns the current state. It does not allocate.
func (c *HostClock) Load() *ClockState { return c.state.Load() }

// Refresh reads the kernel state now.
func (c *HostClock) Refresh() {
	now := c.Now()
	var tx unix.Timex
	kstate, err := c.Adjtimex(&tx)
	st := &ClockState{Precision: c.precision, Reference: TimestampFromTime(now)}
	synced := err == nil && kstate != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0
	if err == nil {
		st.MaxError = time.Duration(tx.Maxerror) * time.Microsecond
		st.EstError = time.Duration(tx.Esterror) * time.Microsecond
	}
	switch c.mode {
	case ClockSyncAssume:
		st.Synchronized = true
		st.RootDispersion = ShortFromDuration(assumedDispersion)
	default:
		st.Synchronized = synced
		st.RootDispersion = ShortFromDuration(st.MaxError)
	}
	if st.Synchronized {
		st.Stratum, st.RefID = c.stratum, c.refID
		if err == nil && c.mode == ClockSyncKernel {
			// Announce a pending leap second the kernel knows about.
			switch {
			case kstate == unix.TIME_INS || tx.Status&unix.STA_INS != 0:
				st.Leap = 1
			case kstate == unix.TIME_DEL || tx.Status&unix.STA_DEL != 0:
				st.Leap = 2
			}
		}
	} else {
		// Unsynchronised: leap = alarm and stratum 0 (unspecified), as
		// chrony and ntpd do, so that clients do not follow this server.
		st.Leap, st.Stratum, st.RefID = LeapAlarm, 0, 0
	}
	c.state.Store(st)
}

// Run refreshes the state every interval until ctx is done.
func (c *HostClock) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.Refresh()
		}
	}
}

// measurePrecision estimates the clock's read precision as log2 seconds,
// like ntpd and chrony: the smallest step seen between clock reads.
func measurePrecision() int8 {
	best := time.Duration(math.MaxInt64)
	for i := 0; i < 100; i++ {
		a := time.Now()
		b := time.Now()
		for b.Equal(a) {
			b = time.Now()
		}
		if d := b.Sub(a); d < best {
			best = d
		}
	}
	p := int8(math.Floor(math.Log2(best.Seconds())))
	return max(p, -30)
}

// ParseRefID parses a reference ID: a dotted IPv4 address, or up to four
// ASCII characters (a stratum-1 source name such as "GPS" or "PPS").
func ParseRefID(s string) (uint32, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		b := a.As4()
		return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), nil
	}
	if len(s) == 0 || len(s) > 4 {
		return 0, fmt.Errorf("reference ID %q: want an IPv4 address or 1 to 4 ASCII characters", s)
	}
	var v uint32
	for i := 0; i < 4; i++ {
		v <<= 8
		if i < len(s) {
			if s[i] < 0x20 || s[i] > 0x7e {
				return 0, fmt.Errorf("reference ID %q: not printable ASCII", s)
			}
			v |= uint32(s[i])
		}
	}
	return v, nil
}

// FormatRefID renders a reference ID the way ntpq and chronyc do: ASCII
// for stratum 0 and 1 (kiss codes and source names), dotted IPv4 otherwise.
func FormatRefID(id uint32, stratum uint8) string {
	b := [4]byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	if stratum <= 1 {
		n := 0
		for n < 4 && b[n] >= 0x20 && b[n] <= 0x7e {
			n++
		}
		rest := true
		for _, c := range b[n:] {
			rest = rest && c == 0
		}
		if n > 0 && rest {
			return string(b[:n])
		}
	}
	return netip.AddrFrom4(b).String()
}
