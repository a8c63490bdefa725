package ntp

// Client fingerprints. Each rule comes from the client's source code or a
// capture of the real client; see testdata/captures and classify_test.go.

const (
	// precisionDataMinimised is the precision byte (0x20, i.e. 32) that
	// data-minimising clients (chrony, NTPsec, beevik/ntp) send: a
	// positive precision no real clock has.
	precisionDataMinimised = 32
	// nanosLimit: systemd-timesyncd puts raw nanoseconds in the fraction
	// field, so its fraction is always below 10^9 (0x3B9ACA00).
	nanosLimit = 1_000_000_000
	// ntpPort is the NTP server port; NTPsec and ntpd send from it.
	ntpPort = 123
	// oneYear in seconds, to tell random busybox Transmits from clock readings.
	oneYear = 365 * 86400
)

// classify recognises the client software from one request's header, its
// source port, the server's receive time in NTP seconds, and what is
// already known about the client (flags).
func classify(h *Header, port uint16, rxSeconds uint32, flags uint8) Implementation {
	minimised := h.Stratum == 0 && h.RootDelay == 0 && h.RootDispersion == 0 &&
		h.RefID == 0 && h.Reference == 0
	switch {
	case h.Mode == ModeActive:
		// Symmetric active: ntpd and NTPsec peers.
		return ImplNTPd
	case h.Mode != ModeClient && !(h.Mode == ModeReserved && h.Version == 1):
		return ImplUnknown
	}
	if minimised && h.Precision == precisionDataMinimised {
		switch {
		case port == ntpPort && h.Poll == 0:
			// NTPsec 1.x default client: poll 0, sent from port 123.
			return ImplNTPsec
		case h.Poll != 0:
			// chrony: real poll, random source port, data minimised.
			return ImplChrony
		}
		return ImplUnknown // e.g. beevik/ntp: poll 0 from a random port
	}
	if h.Leap == LeapAlarm && h.Stratum == 0 && h.RefID == 0 {
		switch {
		case h.Poll == 3 && h.Precision == -6 && h.RootDelay == 0x10000 && h.RootDispersion == 0x10000:
			// ntpdate (ntp 4.2.8): poll 3, precision -6, root delay and
			// dispersion 1.0 s.
			return ImplNTPdate
		case h.Poll == 8 && h.Origin == 0 && h.Receive == 0:
			// sntp (ntp 4.2.8): poll 8.
			return ImplSNTP
		case h.Poll == 0 && h.Precision == 0 && h.RootDelay == 0 && h.RootDispersion == 0 &&
			h.Origin == 0 && h.Receive == 0 && h.Version == 4:
			// ntpdig (NTPsec): only LI 3, VN 4 and a real Transmit.
			return ImplNTPdig
		}
		return ImplUnknown
	}
	bare := minimised && h.Leap == 0 && h.Poll == 0 && h.Precision == 0 && h.Origin == 0 && h.Receive == 0
	if bare && h.Version == 4 {
		sec, frac := h.Transmit.Seconds(), h.Transmit.Fraction()
		d := int32(sec - rxSeconds)
		if d < 0 {
			d = -d
		}
		if sec>>31 == 0 && frac>>31 == 0 && (d > oneYear || d < 0) {
			// busybox ntpd: Transmit is two rand() halves (top bits 0),
			// far from any plausible clock.
			return ImplBusybox
		}
		if frac < nanosLimit && flags&flagNotNanos == 0 {
			// systemd-timesyncd: real seconds, nanoseconds as fraction.
			return ImplTimesyncd
		}
		return ImplUnknown
	}
	if bare && h.Version == 3 {
		// Android SntpClient: VN 3, everything but Transmit zero.
		return ImplAndroid
	}
	if !minimised && h.Precision != precisionDataMinimised {
		// Full client state in the request: ntpd classic, or NTPsec
		// configured with "version 3" (indistinguishable on the wire).
		return ImplNTPd
	}
	return ImplUnknown
}

// realTransmit reports whether a class is known to put a clock reading
// in Transmit, and neverReal whether it is known not to.
func realTransmit(i Implementation) (real, neverReal bool) {
	switch i {
	case ImplNTPd, ImplNTPdig, ImplNTPdate, ImplSNTP, ImplTimesyncd, ImplAndroid:
		return true, false
	case ImplChrony, ImplNTPsec, ImplBusybox:
		return false, true
	}
	return false, false
}

// decodeNanosFraction converts systemd-timesyncd's Transmit, whose
// fraction field holds nanoseconds, to a true NTP timestamp.
func decodeNanosFraction(t Timestamp) Timestamp {
	ns := uint64(t.Fraction())
	frac := (ns<<32 + nanosPerSecond/2) / nanosPerSecond
	return Timestamp(uint64(t.Seconds())<<32 + frac)
}
