package ntp

import "encoding/binary"

// HeaderLength is the length of the NTP header; shorter packets are dropped.
const HeaderLength = 48

// MaxPacketLength is the largest request the server reads. Anything longer
// is truncated by the socket and counted as malformed.
const MaxPacketLength = 1024

// Header is the fixed 48-byte NTP header (RFC 5905, section 7.3):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|LI | VN  |Mode |    Stratum     |     Poll      |  Precision   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                         Root Delay                            |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                         Root Dispersion                       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                          Reference ID                         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                     Reference Timestamp (64)                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                      Origin Timestamp (64)                    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                      Receive Timestamp (64)                   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                      Transmit Timestamp (64)                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	.                                                               .
//	.                    Extension Field 1 (variable)               .
//	.                    Extension Field 2 (variable)               .
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                          Key Identifier                       |
//	|                            dgst (128 or 160)                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
type Header struct {
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
}

// Modes (RFC 5905, figure 10).
const (
	ModeReserved  = 0
	ModeActive    = 1
	ModePassive   = 2
	ModeClient    = 3
	ModeServer    = 4
	ModeBroadcast = 5
	ModeControl   = 6
	ModePrivate   = 7
)

// LeapAlarm is the leap indicator of an unsynchronised clock.
const LeapAlarm = 3

// Byte offsets of the header fields.
const (
	offLVM            = 0
	offStratum        = 1
	offPoll           = 2
	offPrecision      = 3
	offRootDelay      = 4
	offRootDispersion = 8
	offRefID          = 12
	offReference      = 16
	offOrigin         = 24
	offReceive        = 32
	offTransmit       = 40
)

// Lengths of the MACs that may follow the header or the extension fields.
const (
	macMD5    = 4 + 16 // key ID + MD5 digest: 68-byte requests
	macSHA1   = 4 + 20 // key ID + SHA-1 digest: 72-byte requests
	macMSSNTP = 72     // MS-SNTP extended authenticator: 120-byte requests
	// minExtField is the smallest NTPv4 extension field (RFC 7822).
	minExtField = 16
)

// DecodeHeader parses the first 48 bytes of b into h. It returns
// ErrTooShort when b is shorter than the header; it never reads past b.
func DecodeHeader(b []byte, h *Header) error {
	if len(b) < HeaderLength {
		return ErrTooShort
	}
	_ = b[HeaderLength-1] // bounds-check hint
	lvm := b[offLVM]
	h.Leap = lvm >> 6
	h.Version = (lvm >> 3) & 7
	h.Mode = lvm & 7
	h.Stratum = b[offStratum]
	h.Poll = int8(b[offPoll])
	h.Precision = int8(b[offPrecision])
	h.RootDelay = Short(binary.BigEndian.Uint32(b[offRootDelay:]))
	h.RootDispersion = Short(binary.BigEndian.Uint32(b[offRootDispersion:]))
	h.RefID = binary.BigEndian.Uint32(b[offRefID:])
	h.Reference = Timestamp(binary.BigEndian.Uint64(b[offReference:]))
	h.Origin = Timestamp(binary.BigEndian.Uint64(b[offOrigin:]))
	h.Receive = Timestamp(binary.BigEndian.Uint64(b[offReceive:]))
	h.Transmit = Timestamp(binary.BigEndian.Uint64(b[offTransmit:]))
	return nil
}

// Encode writes h into the first 48 bytes of b, which must be at least
// HeaderLength long.
func (h *Header) Encode(b []byte) {
	_ = b[HeaderLength-1]
	b[offLVM] = h.Leap<<6 | (h.Version&7)<<3 | h.Mode&7
	b[offStratum] = h.Stratum
	b[offPoll] = byte(h.Poll)
	b[offPrecision] = byte(h.Precision)
	binary.BigEndian.PutUint32(b[offRootDelay:], uint32(h.RootDelay))
	binary.BigEndian.PutUint32(b[offRootDispersion:], uint32(h.RootDispersion))
	binary.BigEndian.PutUint32(b[offRefID:], h.RefID)
	binary.BigEndian.PutUint64(b[offReference:], uint64(h.Reference))
	binary.BigEndian.PutUint64(b[offOrigin:], uint64(h.Origin))
	binary.BigEndian.PutUint64(b[offReceive:], uint64(h.Receive))
	binary.BigEndian.PutUint64(b[offTransmit:], uint64(h.Transmit))
}

// ParseExtensions walks what follows the header of a request: NTPv4
// extension fields (RFC 7822) and an optional MAC. It returns
// ErrMalformed for lengths that do not add up; it never reads past b.
// Errors on this path are the bare sentinels: wrapping would allocate per
// packet.
//
// A trailing 20 or 24 bytes is a symmetric-key MAC (68- and 72-byte
// requests); 72 bytes directly after the header is the MS-SNTP extended
// authenticator (120-byte requests). Anything else must be a sequence of
// extension fields, each at least 16 bytes and a multiple of 4 long.
func ParseExtensions(b []byte) (Extensions, error) {
	var e Extensions
	if len(b) < HeaderLength {
		return e, ErrTooShort
	}
	rest := b[HeaderLength:]
	if len(rest) == macMSSNTP {
		e.MACLength = macMSSNTP
		return e, nil
	}
	for len(rest) > 0 {
		switch len(rest) {
		case macMD5, macSHA1:
			e.MACLength = uint8(len(rest))
			return e, nil
		}
		if len(rest) < minExtField {
			return e, ErrMalformed
		}
		n := int(binary.BigEndian.Uint16(rest[2:4]))
		if n < minExtField || n%4 != 0 || n > len(rest) {
			return e, ErrMalformed
		}
		if e.Fields < 255 {
			e.Fields++
		}
		rest = rest[n:]
	}
	return e, nil
}
