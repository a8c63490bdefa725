package api

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ntpexp/ntpexp/ntp"
	"github.com/ntpexp/ntpexp/sqlitestore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var now = time.Date(2025, 3, 14, 15, 30, 0, 0, time.UTC)

// server writes a small dataset and serves it.
func server(t *testing.T) *httptest.Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ntpexp.db")
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, sqlitestore.Config{Path: path, Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	add := func(ago time.Duration, client string, m ntp.OffsetMethod, off, delay time.Duration, drop ntp.DropReason) {
		at := now.Add(-ago)
		o := ntp.Observation{
			Received: at, Client: netip.MustParseAddrPort(client), Local: netip.MustParseAddrPort("192.0.2.1:123"),
			Length: 48, ReplyLength: 48, Version: 4, Mode: 3, Transmit: ntp.TimestampFromTime(at),
			Method: m, Offset: off, Delay: delay, Drop: drop, Implementation: ntp.ImplChrony,
		}
		s.Observe(&o)
	}
	add(time.Hour, "192.0.2.10:123", ntp.MethodExchange, time.Millisecond, 200*time.Millisecond, ntp.DropNone)
	add(30*time.Minute, "192.0.2.10:123", ntp.MethodExchange, 2*time.Millisecond, 20*time.Millisecond, ntp.DropNone)
	add(20*time.Minute, "[2001:db8::7]:123", ntp.MethodApparent, 3*time.Hour, 0, ntp.DropNone)
	add(10*time.Minute, "198.51.100.3:123", ntp.MethodNone, 0, 0, ntp.DropRateLimit)
	add(50*time.Hour, "203.0.113.4:123", ntp.MethodApparent, time.Second, 0, ntp.DropNone)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := sqlitestore.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	r.SetClock(func() time.Time { return now })
	srv := httptest.NewServer(New(r, nil))
	t.Cleanup(func() {
		srv.Close()
		r.Close()
	})
	return srv
}

func get(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestEndpoints(t *testing.T) {
	srv := server(t)

	resp, body := get(t, srv, "GET", "/api/clients")
	var clients []sqlitestore.ClientRow
	if resp.StatusCode != 200 || json.Unmarshal(body, &clients) != nil || len(clients) != 4 {
		t.Fatalf("clients: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	// The JSON keys are the contract.
	var raw []map[string]any
	json.Unmarshal(body, &raw)
	for _, k := range []string{"client_ip", "first_seen", "last_seen", "requests", "drops", "avg_interval_seconds", "implementation", "last_offset_seconds", "last_offset_method", "last_delay_seconds"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("client row lacks %q", k)
		}
	}
	_, body = get(t, srv, "GET", "/api/clients?active=true&hours=24")
	json.Unmarshal(body, &clients)
	if len(clients) != 3 {
		t.Errorf("active clients: %d, want 3", len(clients))
	}

	resp, body = get(t, srv, "GET", "/api/clients/192.0.2.10?latest=1")
	var d sqlitestore.ClientDetail
	if resp.StatusCode != 200 || json.Unmarshal(body, &d) != nil || d.Client.Requests != 2 || len(d.Latest) != 1 {
		t.Fatalf("detail: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, srv, "GET", "/api/clients/192.0.2.99")
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"error"`) {
		t.Errorf("unknown client: %d %s", resp.StatusCode, body)
	}

	resp, body = get(t, srv, "GET", "/api/stats?hours=48")
	var st sqlitestore.Stats
	if resp.StatusCode != 200 || json.Unmarshal(body, &st) != nil || st.Requests != 4 || st.Hours != 48 {
		t.Fatalf("stats: %d %s", resp.StatusCode, body)
	}

	resp, body = get(t, srv, "GET", "/api/anomalies?delay_threshold=0.1&offset_threshold=0.05&hours=24")
	var an sqlitestore.Anomalies
	if resp.StatusCode != 200 || json.Unmarshal(body, &an) != nil {
		t.Fatalf("anomalies: %d %s", resp.StatusCode, body)
	}
	var kinds []string
	for _, a := range an.Anomalies {
		kinds = append(kinds, a.Kind)
	}
	if strings.Join(kinds, ",") != "clock_wrong_hours,delay,rate_limited" {
		t.Errorf("anomaly kinds %v", kinds)
	}

	resp, body = get(t, srv, "GET", "/api/export")
	var rows []map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &rows) != nil || len(rows) != 5 {
		t.Fatalf("export json: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, srv, "GET", "/api/export?format=csv&hours=24")
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if resp.StatusCode != 200 || err != nil || len(recs) != 5 || recs[0][0] != "time" {
		t.Fatalf("export csv: %d %v %s", resp.StatusCode, err, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("csv Content-Type %q", ct)
	}
	resp, body = get(t, srv, "GET", "/api/export?format=ndjson&client_ip=192.0.2.0/24")
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m["client_ip"] != "192.0.2.10" {
			t.Errorf("ndjson line %q: %v", sc.Text(), err)
		}
		n++
	}
	if resp.StatusCode != 200 || n != 2 {
		t.Errorf("export ndjson: %d, %d lines", resp.StatusCode, n)
	}
	_, body = get(t, srv, "GET", "/api/export?format=ndjson&client_ip=2001:db8::7")
	if strings.Count(string(body), "\n") != 1 {
		t.Errorf("export by single IPv6 address: %s", body)
	}
	resp, _ = get(t, srv, "HEAD", "/api/stats")
	if resp.StatusCode != 200 {
		t.Errorf("HEAD: %d", resp.StatusCode)
	}
}

func TestBadRequests(t *testing.T) {
	srv := server(t)
	for _, tc := range []struct {
		method, path string
		code         int
		msg          string
	}{
		{"GET", "/api/clients?hours=-1", 400, "hours must be an integer"},
		{"GET", "/api/clients?hours=abc", 400, "hours must be an integer"},
		{"GET", "/api/clients?hours=0", 400, "hours must be an integer"},
		{"GET", "/api/clients?active=maybe", 400, "active must be true or false"},
		{"GET", "/api/clients?limit=-3", 400, "limit must be"},
		{"GET", "/api/clients?colour=blue", 400, `unknown parameter "colour"`},
		{"GET", "/api/clients?hours=1&hours=2", 400, "given 2 times"},
		{"GET", "/api/clients/not-an-ip", 400, "is not an IP address"},
		{"GET", "/api/clients/192.0.2.10?latest=0", 400, "latest must be"},
		{"GET", "/api/stats?hours=-48", 400, "hours must be"},
		{"GET", "/api/stats?hours=1000000", 400, "hours must be"},
		{"GET", "/api/anomalies?delay_threshold=-0.1", 400, "delay_threshold must be a positive number"},
		{"GET", "/api/anomalies?offset_threshold=NaN", 400, "offset_threshold must be a positive number"},
		{"GET", "/api/anomalies?offset_threshold=", 400, "offset_threshold must be a positive number"},
		{"GET", "/api/export?format=xml", 400, "format must be json, csv or ndjson"},
		{"GET", "/api/export?format=", 400, "format must be json, csv or ndjson"},
		{"GET", "/api/export?client_ip=300.1.2.3", 400, "client_ip must be an IP address or prefix"},
		{"GET", "/api/export?client_ip=192.0.2.0/33", 400, "client_ip must be"},
		{"GET", "/api/export?hours=-1", 400, "hours must be an integer from 0"},
		// Checked by the store, not the handler: still the caller's mistake.
		{"GET", "/api/anomalies?delay_threshold=1e-10", 400, "delay_threshold must be at least 1e-9 seconds"},
		{"GET", "/api/export?client_ip=::ffff:192.0.2.0/64", 400, "mixes IPv4-mapped and IPv6"},
		{"POST", "/api/clients", 405, "method POST not allowed"},
		{"DELETE", "/api/export", 405, "not allowed"},
		{"PUT", "/api/stats", 405, "not allowed"},
		{"GET", "/api/nothing", 404, "no such endpoint"},
	} {
		resp, body := get(t, srv, tc.method, tc.path)
		var e struct {
			Error string `json:"error"`
		}
		if resp.StatusCode != tc.code || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("%s %s = %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.msg)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", tc.method, tc.path, ct)
		}
		if tc.code == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("405 without Allow header")
		}
	}
}
