// Package api serves the observation store's queries as a read-only REST
// API. Responses are the JSON encodings of the sqlitestore result types,
// the same as the CLI's --output json.
//
//	GET /api/clients?active=true&hours=24&limit=100
//	GET /api/clients/{ip}?latest=20&hours=24
//	GET /api/stats?hours=24
//	GET /api/anomalies?delay_threshold=0.1&offset_threshold=0.05&hours=24
//	GET /api/export?format=json|csv|ndjson&hours=0&client_ip=ADDR|PREFIX
//
// Every parameter is validated; an unknown or invalid one gets 400 with
// {"error": "..."}. Other methods than GET and HEAD get 405.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/ntpexp/ntpexp/sqlitestore"
)

type handler struct {
	r      *sqlitestore.Reader
	logger log.Logger
	mux    *http.ServeMux
}

// New returns the API handler for r. It serves paths under /api/.
func New(r *sqlitestore.Reader, logger log.Logger) http.Handler {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	h := &handler{r: r, logger: logger, mux: http.NewServeMux()}
	h.mux.HandleFunc("/api/clients", h.clients)
	h.mux.HandleFunc("/api/clients/{ip}", h.client)
	h.mux.HandleFunc("/api/stats", h.stats)
	h.mux.HandleFunc("/api/anomalies", h.anomalies)
	h.mux.HandleFunc("/api/export", h.export)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return h
}

// Disabled answers every API request with 404 and msg, for a server
// running without its store.
func Disabled(msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, msg)
	})
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use GET")
		return
	}
	h.mux.ServeHTTP(w, r)
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// queryError fails a request with 500 (or 400/404 for what the caller
// got wrong), logging server-side failures.
func (h *handler) queryError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, sqlitestore.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, sqlitestore.ErrInvalidArgument):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away.
	default:
		level.Error(h.logger).Log("msg", "API query failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "query failed: "+err.Error())
	}
}

// params validates a request's query string against the allowed names.
type params struct {
	q   map[string][]string
	err error
}

func newParams(r *http.Request, allowed ...string) *params {
	q := r.URL.Query()
	p := &params{q: q}
	for k, vs := range q {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
			}
		}
		switch {
		case !ok:
			p.fail("unknown parameter %q (allowed: %s)", k, strings.Join(allowed, ", "))
		case len(vs) > 1:
			p.fail("parameter %q given %d times", k, len(vs))
		}
	}
	return p
}

func (p *params) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf(format, args...)
	}
}

func (p *params) get(name string) (string, bool) {
	vs, ok := p.q[name]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

func (p *params) intIn(name string, def, lo, hi int) int {
	s, ok := p.get(name)
	if !ok {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		p.fail("%s must be an integer from %d to %d, not %q", name, lo, hi, s)
		return def
	}
	return v
}

func (p *params) boolean(name string) bool {
	s, ok := p.get(name)
	if !ok {
		return false
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		p.fail("%s must be true or false, not %q", name, s)
	}
	return v
}

func (p *params) seconds(name string, def float64) float64 {
	s, ok := p.get(name)
	if !ok {
		return def
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 || v > 1e9 {
		p.fail("%s must be a positive number of seconds, not %q", name, s)
		return def
	}
	return v
}

func (h *handler) clients(w http.ResponseWriter, r *http.Request) {
	p := newParams(r, "active", "hours", "limit")
	opts := sqlitestore.ListOptions{
		Active: p.boolean("active"),
		Hours:  p.intIn("hours", sqlitestore.DefaultHours, 1, sqlitestore.MaxHours),
		Limit:  p.intIn("limit", 0, 0, math.MaxInt32),
	}
	if p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return
	}
	rows, err := h.r.ListClients(r.Context(), opts)
	if err != nil {
		h.queryError(w, r, err)
		return
	}
	writeJSON(w, rows)
}

func (h *handler) client(w http.ResponseWriter, r *http.Request) {
	p := newParams(r, "latest", "hours")
	latest := p.intIn("latest", sqlitestore.DefaultLatest, 1, sqlitestore.MaxLatest)
	hours := p.intIn("hours", sqlitestore.DefaultDetailHours, 1, sqlitestore.MaxHours)
	ipStr := r.PathValue("ip")
	ip, err := netip.ParseAddr(ipStr)
	if err != nil {
		p.fail("%q is not an IP address", ipStr)
	}
	if p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return
	}
	d, err := h.r.ClientDetail(r.Context(), ip, latest, hours)
	if err != nil {
		h.queryError(w, r, err)
		return
	}
	writeJSON(w, d)
}

func (h *handler) stats(w http.ResponseWriter, r *http.Request) {
	p := newParams(r, "hours")
	hours := p.intIn("hours", sqlitestore.DefaultHours, 1, sqlitestore.MaxHours)
	if p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return
	}
	st, err := h.r.Stats(r.Context(), hours)
	if err != nil {
		h.queryError(w, r, err)
		return
	}
	writeJSON(w, st)
}

func (h *handler) anomalies(w http.ResponseWriter, r *http.Request) {
	p := newParams(r, "delay_threshold", "offset_threshold", "hours")
	opts := sqlitestore.AnomalyOptions{
		DelayThreshold:  p.seconds("delay_threshold", sqlitestore.DefaultDelayThreshold),
		OffsetThreshold: p.seconds("offset_threshold", sqlitestore.DefaultOffsetThreshold),
		Hours:           p.intIn("hours", sqlitestore.DefaultHours, 1, sqlitestore.MaxHours),
	}
	if p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return
	}
	a, err := h.r.Anomalies(r.Context(), opts)
	if err != nil {
		h.queryError(w, r, err)
		return
	}
	writeJSON(w, a)
}

var contentTypes = map[string]string{
	sqlitestore.FormatJSON:   "application/json",
	sqlitestore.FormatCSV:    "text/csv; charset=utf-8",
	sqlitestore.FormatNDJSON: "application/x-ndjson",
}

func (h *handler) export(w http.ResponseWriter, r *http.Request) {
	p := newParams(r, "format", "hours", "client_ip")
	opts := sqlitestore.ExportOptions{Hours: p.intIn("hours", 0, 0, sqlitestore.MaxHours)}
	if s, ok := p.get("format"); ok {
		f, err := sqlitestore.CheckFormat(s)
		if err != nil || s == "" {
			p.fail("format must be json, csv or ndjson, not %q", s)
		}
		opts.Format = f
	} else {
		opts.Format = sqlitestore.FormatJSON
	}
	if s, ok := p.get("client_ip"); ok {
		pfx, err := sqlitestore.ParseClientFilter(s)
		if err != nil {
			p.fail("client_ip must be an IP address or prefix, not %q", s)
		}
		opts.Client = pfx
	}
	if p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return
	}
	w.Header().Set("Content-Type", contentTypes[opts.Format])
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="ntpexp-observations.%s"`, opts.Format))
	if r.Method == http.MethodHead {
		return
	}
	// Rows stream as they are read; once the first bytes are out the
	// status is 200 and a later failure can only cut the body short.
	fw := &flushWriter{w: w}
	if f, ok := w.(http.Flusher); ok {
		fw.f = f
	}
	n, err := h.r.Export(r.Context(), opts, fw, func(int64) { fw.flush() })
	if err != nil {
		if !fw.wrote {
			w.Header().Del("Content-Disposition")
			h.queryError(w, r, err)
			return
		}
		if !errors.Is(err, context.Canceled) {
			level.Error(h.logger).Log("msg", "API export failed mid-stream", "rows", n, "err", err)
		}
	}
}

// flushWriter flushes the response at each progress call, so a long
// export reaches the client while it runs.
type flushWriter struct {
	w     http.ResponseWriter
	f     http.Flusher
	wrote bool
}

func (f *flushWriter) Write(b []byte) (int, error) {
	f.wrote = true
	return f.w.Write(b)
}

func (f *flushWriter) flush() {
	if f.f != nil && f.wrote {
		f.f.Flush()
	}
}
