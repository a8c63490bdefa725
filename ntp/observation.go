package ntp

import (
	"net/netip"
	"time"
)

// OffsetMethod says how an observation's client clock offset was obtained.
type OffsetMethod uint8

const (
	// MethodNone: the request reveals nothing about the client's clock
	// (random or zero Transmit, or no evidence that it is a clock reading).
	MethodNone OffsetMethod = iota
	// MethodApparent: the request's Transmit (T1) is a real clock reading,
	// so T1 − T2 is the client's offset minus the request's one-way delay.
	MethodApparent
	// MethodExchange: the request's Origin and Receive echo T3 and T4 of a
	// reply this server remembers, so the full four-timestamp offset and
	// round-trip delay of that earlier exchange are known.
	MethodExchange
)

var methodNames = [...]string{"none", "apparent", "exchange"}

func (m OffsetMethod) String() string {
	if int(m) < len(methodNames) {
		return methodNames[m]
	}
	return "none"
}

// OffsetMethods lists every method, for bounded label sets.
func OffsetMethods() []OffsetMethod {
	return []OffsetMethod{MethodNone, MethodApparent, MethodExchange}
}

// ParseOffsetMethod is the inverse of String.
func ParseOffsetMethod(s string) (OffsetMethod, bool) {
	for i, n := range methodNames {
		if n == s {
			return OffsetMethod(i), true
		}
	}
	return MethodNone, false
}

// Observation is what one received request revealed. One is emitted for
// every request that reached the parser, answered or dropped.
//
// Consumers receive a pointer that is valid only for the duration of the
// Observe call; they must copy what they keep.
type Observation struct {
	// Received is T2, the server's receive time of the request.
	Received time.Time
	// Client is the request's source address and port; Local is the
	// address and port it was sent to (from IP_PKTINFO on wildcard sockets).
	Client netip.AddrPort
	Local  netip.AddrPort

	// Length is the request's length in bytes, ReplyLength the reply's
	// (0 when nothing was sent).
	Length      uint16
	ReplyLength uint16

	// Header fields of the request, as sent. For requests shorter than
	// the header only Length, Client, Local and Drop are meaningful.
	Leap           uint8
	Version        uint8
	Mode           uint8
	Stratum        uint8
	Poll           int8
	Precision      int8
	RootDelay      Short
	RootDispersion Short
	RefID          uint32
	Reference      Timestamp
	Origin         Timestamp
	Receive        Timestamp
	Transmit       Timestamp

	// Extensions describes what follows the 48-byte header.
	Extensions Extensions

	// ServerTransmit is T3 of the reply (zero when nothing was sent).
	ServerTransmit Timestamp
	// Processing is T3 − T2, the server's processing time (0 when dropped).
	Processing time.Duration

	// Drop is why the request was not answered normally (DropNone when answered).
	Drop DropReason
	// KoD is true when a kiss-o'-death RATE reply was sent instead.
	KoD bool

	// Offset is the client's clock offset, client minus server, valid
	// when Method is not MethodNone. Delay is the round-trip delay, valid
	// when Method is MethodExchange.
	Method OffsetMethod
	Offset time.Duration
	Delay  time.Duration
	// Interleaved is true when the request is in NTP interleaved mode.
	Interleaved bool
	// Implementation is the client software class recognised from the request.
	Implementation Implementation
}

// Answered reports whether a normal reply was sent.
func (o *Observation) Answered() bool { return o.Drop == DropNone }

// Consumer receives observations. Observe is called on the packet path: it
// must not block and must not retain the pointer.
type Consumer interface {
	Observe(o *Observation)
}

// Consumers fans an observation out to several consumers in order.
type Consumers []Consumer

// Observe implements Consumer.
func (cs Consumers) Observe(o *Observation) {
	for _, c := range cs {
		c.Observe(o)
	}
}
