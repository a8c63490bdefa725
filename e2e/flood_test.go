package e2e

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// garbage returns the i-th hostile input of the malformed flood.
func garbage(rng *rand.Rand, i int) (kind string, b []byte) {
	hdr := func(li, vn, mode byte) []byte {
		b := make([]byte, 48)
		b[0] = li<<6 | vn<<3 | mode
		binary.BigEndian.PutUint64(b[40:], rng.Uint64())
		return b
	}
	switch i % 10 {
	case 0: // random bytes of random length
		b = make([]byte, rng.IntN(200))
		for j := range b {
			b[j] = byte(rng.UintN(256))
		}
		return "random", b
	case 1: // truncated header
		return "truncated", hdr(0, 4, 3)[:rng.IntN(48)]
	case 2: // bad versions 0, 5, 6, 7
		return "bad_version", hdr(0, []byte{0, 5, 6, 7}[rng.IntN(4)], 3)
	case 3: // every mode with every valid version
		return "mode", hdr(0, byte(1+rng.IntN(4)), byte(rng.IntN(8)))
	case 4: // mode 7 monlist probe (ntpdc: implementation 3, request code 42)
		b = make([]byte, 48)
		b[0], b[1], b[2], b[3] = 0x17, 0x00, 0x03, 0x2a
		return "monlist", b
	case 5: // mode 6 readvar (ntpq), short and padded
		b = []byte{0x16, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0}
		if rng.IntN(2) == 0 {
			b = append(b, make([]byte, 468)...)
		}
		return "mode6", b
	case 6: // oversized: bigger than the reader's buffer
		b = append(hdr(0, 4, 3), make([]byte, 2048+rng.IntN(4000))...)
		return "oversized", b
	case 7: // extension-field junk
		b = append(hdr(0, 4, 3), make([]byte, 4+rng.IntN(100))...)
		binary.BigEndian.PutUint16(b[50:], uint16(rng.IntN(70000)))
		return "ef_junk", b
	case 8: // NTPv1 mode 0 request (answered like chrony)
		return "ntpv1", hdr(0, 1, 0)
	default: // a valid client request
		return "valid", hdr(0, 4, 3)
	}
}

func rssBytes(t testing.TB, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb * 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestMalformedFlood: garbage of every kind is dropped and counted by
// reason; mode 6 and 7 are never answered; no reply is longer than its
// request (amplification ≤ 1.0, byte for byte); memory stays bounded.
// Every input carries a unique Transmit field, so each reply is matched to
// the request it answers by its Origin field.
func TestMalformedFlood(t *testing.T) {
	d := startDaemon(t, daemonOpts{Args: []string{"--ntp.ratelimit.enabled=false"}})
	conn, err := net.Dial("udp4", d.NTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.UDPConn).SetReadBuffer(8 << 20)
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200000
	type sent struct {
		kind string
		len  int
	}
	byTx := make(map[uint64]sent, n)
	var mu sync.Mutex
	sentBytes, sentCount := map[string]int{}, map[string]int{}
	var replies, replyBytes, unmatched, answered67 int
	var bad []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			m, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			replies++
			replyBytes += m
			var s sent
			ok := false
			if m >= 48 {
				s, ok = byTx[binary.BigEndian.Uint64(buf[24:32])]
			}
			switch {
			case !ok:
				unmatched++
				bad = append(bad, fmt.Sprintf("reply of %d bytes answers no request ≥ 48 bytes", m))
			case m > s.len:
				bad = append(bad, fmt.Sprintf("%s request of %d bytes got a %d-byte reply", s.kind, s.len, m))
			case s.kind == "monlist" || s.kind == "mode6":
				answered67++
			}
			mu.Unlock()
		}
	}()
	rss0 := rssBytes(t, d.Proc.Pid())
	var rssMid int64
	for i := 0; i < n; i++ {
		if i == n/2 {
			rssMid = rssBytes(t, d.Proc.Pid())
		}
		kind, b := garbage(rng, i)
		if len(b) >= 48 {
			tx := rng.Uint64()
			binary.BigEndian.PutUint64(b[40:], tx)
			mu.Lock()
			byTx[tx] = sent{kind, len(b)}
			mu.Unlock()
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatalf("write %s: %v", kind, err)
		}
		sentBytes[kind] += len(b)
		sentCount[kind]++
		if i%64 == 63 {
			time.Sleep(100 * time.Microsecond) // a flood, but one the socket buffer holds
		}
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	for i, b := range bad {
		if i < 10 {
			t.Error(b)
		}
	}
	if answered67 > 0 {
		t.Fatalf("%d mode 6/7 requests answered", answered67)
	}
	total := 0
	for _, v := range sentBytes {
		total += v
	}
	if exited, _ := d.Proc.Exited(); exited {
		t.Fatalf("ntpexp died:\n%s", d.Proc.Output())
	}
	m := d.metrics()
	drops, reqs := 0.0, 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "ntpexp_drops_total{") {
			drops += v
		}
		if strings.HasPrefix(k, "ntpexp_requests_total{") {
			reqs += v
		}
	}
	if got := m["ntpexp_responses_total"]; got+drops != reqs {
		t.Errorf("responses %v + drops %v != %v requests", got, drops, reqs)
	}
	if reqs < 0.95*n {
		t.Errorf("ntpexp read only %v of %d requests", reqs, n)
	}
	for _, reason := range []string{"too_short", "bad_version", "bad_mode", "mode_control", "mode_private", "malformed"} {
		if m[`ntpexp_drops_total{reason="`+reason+`"}`] == 0 {
			t.Errorf("no drops counted as %s", reason)
		}
	}
	// Memory is bounded by configuration (queue, caches), not by traffic:
	// it levels off, and the second half of the flood adds little.
	rss1 := rssBytes(t, d.Proc.Pid())
	if rss1 > rssMid+64<<20 || rss1 > 400<<20 {
		t.Errorf("RSS %d MiB at start, %d MiB half-way, %d MiB at the end", rss0>>20, rssMid>>20, rss1>>20)
	}
	t.Logf("%d hostile requests (%d bytes; %v): %d replies (%d bytes), amplification %.3f by bytes, no reply longer than its request, %d unmatched; drops %v of %v read; RSS %d → %d (half-way) → %d MiB",
		n, total, sentCount, replies, replyBytes, float64(replyBytes)/float64(total), unmatched, drops, reqs, rss0>>20, rssMid>>20, rss1>>20)
}

// TestSpoofedSourceFlood: a million distinct source addresses keep the
// client table, the per-client series and memory within their bounds,
// and legitimate clients are still answered.
func TestSpoofedSourceFlood(t *testing.T) {
	const sources, table, series = 1_000_000, 10000, 256
	d := startDaemon(t, daemonOpts{Args: []string{"--performance.max-cache-size", strconv.Itoa(table),
		"--metrics.max-clients", strconv.Itoa(series), "--database.queue-size", "65536"}})
	rss0 := rssBytes(t, d.Proc.Pid())
	rssMid := make(chan int64, 1)
	go func() {
		time.Sleep(13 * time.Second) // about half the sources sent
		rssMid <- rssBytes(t, d.Proc.Pid())
	}()
	legit := make(chan loadResult, 1)
	go func() {
		time.Sleep(2 * time.Second)
		legit <- runLoad(t, d.NTPAddr, "-sources", "200", "-workers", "1", "-first-source", "127.250.0.1",
			"-rate", "40", "-duration", "6s", "-personality", "mix")
	}()
	flood := runLoad(t, d.NTPAddr, "-sources", strconv.Itoa(sources), "-first-source", "127.8.0.1",
		"-rate", "40000", "-duration", "26s", "-workers", "4", "-personality", "sntp")
	l := <-legit
	m := d.metrics()
	rss1 := rssBytes(t, d.Proc.Pid())
	if got := m["ntpexp_clients_tracked"]; got > table {
		t.Errorf("clients tracked %v > table size %d", got, table)
	}
	received := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "ntpexp_requests_total{") {
			received += v
		}
	}
	// Sources repeat only after a million requests: every request the
	// server read beyond the table size evicted a client.
	if ev := m["ntpexp_clients_evicted_total"]; ev < received-table-2000 {
		t.Errorf("evictions %v for %v requests from distinct sources", ev, received)
	}
	perClient := 0
	for k := range m {
		if strings.HasPrefix(k, "ntpexp_client_requests_total{") {
			perClient++
		}
	}
	if perClient > series {
		t.Errorf("%d clients with per-client series, cap %d", perClient, series)
	}
	// Beyond the server's capacity the kernel drops packets whatever their
	// source; legitimate clients must fare no worse than the flood (the
	// churning table must not starve them), and never be cut off.
	floodRatio := float64(flood.Replies) / float64(flood.Sent)
	legitRatio := float64(l.Replies) / float64(max(l.Sent, 1))
	if l.Replies == 0 || legitRatio < min(0.95, floodRatio)-0.1 {
		t.Errorf("legitimate clients: %d of %d answered during the flood (flood: %.0f%% answered)", l.Replies, l.Sent, 100*floodRatio)
	}
	// Bounded by configuration, not by the number of sources: the second
	// half million adds little, and the whole stays under the systemd
	// unit's GOMEMLIMIT (400 MiB; MemoryMax is 512 MiB).
	mid := <-rssMid
	if rss1 > mid+64<<20 || rss1 > 400<<20 {
		t.Errorf("RSS %d MiB at start, %d MiB half-way, %d MiB at the end", rss0>>20, mid>>20, rss1>>20)
	}
	t.Logf("flood: %d requests from %d distinct sources at %.0f/s, %d answered; table %v/%d, evicted %v; per-client series for %d clients (cap %d); clients seen 5m %v; RSS %d → %d (half-way) → %d MiB; legitimate %d/%d answered",
		flood.Sent, min(flood.Sent, sources), flood.RepliesPerSec, flood.Replies, m["ntpexp_clients_tracked"], table, m["ntpexp_clients_evicted_total"],
		perClient, series, m[`ntpexp_clients_seen{window="5m"}`], rss0>>20, mid>>20, rss1>>20, l.Replies, l.Sent)
}
