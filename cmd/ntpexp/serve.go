package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"

	"github.com/ntpexp/ntpexp/exporter"
	"github.com/ntpexp/ntpexp/exporter/api"
	"github.com/ntpexp/ntpexp/ntp"
	"github.com/ntpexp/ntpexp/sqlitestore"
)

// ServeCmd runs the daemon.
type ServeCmd struct{}

// flushObserver adapts the exporter's store metrics to the store.
type flushObserver struct{ m *exporter.StoreMetrics }

func (f flushObserver) ObserveFlush(d time.Duration, _ int) { f.m.ObserveFlush(d) }

// anonymizing rewrites the client address of every observation before
// passing it on.
type anonymizing struct {
	anon *sqlitestore.Anonymizer
	next ntp.Consumer
}

func (a anonymizing) Observe(o *ntp.Observation) {
	o.Client = netip.AddrPortFrom(a.anon.Addr(o.Client.Addr()), o.Client.Port())
	a.next.Observe(o)
}

// lateFlushObserver lets the store be opened before its metrics exist.
type lateFlushObserver struct{ p atomic.Pointer[flushObserver] }

func (l *lateFlushObserver) ObserveFlush(d time.Duration, rows int) {
	if f := l.p.Load(); f != nil {
		f.ObserveFlush(d, rows)
	}
}

func storeConfig(c *Config) (sqlitestore.Config, error) {
	sc := sqlitestore.Config{
		Path:                c.Database.Path,
		BatchSize:           c.Database.BatchSize,
		FlushInterval:       c.Database.FlushInterval.D(),
		QueueSize:           c.Database.QueueSize,
		RetentionDays:       c.Performance.RetentionDays,
		RollupRetentionDays: c.Database.RollupRetentionDays,
		CleanupInterval:     c.Performance.CleanupInterval.D(),
	}
	mode, err := sqlitestore.ParseAddressMode(c.Database.AddressMode)
	if err != nil {
		return sc, usageError{fmt.Errorf("database.address_mode: %w", err)}
	}
	sc.AddressMode = mode
	if c.Database.AddressKeyFile != "" {
		key, err := os.ReadFile(c.Database.AddressKeyFile)
		if err != nil {
			return sc, usageError{fmt.Errorf("database.address_key_file: %w", err)}
		}
		sc.AddressKey = strings.TrimSpace(string(key))
	}
	return sc, nil
}

// Run starts every component and stops them in order on SIGTERM or SIGINT:
// stop reading packets, drain the observation queue, flush the store,
// close the database, stop HTTP.
func (s *ServeCmd) Run(c *Config, e *env) error {
	logger := e.logger
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if e.logw != nil {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for range hup {
				if err := e.logw.Reopen(); err != nil {
					fmt.Fprintf(e.stderr, "ntpexp: %v\n", err)
				}
			}
		}()
	} else {
		signal.Ignore(syscall.SIGHUP)
	}

	refID, _ := ntp.ParseRefID(c.NTP.RefID)
	clock, err := ntp.NewHostClock(ntp.ClockSync(c.NTP.ClockSync), uint8(c.NTP.Stratum), refID)
	if err != nil {
		return usageError{err}
	}
	table := ntp.NewClientTable(c.Performance.MaxCacheSize)
	passive := c.Mode == "passive"

	// The store first: a database problem should stop us before we bind.
	sc, err := storeConfig(c)
	if err != nil {
		return err
	}
	late := &lateFlushObserver{}
	sc.FlushObserver = late
	// Privacy: with database.address_mode truncate or hash, addresses are
	// rewritten once, before metrics and store see them, so both work on
	// the same form and nothing keeps the real address but the in-memory
	// client table (rate limiting needs it).
	anon, err := sqlitestore.NewAnonymizer(sc.AddressMode, []byte(sc.AddressKey))
	if err != nil {
		return usageError{fmt.Errorf("database.address_mode: %w", err)}
	}
	sc.AddressMode, sc.AddressKey = sqlitestore.AddressFull, ""
	var store *sqlitestore.Store
	var reader *sqlitestore.Reader
	if c.Database.Enabled {
		reserveWriterProc()
		if store, err = sqlitestore.Open(ctx, sc, log.With(logger, "component", "store")); err != nil {
			return err
		}
		defer store.Close(context.Background()) // a no-op after the orderly close below
		if reader, err = openReader(c); err != nil {
			return err
		}
		defer reader.Close()
	}

	reg := prometheus.NewRegistry()
	if err := exporter.RegisterDefault(reg); err != nil {
		return err
	}
	watch, _ := parseWatch(c.Metrics.Watch)
	maxClients := c.Metrics.MaxClients
	if maxClients == 0 {
		maxClients = -1 // exporter: negative disables per-client series
	}
	var pm *ntp.Passive
	stats := ntp.StatsOf(table, clock)
	if passive {
		pm = ntp.NewPassive(ntp.PassiveConfig{ReplyTimeout: c.Capture.ReplyTimeout.D(), MaxPending: c.Capture.MaxPending, Mirror: c.Capture.Mirror}, table, nil)
		stats = ntp.PassiveStatsOf(table, pm, clock)
		if err := exporter.RegisterPassive(reg, pm); err != nil {
			return err
		}
	}
	metrics := exporter.NewMetrics(reg, stats, exporter.MetricsConfig{MaxClients: maxClients, Watch: watch, NativeHistograms: c.Metrics.NativeHistograms})
	var consumer ntp.Consumer = metrics
	if store != nil {
		sm := exporter.RegisterStore(reg, store)
		late.p.Store(&flushObserver{m: sm})
		consumer = ntp.Consumers{metrics, store}
	}
	if anon.Mode() != sqlitestore.AddressFull {
		consumer = anonymizing{anon: anon, next: consumer}
	}
	var src packetSource
	if passive {
		pm.SetConsumer(consumer)
		capt := ntp.NewCapture(ntp.CaptureConfig{Interfaces: c.Capture.Interface, BufferSize: c.Capture.BufferSize},
			pm, log.With(logger, "component", "capture"))
		if err := capt.Open(); err != nil {
			return err
		}
		src = captureSource{capt}
	} else {
		rl := ntp.RateLimit{Enabled: c.NTP.RateLimit.Enabled, Interval: c.NTP.RateLimit.Interval,
			Burst: c.NTP.RateLimit.Burst, Leak: c.NTP.RateLimit.Leak, KoD: c.NTP.RateLimit.KoD}
		resp := ntp.NewResponder(table, clock, rl, nil)
		srv := ntp.NewServer(ntp.ServerConfig{ListenAddresses: c.NTPListenAddresses(), Readers: c.NTP.Readers},
			resp, consumer, log.With(logger, "component", "ntp"))
		if err := srv.Listen(); err != nil {
			return err
		}
		src = serverSource{srv}
	}
	srv := src
	var ready atomic.Bool
	web := exporter.NewServer(log.With(logger, "component", "web"), reg, exporter.WebConfig{
		ListenAddresses: c.Web.ListenAddress, ConfigFile: c.Web.ConfigFile, TelemetryPath: c.Web.TelemetryPath,
		MaxRequests: c.Web.MaxRequests, Timeout: c.Web.Timeout.D(), EnablePprof: c.Web.EnablePprof,
	}, apiHandler(reader, log.With(logger, "component", "api")), ready.Load)
	if err := web.Listen(); err != nil {
		srv.Shutdown()
		return err
	}

	srcKey, srcVal := src.describe()
	level.Info(logger).Log("msg", "starting ntpexp", "version", version.Version, "revision", version.GetRevision(),
		"mode", c.Mode, srcKey, srcVal, "web", fmt.Sprint(web.Addrs()), "telemetry_path", c.Web.TelemetryPath,
		"database", databaseDesc(c), "max_clients_tracked", c.Performance.MaxCacheSize,
		"metrics_max_clients", c.Metrics.MaxClients, "ratelimit", c.NTP.RateLimit.Enabled,
		"ratelimit_interval", c.NTP.RateLimit.Interval, "ratelimit_burst", c.NTP.RateLimit.Burst,
		"batch_size", c.Database.BatchSize, "flush_interval", c.Database.FlushInterval.D(),
		"retention_days", c.Performance.RetentionDays, "clock_sync", c.NTP.ClockSync, "gomaxprocs", runtime.GOMAXPROCS(0))
	cfgPath := ""
	if e.file != nil {
		cfgPath = e.file.path
	}
	warnWorldReadable(logger, c, cfgPath)
	if st := clock.Load(); !st.Synchronized && !passive {
		level.Warn(logger).Log("msg", "host clock is not synchronised according to the kernel; answering with leap=alarm until it is",
			"fix", "run chronyd or systemd-timesyncd as a client of good servers (chronyd with 'port 0'), or set ntp.clock_sync=assume-synchronized if the clock is kept by other means")
	}

	var wg sync.WaitGroup
	clockCtx, stopClock := context.WithCancel(context.Background())
	wg.Add(1)
	go func() { defer wg.Done(); clock.Run(clockCtx, time.Second) }()
	webErr := make(chan error, 1)
	go func() { webErr <- web.Run(context.Background()) }()
	ntpErr := make(chan error, 1)
	go func() { ntpErr <- srv.Serve(context.Background()) }()
	ready.Store(true)

	var runErr error
	select {
	case <-ctx.Done():
		level.Info(logger).Log("msg", "shutting down")
	case err := <-ntpErr:
		if err == nil {
			err = errors.New("stopped unexpectedly")
		}
		runErr = fmt.Errorf("NTP %s stopped: %w", c.Mode, err)
	case err := <-webErr:
		if err != nil {
			runErr = fmt.Errorf("web server stopped: %w", err)
		}
	}
	ready.Store(false)

	// 1. Stop reading packets; readers finish the batch they hold (in
	// passive mode, requests still waiting for a reply are recorded).
	srv.Shutdown()
	// 2-4. Drain the observation queue, flush the store, close the database.
	closeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if store != nil {
		if err := store.Close(closeCtx); err != nil {
			level.Error(logger).Log("msg", "closing the store", "err", err)
			runErr = errors.Join(runErr, err)
		}
	}
	// 5. Stop HTTP.
	shCtx, cancelSh := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelSh()
	web.Shutdown(shCtx)
	stopClock()
	wg.Wait()
	if store != nil {
		level.Info(logger).Log("msg", "stopped", "rows_written", store.RowsWritten(), "rows_dropped", store.RowsDropped(), "write_errors", store.WriteErrors())
	} else {
		level.Info(logger).Log("msg", "stopped")
	}
	return runErr
}

// apiHandler is the REST API on the store, or, with the store disabled, a
// handler that says so.
func apiHandler(r *sqlitestore.Reader, logger log.Logger) http.Handler {
	if r == nil {
		return api.Disabled("the store is disabled (database.enabled=false): no history to query; enable it to use the API")
	}
	return api.New(r, logger)
}

func databaseDesc(c *Config) string {
	if !c.Database.Enabled {
		return "disabled"
	}
	return c.Database.Path
}

// warnWorldReadable warns about files holding secrets that any local user
// can read: the web configuration (password hashes, TLS key paths) and the
// address-hashing key. The config file is included when it names them.
func warnWorldReadable(logger log.Logger, c *Config, configPath string) []string {
	var warned []string
	check := func(path, what string) {
		if path == "" {
			return
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm()&0o004 == 0 {
			return
		}
		warned = append(warned, path)
		level.Warn(logger).Log("msg", "file holding secrets is world-readable", "file", path, "holds", what,
			"fix", fmt.Sprintf("chmod o-r %s (and chown it to the user ntpexp runs as)", path))
	}
	check(c.Web.ConfigFile, "basic-auth password hashes and TLS settings")
	check(c.Database.AddressKeyFile, "the key that pseudonymises client addresses")
	if c.Web.ConfigFile != "" || c.Database.AddressKeyFile != "" {
		check(configPath, "the paths of secret files")
	}
	return warned
}

// packetSource is where observations come from: the NTP server, or the
// passive capture.
type packetSource interface {
	Serve(ctx context.Context) error
	Shutdown()
	describe() (string, string)
}

type serverSource struct{ *ntp.Server }

func (s serverSource) describe() (string, string) { return "ntp", fmt.Sprint(s.Addrs()) }

type captureSource struct{ *ntp.Capture }

func (s captureSource) Serve(ctx context.Context) error { return s.Run(ctx) }
func (s captureSource) describe() (string, string) {
	return "capture_interfaces", strings.Join(s.Interfaces(), ",")
}

// writerProc makes reserveWriterProc act once per process (tests serve
// more than once in one process).
var writerProc sync.Once

// reserveWriterProc gives the store's writer a Go processor of its own, on
// top of the default (the CPUs, or the container's CPU limit). The writer
// spends most of its time inside SQLite, a cgo call, during which the
// runtime still counts its processor as taken until the monitor thread
// hands it off, 20 µs in and again for every call. With as many processors
// as CPUs the packet path then waits for a processor: under saturation on
// 2 CPUs, T3 - T2 p99 was 1.8-2.7 ms against 1.3-1.5 ms with one more, and
// the CPU per reply 7-10% higher (interleaved runs, docs/performance.md).
// GOMAXPROCS set in the environment is left as it is.
func reserveWriterProc() {
	writerProc.Do(func() {
		if os.Getenv("GOMAXPROCS") != "" {
			return
		}
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	})
}
