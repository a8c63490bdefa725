package sqlitestore

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
)

// AddressMode says how client addresses are kept.
type AddressMode string

const (
	// AddressFull keeps addresses as received (IPv4-mapped IPv6 unmapped,
	// zones dropped).
	AddressFull AddressMode = "full"
	// AddressTruncate keeps the IPv4 /24 or the IPv6 /48 (host bits zero).
	AddressTruncate AddressMode = "truncate"
	// AddressHash replaces the address by fdXX:XXXX:...: the first 16
	// bytes of HMAC-SHA256(key, 16-byte form of the address) with the first
	// byte forced to 0xfd, so that the result is still an address (in the
	// IPv6 unique-local range fd00::/8) that stays stable for a given key.
	AddressHash AddressMode = "hash"
)

// ParseAddressMode checks a configuration value ("" means full).
func ParseAddressMode(s string) (AddressMode, error) {
	switch m := AddressMode(s); m {
	case "":
		return AddressFull, nil
	case AddressFull, AddressTruncate, AddressHash:
		return m, nil
	}
	return "", fmt.Errorf("address mode must be full, truncate or hash, not %q", s)
}

// Anonymizer applies an AddressMode without allocating, so it can run on
// the packet path. The zero value and a nil *Anonymizer keep addresses
// (full mode). It is safe for concurrent use.
type Anonymizer struct {
	mode AddressMode
	// ipad and opad are the HMAC key XORed with the pads (RFC 2104).
	ipad, opad [sha256.BlockSize]byte
}

// NewAnonymizer returns an Anonymizer for mode. Mode "hash" needs a key.
func NewAnonymizer(mode AddressMode, key []byte) (*Anonymizer, error) {
	if mode == "" {
		mode = AddressFull
	}
	a := &Anonymizer{mode: mode}
	switch mode {
	case AddressFull, AddressTruncate:
	case AddressHash:
		if len(key) == 0 {
			return nil, fmt.Errorf("address mode hash needs a key")
		}
		k := key
		if len(k) > sha256.BlockSize {
			s := sha256.Sum256(k)
			k = s[:]
		}
		for i := range a.ipad {
			var b byte
			if i < len(k) {
				b = k[i]
			}
			a.ipad[i] = b ^ 0x36
			a.opad[i] = b ^ 0x5c
		}
	default:
		return nil, fmt.Errorf("address mode must be full, truncate or hash, not %q", mode)
	}
	return a, nil
}

// Mode returns the anonymizer's mode.
func (a *Anonymizer) Mode() AddressMode {
	if a == nil || a.mode == "" {
		return AddressFull
	}
	return a.mode
}

// Addr returns the stored form of addr. An IPv4-mapped IPv6 address is
// treated as IPv4 and zones are dropped, in every mode. The invalid
// address is returned unchanged.
func (a *Anonymizer) Addr(addr netip.Addr) netip.Addr {
	if !addr.IsValid() {
		return addr
	}
	addr = addr.Unmap().WithZone("")
	switch a.Mode() {
	case AddressTruncate:
		if addr.Is4() {
			b := addr.As4()
			b[3] = 0
			return netip.AddrFrom4(b)
		}
		b := addr.As16()
		for i := 6; i < 16; i++ {
			b[i] = 0
		}
		return netip.AddrFrom16(b)
	case AddressHash:
		return a.hash(addr)
	}
	return addr
}

// hash computes HMAC-SHA256(key, addr.As16()) by its definition
// H(K^opad || H(K^ipad || m)) with fixed-size buffers, which keeps it
// free of allocations (crypto/hmac allocates per use).
func (a *Anonymizer) hash(addr netip.Addr) netip.Addr {
	var inner [sha256.BlockSize + 16]byte
	copy(inner[:], a.ipad[:])
	m := addr.As16()
	copy(inner[sha256.BlockSize:], m[:])
	ih := sha256.Sum256(inner[:])
	var outer [sha256.BlockSize + sha256.Size]byte
	copy(outer[:], a.opad[:])
	copy(outer[sha256.BlockSize:], ih[:])
	oh := sha256.Sum256(outer[:])
	var out [16]byte
	copy(out[:], oh[:16])
	out[0] = 0xfd
	return netip.AddrFrom16(out)
}

// AnonymizeAddr returns the stored form of addr under mode with key (used
// only by mode hash). It panics on an unknown mode or a hash mode without
// key (configuration validation rejects both); on the packet path build an
// Anonymizer once instead.
func AnonymizeAddr(mode AddressMode, key []byte, addr netip.Addr) netip.Addr {
	a, err := NewAnonymizer(mode, key)
	if err != nil {
		panic("sqlitestore: " + err.Error())
	}
	return a.Addr(addr)
}
