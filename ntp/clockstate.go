package ntp

import "time"

// ClockState is what the server advertises about the host clock in every
// reply: leap indicator, stratum, root delay and dispersion, reference ID
// and reference time.
type ClockState struct {
	// Synchronized is false when the kernel says the host clock is not
	// disciplined (STA_UNSYNC or TIME_ERROR); the server then answers with
	// leap = alarm (3) so that clients do not follow it.
	Synchronized bool
	Leap         uint8
	Stratum      uint8
	Precision    int8
	RootDelay    Short
	// RootDispersion comes from the kernel's maximum error estimate.
	RootDispersion Short
	RefID          uint32
	// Reference is the time the clock state was last read.
	Reference Timestamp
	// MaxError and EstError are the kernel's error estimates.
	MaxError time.Duration
	EstError time.Duration
}

// Stats is what the server reports about itself beyond observations, for
// the exporter.
type Stats interface {
	// ClockState returns the clock state currently advertised.
	ClockState() ClockState
	// TrackedClients returns the number of clients in the client table.
	TrackedClients() int
	// Evictions returns how many clients were evicted from the table.
	Evictions() uint64
	// TableCapacity returns the client table's configured size.
	TableCapacity() int
}
