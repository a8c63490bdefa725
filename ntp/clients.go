package ntp

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
)

// clientEntry is one client's state. Its layout is packed to keep the
// table under 128 bytes per client including the index (see
// BenchmarkClientTableMemory).
type clientEntry struct {
	addr [16]byte // IPv4 as v4-mapped IPv6
	// lastSeen is T2 of the latest request, Unix nanoseconds.
	lastSeen int64
	// lastT1 is the Transmit of the latest request (its T2 is lastSeen).
	// lastT3 is T3 of the reply to it, 0 if it was not answered. Together
	// they let a later request that echoes T3 in Origin complete the
	// exchange.
	lastT1, lastT3 Timestamp
	firstSeen      uint32 // Unix seconds
	requests       uint32
	drops          uint32
	avgInterval    float32 // seconds, running mean
	tokens         uint32  // rate-limit bucket, tokenUnit per response
	prev, next     uint32  // LRU links (index+1, 0 = none)
	version        uint8
	mode           uint8
	poll           int8
	impl           Implementation
	flags          uint8
}

const (
	// flagNotNanos is set once a client's Transmit fraction was seen at
	// or above 10^9, so it cannot be systemd-timesyncd's nanoseconds.
	flagNotNanos = 1 << iota
)

// ClientInfo is a copy of one client's state, for tests and tools.
type ClientInfo struct {
	Addr           netip.Addr
	FirstSeen      int64 // Unix seconds
	LastSeen       int64 // Unix nanoseconds
	Requests       uint32
	Drops          uint32
	AvgInterval    float32
	Version, Mode  uint8
	Poll           int8
	Implementation Implementation
}

// ClientTable is a bounded table of clients keyed by address. When full,
// the least recently seen client is evicted. It is sharded so several
// readers can use it concurrently. Each shard indexes its entries with an
// open-addressing hash table of 4-byte slots (linear probing, deletion by
// backward shift), which keeps the whole table under 128 bytes per client.
type ClientTable struct {
	shards    []tableShard
	mask      uint32
	capacity  int
	evictions atomic.Uint64
}

type tableShard struct {
	mu      sync.Mutex
	slots   []uint32 // entry index+1, 0 = empty; len is a power of 2
	smask   uint64
	entries []clientEntry
	max     int
	head    uint32 // most recently used (index+1)
	tail    uint32 // least recently used (index+1)
	_       [32]byte
}

// NewClientTable makes a table for up to capacity clients. All memory is
// allocated up front, so the packet path does not allocate; large tables
// live outside the Go heap (makeOffHeap) and are never freed.
func NewClientTable(capacity int) *ClientTable {
	if capacity < 1 {
		capacity = 1
	}
	n := 1
	for n < 64 && capacity/(n*2) >= 256 {
		n *= 2
	}
	t := &ClientTable{shards: make([]tableShard, n), mask: uint32(n - 1), capacity: capacity}
	for i := range t.shards {
		s := &t.shards[i]
		// Split the capacity exactly: the first capacity%n shards take one more.
		per := capacity / n
		if i < capacity%n {
			per++
		}
		s.max = per
		// At most 3/4 full, so probe sequences stay short.
		size := 4
		for size*3 < per*4 {
			size *= 2
		}
		s.slots = makeOffHeap[uint32](size)
		s.smask = uint64(size - 1)
		s.entries = makeOffHeap[clientEntry](per)[:0]
	}
	return t
}

// Capacity returns the configured size.
func (t *ClientTable) Capacity() int { return t.capacity }

// Evictions returns how many clients have been evicted.
func (t *ClientTable) Evictions() uint64 { return t.evictions.Load() }

// Len returns the number of tracked clients.
func (t *ClientTable) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

// addrHash mixes the 16 address bytes into 64 well-spread bits.
func addrHash(a *[16]byte) uint64 {
	lo := binary.LittleEndian.Uint64(a[:8])
	hi := binary.LittleEndian.Uint64(a[8:])
	h := (lo ^ 0x9e3779b97f4a7c15) * 0xbf58476d1ce4e5b9
	h ^= hi
	h ^= h >> 31
	h *= 0x94d049bb133111eb
	h ^= h >> 29
	return h
}

func (t *ClientTable) shard(a *[16]byte) *tableShard {
	return &t.shards[uint32(addrHash(a)>>48)&t.mask]
}

// find returns the slot holding a, or the empty slot where it would go.
func (s *tableShard) find(a *[16]byte) (slot uint64, found bool) {
	i := addrHash(a) & s.smask
	for {
		v := s.slots[i]
		if v == 0 {
			return i, false
		}
		if s.entries[v-1].addr == *a {
			return i, true
		}
		i = (i + 1) & s.smask
	}
}

// removeSlot empties slot i and shifts later entries of its probe run
// back, so no tombstones are needed.
func (s *tableShard) removeSlot(i uint64) {
	for {
		s.slots[i] = 0
		j := i
		for {
			j = (j + 1) & s.smask
			v := s.slots[j]
			if v == 0 {
				return
			}
			home := addrHash(&s.entries[v-1].addr) & s.smask
			// Move v back to i unless its home lies cyclically in (i, j].
			if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
				s.slots[i] = v
				i = j
				break
			}
		}
	}
}

// lookup returns the entry for a, creating it (and evicting the least
// recently used one if full). created reports a new entry. The shard must
// be locked.
func (s *tableShard) lookup(t *ClientTable, a [16]byte) (e *clientEntry, created bool) {
	slot, ok := s.find(&a)
	if ok {
		i := s.slots[slot] - 1
		s.touch(i)
		return &s.entries[i], false
	}
	var i uint32
	if len(s.entries) < s.max {
		s.entries = append(s.entries, clientEntry{})
		i = uint32(len(s.entries) - 1)
	} else {
		i = s.tail - 1
		s.unlink(i)
		old, _ := s.find(&s.entries[i].addr)
		s.removeSlot(old)
		t.evictions.Add(1)
		// The removal may have shifted the empty slot for a.
		slot, _ = s.find(&a)
	}
	s.entries[i] = clientEntry{addr: a}
	s.slots[slot] = i + 1
	s.pushFront(i)
	return &s.entries[i], true
}

func (s *tableShard) unlink(i uint32) {
	e := &s.entries[i]
	if e.prev != 0 {
		s.entries[e.prev-1].next = e.next
	} else {
		s.head = e.next
	}
	if e.next != 0 {
		s.entries[e.next-1].prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = 0, 0
}

func (s *tableShard) pushFront(i uint32) {
	e := &s.entries[i]
	e.prev = 0
	e.next = s.head
	if s.head != 0 {
		s.entries[s.head-1].prev = i + 1
	}
	s.head = i + 1
	if s.tail == 0 {
		s.tail = i + 1
	}
}

func (s *tableShard) touch(i uint32) {
	if s.head == i+1 {
		return
	}
	s.unlink(i)
	s.pushFront(i)
}

// Get returns a copy of a client's state.
func (t *ClientTable) Get(addr netip.Addr) (ClientInfo, bool) {
	a := addr.As16()
	s := t.shard(&a)
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, ok := s.find(&a)
	if !ok {
		return ClientInfo{}, false
	}
	return s.entries[s.slots[slot]-1].info(), true
}

func (e *clientEntry) info() ClientInfo {
	return ClientInfo{
		Addr:           netip.AddrFrom16(e.addr).Unmap(),
		FirstSeen:      int64(e.firstSeen),
		LastSeen:       e.lastSeen,
		Requests:       e.requests,
		Drops:          e.drops,
		AvgInterval:    e.avgInterval,
		Version:        e.version,
		Mode:           e.mode,
		Poll:           e.poll,
		Implementation: e.impl,
	}
}

// Range calls f for every client, one shard at a time, until f returns false.
func (t *ClientTable) Range(f func(ClientInfo) bool) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for idx := range s.entries {
			if !f(s.entries[idx].info()) {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
	}
}
