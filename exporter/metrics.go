// Package exporter turns ntp.Observations into Prometheus metrics and
// serves them, with the REST API, over HTTP (TLS and basic auth through
// the exporter-toolkit web configuration file).
//
// All metric names, labels and label values are listed in docs/metrics.md.
package exporter

import (
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"

	"github.com/ntpexp/ntpexp/ntp"
)

const (
	// DefaultMaxClients is the default number of most recently active
	// clients that carry per-client series.
	DefaultMaxClients = 256
	// DefaultClientMinIdle is the default MetricsConfig.ClientMinIdle.
	DefaultClientMinIdle = 5 * time.Minute
	// DefaultMaxWatchedClients is the default bound on watched clients
	// (MetricsConfig.Watch) that carry per-client series.
	DefaultMaxWatchedClients = 256

	// numModes and numVersions bound the mode and version labels: both
	// are 3-bit header fields.
	numModes    = 8
	numVersions = 8

	nativeBucketFactor        = 1.1
	nativeMaxBuckets          = 100
	nativeMaxBucketsPerClient = 40
	nativeMinResetDuration    = time.Hour
)

// Bucket layouts of the classic histograms (native histograms are exposed
// alongside).
var (
	// offsetBuckets covers both signs from 10 µs to a year. 50 ms and
	// 100 ms are edges because they are the usual alerting thresholds;
	// 1 s is chrony's default step threshold, and the large edges tell a
	// wrong time zone (1 h) or a reset RTC (a day, a year) apart.
	offsetBuckets = symmetricBuckets(1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.5, 1, 10, 60, 3600, 86400, 31536000)
	// delayBuckets covers round-trip delays from 100 µs (LAN) to 2.5 s.
	delayBuckets = []float64{1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}
	// processingBuckets covers the server's receive-to-transmit time.
	processingBuckets = []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2}
)

// symmetricBuckets returns −edges (descending magnitude), 0 and +edges.
// edges must be positive and increasing.
func symmetricBuckets(edges ...float64) []float64 {
	b := make([]float64, 0, 2*len(edges)+1)
	for i := len(edges) - 1; i >= 0; i-- {
		b = append(b, -edges[i])
	}
	b = append(b, 0)
	return append(b, edges...)
}

// MetricsConfig configures Metrics.
type MetricsConfig struct {
	// MaxClients is how many of the most recently active clients carry
	// per-client series. 0 means DefaultMaxClients; a negative value
	// disables per-client series for all but watched clients.
	MaxClients int
	// ClientMinIdle is how long the least recently used client must have
	// been idle before a new client takes its per-client series place; a
	// new client arriving earlier gets no series. 0 means
	// DefaultClientMinIdle; a negative value means plain LRU (evict on
	// every miss).
	ClientMinIdle time.Duration
	// Watch lists prefixes whose clients always carry per-client series.
	// They are not counted against MaxClients.
	Watch []netip.Prefix
	// MaxWatchedClients bounds the number of watched clients with series;
	// further watched clients are handled like unwatched ones. 0 means
	// DefaultMaxWatchedClients.
	MaxWatchedClients int
	// Now is the clock used at collection time to expire the
	// ntpexp_clients_seen windows. nil means time.Now.
	Now func() time.Time
	// NativeHistograms also keeps the per-request histograms as native
	// histograms, exposed to scrapers that negotiate protobuf. They cost
	// about 1 µs of CPU per request (client_golang looks up a sparse
	// bucket per observation), 15% of the packet path, so they are off
	// unless asked for; the classic buckets are always there.
	NativeHistograms bool
}

// nativeFactor is the NativeHistogramBucketFactor of the per-request
// histograms: 0 (classic buckets only) unless native histograms are on.
func (c MetricsConfig) nativeFactor() float64 {
	if c.NativeHistograms {
		return nativeBucketFactor
	}
	return 0
}

// Metrics is the ntp.Consumer that keeps the observation metrics.
//
// Label sets (all bounded):
//   - mode, version: "0" … "7" (the 3-bit header fields).
//   - reason: the values of ntp.DropReasons().
//   - method: "apparent", "exchange".
//   - implementation: the values of ntp.Implementations().
//   - window: "5m", "1h", "24h".
//   - client: IP address; at most MaxClients + MaxWatchedClients values.
type Metrics struct {
	requests      [numModes][numVersions]prometheus.Counter
	byImpl        []prometheus.Counter // indexed by ntp.Implementation
	responses     prometheus.Counter
	kod           prometheus.Counter
	requestBytes  prometheus.Counter
	responseBytes prometheus.Counter
	// drops is indexed by ntp.DropReason; entries not in
	// ntp.DropReasons() are nil.
	drops []prometheus.Counter
	// offset is indexed by [method − MethodApparent][implementation].
	offset     [2][]prometheus.Observer
	delay      prometheus.Observer
	processing prometheus.Observer

	seen    *distinctClients
	clients *clientTracker
	now     func() time.Time
}

// NewMetrics creates the observation metrics and registers them, and,
// when stats is not nil, the server's own metrics (client table, advertised
// clock state), on reg. reg may be nil (nothing is registered). Like
// promauto, it panics if a registration fails.
func NewMetrics(reg prometheus.Registerer, stats ntp.Stats, cfg MetricsConfig) *Metrics {
	if cfg.MaxClients == 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.ClientMinIdle == 0 {
		cfg.ClientMinIdle = DefaultClientMinIdle
	}
	if cfg.MaxWatchedClients <= 0 {
		cfg.MaxWatchedClients = DefaultMaxWatchedClients
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Metrics{now: cfg.Now}
	var cs []prometheus.Collector

	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ntpexp_requests_total",
		Help: "Requests received, by header mode and version (\"0\" to \"7\"); requests too short to carry a first byte count as mode and version \"0\".",
	}, []string{"mode", "version"})
	for mode := range numModes {
		for version := range numVersions {
			m.requests[mode][version] = requests.WithLabelValues(digit(mode), digit(version))
		}
	}
	m.responses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ntpexp_responses_total",
		Help: "Replies sent, including kiss-o'-death replies.",
	})
	m.kod = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ntpexp_kod_responses_total",
		Help: "Kiss-o'-death (RATE) replies sent.",
	})
	m.requestBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ntpexp_request_bytes_total",
		Help: "UDP payload bytes of all requests received.",
	})
	m.responseBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ntpexp_response_bytes_total",
		Help: "UDP payload bytes of all replies sent; compare with ntpexp_request_bytes_total to check for amplification.",
	})
	drops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ntpexp_drops_total",
		Help: "Requests not answered normally, by reason.",
	}, []string{"reason"})
	for _, r := range ntp.DropReasons() {
		if int(r) >= len(m.drops) {
			m.drops = append(m.drops, make([]prometheus.Counter, int(r)+1-len(m.drops))...)
		}
		m.drops[r] = drops.WithLabelValues(r.String())
	}
	implReqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ntpexp_implementation_requests_total",
		Help: "Well-formed client requests (answered or rate-limited), by the client implementation recognised from the request.",
	}, []string{"implementation"})
	for _, i := range ntp.Implementations() {
		if int(i) >= len(m.byImpl) {
			m.byImpl = append(m.byImpl, make([]prometheus.Counter, int(i)+1-len(m.byImpl))...)
		}
		m.byImpl[i] = implReqs.WithLabelValues(i.String())
	}
	cs = append(cs, requests, implReqs, m.responses, m.kod, m.requestBytes, m.responseBytes, drops)

	offset := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:                            "ntpexp_client_offset_seconds",
		Help:                            "Client clock offsets (client minus server). method=\"apparent\" includes the request's one-way delay; method=\"exchange\" is the full four-timestamp offset.",
		Buckets:                         offsetBuckets,
		NativeHistogramBucketFactor:     cfg.nativeFactor(),
		NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
		NativeHistogramMinResetDuration: nativeMinResetDuration,
	}, []string{"method", "implementation"})
	impls := ntp.Implementations()
	for i, method := range []ntp.OffsetMethod{ntp.MethodApparent, ntp.MethodExchange} {
		m.offset[i] = make([]prometheus.Observer, int(slices.Max(impls))+1)
		for _, impl := range impls {
			m.offset[i][impl] = offset.WithLabelValues(method.String(), impl.String())
		}
	}
	delay := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:                            "ntpexp_client_delay_seconds",
		Help:                            "Round-trip delay of full NTP exchanges (method=\"exchange\").",
		Buckets:                         delayBuckets,
		NativeHistogramBucketFactor:     cfg.nativeFactor(),
		NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
		NativeHistogramMinResetDuration: nativeMinResetDuration,
	})
	processing := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:                            "ntpexp_processing_seconds",
		Help:                            "Server processing time from request receive to reply transmit, answered requests only.",
		Buckets:                         processingBuckets,
		NativeHistogramBucketFactor:     cfg.nativeFactor(),
		NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
		NativeHistogramMinResetDuration: nativeMinResetDuration,
	})
	m.delay, m.processing = delay, processing
	cs = append(cs, offset, delay, processing)

	m.seen = newDistinctClients(cfg.Now)
	m.clients = newClientTracker(cfg.MaxClients, cfg.MaxWatchedClients, cfg.ClientMinIdle, normalizePrefixes(cfg.Watch), cfg.nativeFactor())
	cs = append(cs, m.seen)
	cs = append(cs, m.clients.collectors()...)

	if stats != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "ntpexp_clients_tracked",
				Help: "Clients currently in the server's client table (rate limiting and interleaved mode state).",
			}, func() float64 { return float64(stats.TrackedClients()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "ntpexp_client_table_capacity",
				Help: "Configured size of the server's client table.",
			}, func() float64 { return float64(stats.TableCapacity()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "ntpexp_clients_evicted_total",
				Help: "Clients evicted from the full client table.",
			}, func() float64 { return float64(stats.Evictions()) }),
			newClockCollector(stats),
		)
	}
	if reg != nil {
		reg.MustRegister(cs...)
	}
	return m
}

// Observe implements ntp.Consumer. It does not block (short critical
// sections only) and, for clients without per-client series or whose
// series exist, does not allocate.
func (m *Metrics) Observe(o *ntp.Observation) {
	mode, version := o.Mode&(numModes-1), o.Version&(numVersions-1)
	if o.Length == 0 {
		mode, version = 0, 0
	}
	m.requests[mode][version].Inc()
	m.requestBytes.Add(float64(o.Length))
	if o.ReplyLength > 0 {
		m.responses.Inc()
		m.responseBytes.Add(float64(o.ReplyLength))
	}
	if o.KoD {
		m.kod.Inc()
	}
	if o.Drop != ntp.DropNone && int(o.Drop) < len(m.drops) && m.drops[o.Drop] != nil {
		m.drops[o.Drop].Inc()
	}
	if o.Answered() {
		m.processing.Observe(o.Processing.Seconds())
	}
	if o.Drop == ntp.DropNone || o.Drop == ntp.DropRateLimit || o.Drop == ntp.DropSendError {
		if i := int(o.Implementation); i < len(m.byImpl) && m.byImpl[i] != nil {
			m.byImpl[i].Inc()
		}
	}
	offset := o.Offset.Seconds()
	if o.Method == ntp.MethodApparent || o.Method == ntp.MethodExchange {
		byImpl := m.offset[o.Method-ntp.MethodApparent]
		impl := int(o.Implementation)
		if impl >= len(byImpl) || byImpl[impl] == nil {
			impl = int(ntp.ImplUnknown)
		}
		byImpl[impl].Observe(offset)
	}
	if o.Method == ntp.MethodExchange {
		m.delay.Observe(o.Delay.Seconds())
	}

	addr := o.Client.Addr().Unmap()
	if !addr.IsValid() {
		return
	}
	received := o.Received
	if received.IsZero() {
		received = m.now()
	}
	m.seen.add(received, addr)

	cs := m.clients.get(addr, received.UnixNano())
	if cs == nil {
		return
	}
	cs.requests.Inc()
	switch o.Method {
	case ntp.MethodExchange:
		if !cs.exchange.Load() {
			cs.exchange.Store(true)
		}
		cs.offset.Observe(offset)
		cs.delay.Observe(o.Delay.Seconds())
		m.clients.setLastOffset(cs, offset)
	case ntp.MethodApparent:
		if !cs.exchange.Load() {
			cs.offset.Observe(offset)
			m.clients.setLastOffset(cs, offset)
		}
	}
}

func digit(i int) string { return string(rune('0' + i)) }

// normalizePrefixes unmaps IPv4-mapped IPv6 prefixes (observed addresses
// are unmapped too) and masks them.
func normalizePrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		a, bits := p.Addr(), p.Bits()
		if a.Is4In6() {
			a, bits = a.Unmap(), max(bits-96, 0)
		}
		out = append(out, netip.PrefixFrom(a.WithZone(""), bits).Masked())
	}
	return slices.Clip(out)
}

// clockCollector exposes the host clock state the server advertises,
// read at scrape time.
type clockCollector struct {
	stats                                     ntp.Stats
	leap, stratum, rootDisp, rootDelay, synch *prometheus.Desc
	maxErr, estErr, precision                 *prometheus.Desc
}

func newClockCollector(stats ntp.Stats) *clockCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &clockCollector{
		stats:     stats,
		leap:      d("ntpexp_server_leap_indicator", "Leap indicator advertised in replies (0 none, 1 insert, 2 delete, 3 alarm: clock not synchronised)."),
		stratum:   d("ntpexp_server_stratum", "Stratum advertised in replies."),
		rootDisp:  d("ntpexp_server_root_dispersion_seconds", "Root dispersion advertised in replies."),
		rootDelay: d("ntpexp_server_root_delay_seconds", "Root delay advertised in replies."),
		synch:     d("ntpexp_server_clock_synchronized", "1 if the kernel reports the host clock as synchronised, else 0."),
		maxErr:    d("ntpexp_server_clock_max_error_seconds", "Kernel maximum error estimate of the host clock."),
		estErr:    d("ntpexp_server_clock_estimated_error_seconds", "Kernel estimated error of the host clock."),
		precision: d("ntpexp_server_precision_seconds", "Precision advertised in replies (2^precision)."),
	}
}

// Describe implements prometheus.Collector.
func (c *clockCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.leap, c.stratum, c.rootDisp, c.rootDelay, c.synch, c.maxErr, c.estErr, c.precision} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *clockCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats.ClockState()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	g(c.leap, float64(s.Leap))
	g(c.stratum, float64(s.Stratum))
	g(c.rootDisp, s.RootDispersion.Seconds())
	g(c.rootDelay, s.RootDelay.Seconds())
	synch := 0.0
	if s.Synchronized {
		synch = 1
	}
	g(c.synch, synch)
	g(c.maxErr, s.MaxError.Seconds())
	g(c.estErr, s.EstError.Seconds())
	g(c.precision, math.Ldexp(1, int(s.Precision)))
}

// RegisterDefault registers the build information collector
// (ntpexp_build_info), the Go runtime collector (go_*) and the process
// collector (process_*) on reg.
func RegisterDefault(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{
		versioncollector.NewCollector("ntpexp"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
