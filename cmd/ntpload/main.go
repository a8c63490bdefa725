// Command ntpload is an NTP load generator. It simulates many clients,
// each with its own source address in 127.0.0.0/8 (set per packet with
// IP_PKTINFO, so no privilege or spoofing is needed) and each worker with
// its own source port, speaking like chrony, ntpd or an SNTP client. It
// measures replies per second, loss, round trips and the server's own
// processing time (T3 − T2, read from the replies), so that any NTP server
// can be measured the same way.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

const (
	ntpEpochOffset = 2_208_988_800
	headerLen      = 48
)

type personality int

const (
	pChrony personality = iota // data-minimised: random Transmit, precision 32
	pNTPd                      // real Transmit; Origin/Receive echo the previous reply
	pSNTP                      // real Transmit, LI 3, nothing else
)

func parsePersonality(s string) ([]personality, error) {
	switch s {
	case "chrony":
		return []personality{pChrony}, nil
	case "ntpd":
		return []personality{pNTPd}, nil
	case "sntp":
		return []personality{pSNTP}, nil
	case "mix":
		return []personality{pChrony, pNTPd, pSNTP}, nil
	}
	return nil, fmt.Errorf("unknown personality %q (want chrony, ntpd, sntp or mix)", s)
}

type options struct {
	server      string
	workers     int
	depth       int
	sources     int
	firstSource netip.Addr
	duration    time.Duration
	rate        float64
	timeout     time.Duration
	personality string
	jsonOut     bool
	version     int
	payload     int
	echo        bool
	skew        time.Duration
	arrivals    string
	seed        uint64
}

// Result is the JSON output.
type Result struct {
	Server          string  `json:"server"`
	Mode            string  `json:"mode"`
	Personality     string  `json:"personality"`
	Workers         int     `json:"workers"`
	Sources         int     `json:"sources"`
	DurationSeconds float64 `json:"duration_seconds"`
	Sent            uint64  `json:"sent"`
	Replies         uint64  `json:"replies"`
	Lost            uint64  `json:"lost"`
	LossRatio       float64 `json:"loss_ratio"`
	Mismatched      uint64  `json:"mismatched"`
	Invalid         uint64  `json:"invalid"`
	KoD             uint64  `json:"kod"`
	RepliesPerSec   float64 `json:"replies_per_second"`
	OfferedPerSec   float64 `json:"offered_per_second,omitempty"`
	Arrivals        string  `json:"arrivals,omitempty"`
	RTT             Pcts    `json:"rtt_seconds"`
	Processing      Pcts    `json:"processing_seconds"`
}

// Pcts are percentiles of a sample, in seconds.
type Pcts struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	N   int     `json:"n"`
}

func pcts(xs []time.Duration) Pcts {
	if len(xs) == 0 {
		return Pcts{}
	}
	slices.Sort(xs)
	q := func(p float64) float64 { return xs[min(len(xs)-1, int(p*float64(len(xs))))].Seconds() }
	return Pcts{P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: xs[len(xs)-1].Seconds(), N: len(xs)}
}

func main() {
	o := options{}
	fs := flag.NewFlagSet("ntpload", flag.ExitOnError)
	fs.StringVar(&o.server, "server", "127.0.0.1:123", "NTP server address (IPv4 host:port)")
	fs.IntVar(&o.workers, "workers", 4, "sending goroutines, each with its own socket and source port")
	fs.IntVar(&o.depth, "depth", 16, "closed loop: requests in flight per worker")
	fs.IntVar(&o.sources, "sources", 1024, "distinct client source addresses, from -first-source on")
	first := fs.String("first-source", "127.1.0.1", "first client source address (loopback range)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: offered requests per second in total (0 = closed loop)")
	fs.DurationVar(&o.timeout, "timeout", time.Second, "closed loop: how long to wait for a reply")
	fs.StringVar(&o.personality, "personality", "chrony", "client personality: chrony, ntpd, sntp or mix")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
	fs.IntVar(&o.version, "version", 4, "NTP version in requests")
	fs.IntVar(&o.payload, "length", headerLen, "request length in bytes (>= 48; extra bytes are zero)")
	fs.DurationVar(&o.skew, "skew", 0, "clients' clock offset from the real time (ntpd and SNTP personalities put it in their timestamps; chrony-like clients reveal none)")
	fs.StringVar(&o.arrivals, "arrivals", "poisson", "open loop: poisson (exponential gaps, as from many independent clients) or uniform (evenly spaced)")
	fs.Uint64Var(&o.seed, "seed", 1, "open loop: seed of the Poisson arrivals")
	fs.BoolVar(&o.echo, "echo", false, "the server is a UDP echo server (benchmark ceiling): a reply is the request itself")
	fs.Parse(os.Args[1:])
	var err error
	if o.firstSource, err = netip.ParseAddr(*first); err != nil || !o.firstSource.Is4() {
		fmt.Fprintf(os.Stderr, "ntpload: -first-source %q: want an IPv4 address\n", *first)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ntpload: %v\n", err)
		os.Exit(1)
	}
	if o.jsonOut {
		json.NewEncoder(os.Stdout).Encode(res)
	} else {
		printHuman(os.Stdout, res)
	}
}

func printHuman(w io.Writer, r *Result) {
	fmt.Fprintf(w, "server %s, %s loop, %s clients, %d workers, %d source addresses, %.1f s\n",
		r.Server, r.Mode, r.Personality, r.Workers, r.Sources, r.DurationSeconds)
	if r.OfferedPerSec > 0 {
		fmt.Fprintf(w, "offered      %12.0f requests/s, %s arrivals\n", r.OfferedPerSec, r.Arrivals)
	}
	fmt.Fprintf(w, "replies      %12.0f /s   (%d sent, %d replies, %d lost = %.3f%%)\n", r.RepliesPerSec, r.Sent, r.Replies, r.Lost, 100*r.LossRatio)
	fmt.Fprintf(w, "bad replies  %d mismatched, %d invalid, %d KoD\n", r.Mismatched, r.Invalid, r.KoD)
	fmt.Fprintf(w, "round trip   p50 %s  p90 %s  p99 %s  max %s\n", us(r.RTT.P50), us(r.RTT.P90), us(r.RTT.P99), us(r.RTT.Max))
	fmt.Fprintf(w, "T3-T2        p50 %s  p90 %s  p99 %s  max %s\n", us(r.Processing.P50), us(r.Processing.P90), us(r.Processing.P99), us(r.Processing.Max))
}

func us(s float64) string { return fmt.Sprintf("%.1fµs", s*1e6) }

// client is one simulated client's state.
type client struct {
	src    [4]byte
	pers   personality
	prevT3 uint64
	prevT4 uint64
}

// pend is a request in flight.
type pend struct {
	idx int       // client index
	at  time.Time // when it was sent
}

type worker struct {
	id      int
	echo    bool
	skew    time.Duration // the clients' clock error
	conn    *ipv4.PacketConn
	raw     net.PacketConn
	dst     *net.UDPAddr
	clients []client
	pending map[uint64]pend // Transmit → request in flight
	cur     int             // client index being built
	next    int             // the client to send the next request

	sent, replies, mismatched, invalid, kod uint64
	rtt, proc                               []time.Duration
}

func ntpNow(t time.Time) uint64 {
	ns := t.UnixNano()
	sec := uint64(ns/1e9 + ntpEpochOffset)
	frac := (uint64(ns%1e9) << 32) / 1e9
	return sec<<32 | frac
}

func diff(a, b uint64) time.Duration {
	d := int64(a - b)
	return time.Duration((float64(d) / (1 << 32)) * 1e9)
}

func (w *worker) build(buf []byte, c *client, version int) uint64 {
	for i := range buf {
		buf[i] = 0
	}
	now := time.Now()
	var tx uint64
	switch c.pers {
	case pChrony:
		buf[0] = byte(version<<3 | 3)
		buf[2] = 6
		buf[3] = 32
		tx = rand.Uint64() | 1
	case pNTPd:
		buf[0] = byte(version<<3 | 3)
		buf[1] = 3
		buf[2] = 6
		buf[3] = 0xec // precision -20
		binary.BigEndian.PutUint32(buf[12:], 0x7f000001)
		binary.BigEndian.PutUint64(buf[24:], c.prevT3)
		binary.BigEndian.PutUint64(buf[32:], c.prevT4)
		tx = ntpNow(now.Add(w.skew))
	case pSNTP:
		buf[0] = byte(3<<6 | version<<3 | 3)
		tx = ntpNow(now.Add(w.skew))
	}
	// Unique per client even if the clock did not move.
	for {
		if _, dup := w.pending[tx]; !dup {
			break
		}
		tx++
	}
	binary.BigEndian.PutUint64(buf[40:], tx)
	w.pending[tx] = pend{idx: w.cur, at: now}
	return tx
}

// handle processes one reply; it returns the client index or -1.
func (w *worker) handle(b []byte, at time.Time) int {
	if len(b) < headerLen {
		w.invalid++
		return -1
	}
	key := binary.BigEndian.Uint64(b[24:]) // Origin echoes our Transmit
	if w.echo {
		key = binary.BigEndian.Uint64(b[40:])
	}
	p, ok := w.pending[key]
	if !ok {
		w.mismatched++
		return -1
	}
	delete(w.pending, key)
	idx := p.idx
	c := &w.clients[idx]
	if w.echo {
		w.replies++
		w.rtt = append(w.rtt, at.Sub(p.at))
		return idx
	}
	mode, stratum := b[0]&7, b[1]
	if stratum == 0 {
		w.kod++
		return idx
	}
	if mode != 4 {
		w.invalid++
		return idx
	}
	w.replies++
	t2 := binary.BigEndian.Uint64(b[32:])
	t3 := binary.BigEndian.Uint64(b[40:])
	w.proc = append(w.proc, diff(t3, t2))
	w.rtt = append(w.rtt, at.Sub(p.at))
	c.prevT3, c.prevT4 = t3, ntpNow(at.Add(w.skew))
	return idx
}

func newWorker(o options, id int, pers []personality, dst *net.UDPAddr) (*worker, error) {
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return nil, err
	}
	if uc, ok := pc.(*net.UDPConn); ok {
		uc.SetReadBuffer(4 << 20)
		uc.SetWriteBuffer(4 << 20)
	}
	w := &worker{id: id, echo: o.echo, skew: o.skew, conn: ipv4.NewPacketConn(pc), raw: pc, dst: dst, pending: map[uint64]pend{}}
	// This worker's share of the source addresses.
	base := o.firstSource.As4()
	start := binary.BigEndian.Uint32(base[:])
	for i := id; i < o.sources; i += o.workers {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], start+uint32(i))
		w.clients = append(w.clients, client{src: a, pers: pers[i%len(pers)]})
	}
	if len(w.clients) == 0 {
		pc.Close()
		return nil, errors.New("more workers than sources")
	}
	return w, nil
}

func run(ctx context.Context, o options) (*Result, error) {
	pers, err := parsePersonality(o.personality)
	if err != nil {
		return nil, err
	}
	dst, err := net.ResolveUDPAddr("udp4", o.server)
	if err != nil {
		return nil, err
	}
	if o.arrivals != "poisson" && o.arrivals != "uniform" {
		return nil, fmt.Errorf("-arrivals %q: want poisson or uniform", o.arrivals)
	}
	if o.rate < 0 {
		return nil, fmt.Errorf("-rate %g: want 0 (closed loop) or more", o.rate)
	}
	if o.payload < headerLen {
		return nil, fmt.Errorf("-length %d: at least %d", o.payload, headerLen)
	}
	if o.workers < 1 || o.sources < o.workers {
		return nil, fmt.Errorf("need 1 <= workers (%d) <= sources (%d)", o.workers, o.sources)
	}
	workers := make([]*worker, o.workers)
	for i := range workers {
		if workers[i], err = newWorker(o, i, pers, dst); err != nil {
			return nil, err
		}
		defer workers[i].raw.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			if o.rate > 0 {
				w.openLoop(ctx, o, o.rate/float64(o.workers), o.seed+uint64(w.id))
			} else {
				w.closedLoop(ctx, o)
			}
		}(w)
	}
	wg.Wait()
	// The rate is over the time requests were sent: the open loop's last
	// moment for late replies is not part of it.
	elapsed := min(time.Since(start), o.duration)
	res := &Result{Server: o.server, Mode: "closed", Personality: o.personality, Workers: o.workers,
		Sources: o.sources, DurationSeconds: elapsed.Seconds()}
	if o.rate > 0 {
		res.Mode, res.OfferedPerSec, res.Arrivals = "open", o.rate, o.arrivals
	}
	var rtt, proc []time.Duration
	for _, w := range workers {
		res.Sent += w.sent
		res.Replies += w.replies
		res.Mismatched += w.mismatched
		res.Invalid += w.invalid
		res.KoD += w.kod
		rtt = append(rtt, w.rtt...)
		proc = append(proc, w.proc...)
	}
	answered := res.Replies + res.KoD + res.Invalid
	if res.Sent > answered {
		res.Lost = res.Sent - answered
	}
	if res.Sent > 0 {
		res.LossRatio = float64(res.Lost) / float64(res.Sent)
	}
	res.RepliesPerSec = float64(res.Replies) / elapsed.Seconds()
	res.RTT, res.Processing = pcts(rtt), pcts(proc)
	return res, nil
}

// closedLoop keeps depth requests in flight: it sends a window, reads the
// replies until all came back or the timeout passed, and repeats.
func (w *worker) closedLoop(ctx context.Context, o options) {
	depth := min(o.depth, len(w.clients))
	msgs := make([]ipv4.Message, depth)
	bufs := make([][]byte, depth)
	for i := range msgs {
		bufs[i] = make([]byte, max(o.payload, 2048))
		msgs[i].Buffers = [][]byte{bufs[i][:o.payload]}
		msgs[i].Addr = w.dst
	}
	oobs := newOOBs(depth)
	rmsgs := make([]ipv4.Message, depth)
	rbufs := make([][]byte, depth)
	for i := range rmsgs {
		rbufs[i] = make([]byte, 2048)
		rmsgs[i].Buffers = [][]byte{rbufs[i]}
	}
	for ctx.Err() == nil {
		// Send a window from the next clients in turn.
		for i := 0; i < depth; i++ {
			w.fill(&msgs[i], oobs[i], o.version)
		}
		if w.send(msgs[:depth]) != nil {
			return
		}
		deadline := time.Now().Add(o.timeout)
		w.raw.SetReadDeadline(deadline)
		// The window's replies are read even when the run has just
		// ended: requests in flight at the end are not lost.
		for len(w.pending) > 0 {
			n, err := w.conn.ReadBatch(rmsgs, 0)
			at := time.Now()
			if err != nil {
				break // timeout: the rest are lost
			}
			for i := 0; i < n; i++ {
				w.handle(rbufs[i][:rmsgs[i].N], at)
			}
		}
		// Forget what did not come back in time.
		clear(w.pending)
	}
}

// openLoop offers requests at a fixed mean rate whatever comes back, and
// reads replies in a second goroutine. Arrivals are Poisson by default
// (exponential gaps, as from many independent clients) or evenly spaced.
// The worker sleeps until the next request is due and then sends every
// request that is due, in one sendmmsg. Go's timers wake it about every
// millisecond at best, so requests leave in small bursts (the requests of
// about 1 ms of a worker's share of the rate). Finer pacing with
// nanosleep cost 28 to 78 µs of CPU per wake-up on the benchmark's
// virtual machine, far more than the servers spend per request. Every
// server gets the same arrivals from the same seed.
func (w *worker) openLoop(ctx context.Context, o options, rate float64, seed uint64) {
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		rmsgs := make([]ipv4.Message, 32)
		for i := range rmsgs {
			rmsgs[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for {
			w.raw.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := w.conn.ReadBatch(rmsgs, 0)
			at := time.Now()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
					continue
				}
				if ctx.Err() != nil {
					return
				}
				continue
			}
			mu.Lock()
			for i := 0; i < n; i++ {
				w.handle(rmsgs[i].Buffers[0][:rmsgs[i].N], at)
			}
			mu.Unlock()
		}
	}()
	const batch = 16 // at most this many due requests in one sendmmsg
	msgs := make([]ipv4.Message, batch)
	oobs := newOOBs(batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, o.payload)}
		msgs[i].Addr = w.dst
	}
	rng := rand.New(rand.NewPCG(seed, 0x6e74706c6f6164))
	mean := float64(time.Second) / rate
	gap := func() time.Duration {
		if o.arrivals == "uniform" {
			return time.Duration(mean)
		}
		return time.Duration(rng.ExpFloat64() * mean)
	}
	start := time.Now()
	due := start.Add(gap())
	lastPurge := start
	for ctx.Err() == nil {
		now := time.Now()
		// Sleeps shorter than the kernel's wake-up latency would
		// oversleep: send up to 20 µs early instead.
		if wait := due.Sub(now); wait > 20*time.Microsecond {
			time.Sleep(wait)
			continue
		}
		n := 0
		mu.Lock()
		for n < batch && due.Sub(now) <= 20*time.Microsecond {
			w.fill(&msgs[n], oobs[n], o.version)
			n++
			due = due.Add(gap())
		}
		mu.Unlock()
		w.send(msgs[:n])
		// A worker that cannot keep up does not save up a burst: what
		// it could not send 100 ms ago is not offered (sent tells).
		if late := now.Sub(due); late > 100*time.Millisecond {
			due = now
		}
		// Requests older than the timeout are lost; forget them.
		if now.Sub(lastPurge) > 100*time.Millisecond {
			mu.Lock()
			for tx, p := range w.pending {
				if now.Sub(p.at) > o.timeout {
					delete(w.pending, tx)
				}
			}
			mu.Unlock()
			lastPurge = now
		}
	}
	// Give late replies a moment.
	time.Sleep(200 * time.Millisecond)
	w.raw.SetReadDeadline(time.Now())
	<-done
}

// fill builds the next client's request into m, its source address
// into m's control message oob.
func (w *worker) fill(m *ipv4.Message, oob []byte, version int) {
	c := &w.clients[w.next]
	w.cur = w.next
	w.next = (w.next + 1) % len(w.clients)
	w.build(m.Buffers[0], c, version)
	m.OOB = setSource(oob, c.src)
}

// send sends msgs with sendmmsg and counts them.
func (w *worker) send(msgs []ipv4.Message) error {
	for sent := 0; sent < len(msgs); {
		n, err := w.conn.WriteBatch(msgs[sent:], 0)
		if err != nil {
			return err
		}
		sent += n
	}
	w.sent += uint64(len(msgs))
	return nil
}

// newOOBs makes n IP_PKTINFO control messages to fill in per packet.
func newOOBs(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = (&ipv4.ControlMessage{Src: net.IPv4(127, 0, 0, 1)}).Marshal()
	}
	return out
}

// setSource writes src into a control message made by newOOBs. The
// in_pktinfo's ipi_spec_dst (the source address) follows the 16-byte
// cmsghdr and the 4-byte ifindex.
func setSource(oob []byte, src [4]byte) []byte {
	copy(oob[16+4:16+8], src[:])
	return oob
}
