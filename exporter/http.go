package exporter

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
)

const (
	// DefaultWebListenAddress is the default address of the metrics and
	// API server. Port 10123 ("10" + NTP's 123): the exporter range of the
	// Prometheus default port allocations wiki (9100–9999) is allocated
	// end to end, and new exporters are listed above 10000 ("Exporters
	// outside of the standard port ranges"). 10123 is easy to remember
	// for an NTP exporter and avoids 9100 (node_exporter), 9123, 9559 and
	// 9975. It is not yet registered on that wiki; register it before
	// release (or pick the next free entry there).
	DefaultWebListenAddress = ":10123"
	// DefaultTelemetryPath is the default metrics path.
	DefaultTelemetryPath = "/metrics"

	readHeaderTimeout = 10 * time.Second
	shutdownGrace     = 5 * time.Second
)

var errAlreadyRunning = errors.New("exporter: server already running")

// WebConfig configures the HTTP server.
type WebConfig struct {
	// ListenAddresses are TCP addresses to listen on ("host:port"); empty
	// means DefaultWebListenAddress.
	ListenAddresses []string
	// ConfigFile is an exporter-toolkit web configuration file (TLS,
	// basic auth, HTTP headers, rate limit); empty means plain HTTP
	// without authentication. It is reread on every request.
	ConfigFile string
	// TelemetryPath is where metrics are served; empty means
	// DefaultTelemetryPath.
	TelemetryPath string
	// MaxRequests limits concurrent scrapes (further ones get 503); 0 or
	// less means no limit.
	MaxRequests int
	// Timeout bounds a scrape (503 when exceeded); 0 or less means none.
	Timeout time.Duration
	// EnablePprof serves Go's profiler under /debug/pprof/ (behind the
	// same TLS and auth), for performance investigations.
	EnablePprof bool
}

// Server serves metrics, health endpoints, a landing page and, when given,
// the REST API, on one or more listeners. All paths are behind the same
// TLS and basic-auth configuration.
//
// Routes: / (landing page), TelemetryPath, /-/healthy, /-/ready, /api/
// (the API handler receives the full path, e.g. /api/clients).
type Server struct {
	logger  log.Logger
	slog    *slog.Logger
	cfg     WebConfig
	handler http.Handler

	mu        sync.Mutex
	listeners []net.Listener
	servers   []*http.Server
	running   bool
	closed    bool
}

// NewServer builds the server. gatherer is served at cfg.TelemetryPath; if
// it is also a prometheus.Registerer (such as *prometheus.Registry), the
// promhttp_metric_handler_* metrics are registered on it. api, if not nil,
// is mounted at /api/. ready reports readiness for /-/ready; nil means
// always ready.
func NewServer(logger log.Logger, gatherer prometheus.Gatherer, cfg WebConfig, api http.Handler, ready func() bool) *Server {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	if len(cfg.ListenAddresses) == 0 {
		cfg.ListenAddresses = []string{DefaultWebListenAddress}
	}
	if cfg.TelemetryPath == "" {
		cfg.TelemetryPath = DefaultTelemetryPath
	} else if !strings.HasPrefix(cfg.TelemetryPath, "/") {
		cfg.TelemetryPath = "/" + cfg.TelemetryPath
	}
	if ready == nil {
		ready = func() bool { return true }
	}
	s := &Server{logger: logger, slog: NewSlogLogger(logger), cfg: cfg}

	reg, _ := gatherer.(prometheus.Registerer)
	opts := promhttp.HandlerOpts{
		ErrorLog:            promErrorLogger{logger},
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: cfg.MaxRequests,
		Timeout:             cfg.Timeout,
		EnableOpenMetrics:   true,
	}
	var metrics http.Handler
	if reg != nil {
		metrics = promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(gatherer, opts))
	} else {
		metrics = promhttp.HandlerFor(gatherer, opts)
	}

	mux := http.NewServeMux()
	mux.Handle(cfg.TelemetryPath, metrics)
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "Healthy")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "Not ready")
			return
		}
		fmt.Fprintln(w, "Ready")
	})
	links := []web.LandingLinks{{Address: cfg.TelemetryPath, Text: "Metrics"}}
	if api != nil {
		mux.Handle("/api/", api)
		links = append(links, web.LandingLinks{Address: "/api/clients", Text: "Clients", Description: "REST API: clients seen"})
	}
	if cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	links = append(links,
		web.LandingLinks{Address: "/-/healthy", Text: "Health"},
		web.LandingLinks{Address: "/-/ready", Text: "Readiness"},
	)
	if cfg.TelemetryPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "ntpexp",
			Description: "NTP server that records what its clients reveal",
			Links:       links,
			Version:     version.Info(),
			Profiling:   "false",
		})
		if err != nil {
			level.Error(logger).Log("msg", "Cannot build landing page", "err", err)
			mux.Handle("/", http.NotFoundHandler())
		} else {
			mux.Handle("/", landing)
		}
	}
	s.handler = mux
	return s
}

// Handler returns the server's handler, without TLS or authentication.
func (s *Server) Handler() http.Handler { return s.handler }

// Listen binds all listen addresses and checks the web configuration file.
// Run calls it if it has not been called; calling it first lets the caller
// learn the bound addresses (Addrs) before serving.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listenLocked()
}

func (s *Server) listenLocked() error {
	if s.closed {
		return http.ErrServerClosed
	}
	if s.listeners != nil {
		return nil
	}
	if s.cfg.ConfigFile != "" {
		if err := web.Validate(s.cfg.ConfigFile); err != nil {
			return fmt.Errorf("web config file %s: %w", s.cfg.ConfigFile, err)
		}
	}
	ls := make([]net.Listener, 0, len(s.cfg.ListenAddresses))
	for _, addr := range s.cfg.ListenAddresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		ls = append(ls, l)
	}
	s.listeners = ls
	return nil
}

// Addrs returns the bound addresses, in the order of ListenAddresses, or
// nil before Listen.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, 0, len(s.listeners))
	for _, l := range s.listeners {
		addrs = append(addrs, l.Addr())
	}
	return addrs
}

// Run serves until ctx is done (then shuts down gracefully, waiting up to
// 5 s for active requests, and returns nil), Shutdown is called (returns
// nil) or a listener fails (shuts the others down and returns the error).
// A Server runs once: after Shutdown, Run returns nil at once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if s.running {
		s.mu.Unlock()
		return errAlreadyRunning
	}
	if err := s.listenLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.running = true
	listeners := s.listeners
	// One http.Server per listener: web.Serve rewrites the server's
	// Handler and TLSConfig, so servers must not be shared.
	for range listeners {
		s.servers = append(s.servers, &http.Server{
			Handler:           s.handler,
			ReadHeaderTimeout: readHeaderTimeout,
			ErrorLog:          stdlog.New(log.NewStdlibAdapter(level.Error(s.logger)), "", 0),
		})
	}
	servers := s.servers
	s.mu.Unlock()

	flags := &web.FlagConfig{
		WebListenAddresses: &s.cfg.ListenAddresses,
		WebSystemdSocket:   new(bool),
		WebConfigFile:      &s.cfg.ConfigFile,
	}
	errc := make(chan error, len(listeners))
	for i, l := range listeners {
		go func() { errc <- web.Serve(l, servers[i], flags, s.slog) }()
	}

	var first error
	pending := len(listeners)
	select {
	case <-ctx.Done():
	case first = <-errc:
		pending--
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		level.Warn(s.logger).Log("msg", "HTTP server shutdown incomplete", "err", err)
	}
	for ; pending > 0; pending-- {
		if err := <-errc; first == nil {
			first = err
		}
	}
	// web.Serve may fail before handing the listener to http.Server.
	for _, l := range listeners {
		l.Close()
	}
	if errors.Is(first, http.ErrServerClosed) {
		return nil
	}
	return first
}

// Shutdown stops the servers gracefully, waiting for active requests until
// ctx is done. Run then returns. It is safe to call more than once and
// before Run.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	servers := s.servers
	if !s.running {
		for _, l := range s.listeners {
			l.Close()
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// promErrorLogger adapts a go-kit logger to promhttp.Logger.
type promErrorLogger struct{ logger log.Logger }

func (l promErrorLogger) Println(v ...any) {
	level.Error(l.logger).Log("msg", "Error serving metrics", "err", fmt.Sprint(v...))
}
