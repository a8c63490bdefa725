package ntp

import (
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func addrN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestClientTableEvictsLeastRecentlySeen(t *testing.T) {
	tab := NewClientTable(3)
	touch := func(i int) {
		a := addrN(i).As16()
		s := tab.shard(&a)
		s.mu.Lock()
		s.lookup(tab, a)
		s.mu.Unlock()
	}
	touch(1)
	touch(2)
	touch(3)
	touch(1) // 2 is now the least recently seen
	touch(4)
	if _, ok := tab.Get(addrN(2)); ok {
		t.Fatal("least recently seen client not evicted")
	}
	for _, i := range []int{1, 3, 4} {
		if _, ok := tab.Get(addrN(i)); !ok {
			t.Fatalf("client %d evicted", i)
		}
	}
	if tab.Evictions() != 1 || tab.Len() != 3 {
		t.Fatalf("evictions %d len %d", tab.Evictions(), tab.Len())
	}
}

func TestClientTableCapacityExact(t *testing.T) {
	for _, c := range []int{1, 10, 10000, 100001} {
		tab := NewClientTable(c)
		for i := 0; i < 2*c+100; i++ {
			a := addrN(i).As16()
			s := tab.shard(&a)
			s.mu.Lock()
			s.lookup(tab, a)
			s.mu.Unlock()
		}
		if tab.Len() > c {
			t.Fatalf("capacity %d: %d clients", c, tab.Len())
		}
	}
}

// BenchmarkClientTableMemory reports the heap bytes per client of a full
// table of a million clients (target: at most 128).
func BenchmarkClientTableMemory(b *testing.B) {
	const n = 1_000_000
	var perClient, heapPerClient float64
	for it := 0; it < b.N; it++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rss0 := residentBytes(b)
		tab := NewClientTable(n)
		for i := 0; i < n; i++ {
			a := addrN(i).As16()
			s := tab.shard(&a)
			s.mu.Lock()
			s.lookup(tab, a)
			s.mu.Unlock()
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		// The table is mostly outside the Go heap (makeOffHeap): count
		// what the process holds in memory, and the heap part apart.
		perClient = float64(residentBytes(b)-rss0) / n
		heapPerClient = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		runtime.KeepAlive(tab)
	}
	b.ReportMetric(perClient, "bytes/client")
	b.ReportMetric(heapPerClient, "heap-bytes/client")
	b.ReportMetric(0, "ns/op")
}

// residentBytes is the process's resident set size (VmRSS).
func residentBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// BenchmarkClientTableLookup measures a lookup-or-insert in a full table
// with evictions (the packet path's table work).
func BenchmarkClientTableLookup(b *testing.B) {
	tab := NewClientTable(100000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		a := addrN(i % 150000).As16()
		s := tab.shard(&a)
		s.mu.Lock()
		s.lookup(tab, a)
		s.mu.Unlock()
	}
}

// TestClientTableModel checks the hash index against a reference LRU
// through many random lookups with evictions (backward-shift deletion).
func TestClientTableModel(t *testing.T) {
	const capacity = 300
	tab := NewClientTable(capacity)
	var lru []int // most recent last
	pos := func(k int) int {
		for i, v := range lru {
			if v == k {
				return i
			}
		}
		return -1
	}
	rng := uint64(12345)
	for step := 0; step < 200000; step++ {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		k := int(rng % 700)
		a := addrN(k).As16()
		s := tab.shard(&a)
		s.mu.Lock()
		_, created := s.lookup(tab, a)
		s.mu.Unlock()
		if p := pos(k); p >= 0 {
			if created {
				t.Fatalf("step %d: client %d present but created again", step, k)
			}
			lru = append(lru[:p], lru[p+1:]...)
		} else if !created {
			t.Fatalf("step %d: client %d absent but found", step, k)
		}
		lru = append(lru, k)
		// The table evicts per shard; with one shard (capacity < 512) it
		// is one LRU, like the model.
		if len(lru) > capacity {
			lru = lru[1:]
		}
	}
	for k := 0; k < 700; k++ {
		_, ok := tab.Get(addrN(k))
		if ok != (pos(k) >= 0) {
			t.Fatalf("client %d: table %v, model %v", k, ok, pos(k) >= 0)
		}
	}
}
