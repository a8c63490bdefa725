package exporter

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
)

// testPasswordHash is bcrypt("s3cret-scrape") at cost 4 (cheap for tests).
const (
	testUser         = "prometheus"
	testPassword     = "s3cret-scrape"
	testPasswordHash = "$2a$04$lpZyOUqjFGzGTEkA8aDQy.JGxjtFLQZvWthfS2k94Doi0Jnlc5WKy"
)

type testServer struct {
	srv    *Server
	urls   []string
	client *http.Client
	done   chan error
	cancel context.CancelFunc
	logs   *syncBuffer
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// startServer runs a Server on two loopback listeners until the test ends.
func startServer(t *testing.T, cfg WebConfig, api http.Handler, ready func() bool, tlsClient *tls.Config) *testServer {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ntpexp_test_total", Help: "Test counter."})
	c.Add(42)
	reg.MustRegister(c)

	cfg.ListenAddresses = []string{"127.0.0.1:0", "127.0.0.1:0"}
	logs := newSyncBuffer()
	srv := NewServer(log.NewLogfmtLogger(logs), reg, cfg, api, ready)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	scheme := "http"
	if tlsClient != nil {
		scheme = "https"
	}
	ts := &testServer{srv: srv, done: make(chan error, 1), logs: logs}
	for _, a := range srv.Addrs() {
		ts.urls = append(ts.urls, fmt.Sprintf("%s://%s", scheme, a))
	}
	transport := &http.Transport{TLSClientConfig: tlsClient}
	ts.client = &http.Client{Transport: transport, Timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ts.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		transport.CloseIdleConnections()
	})
	return ts
}

func (ts *testServer) get(t *testing.T, url string, header http.Header, auth bool) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if auth {
		req.SetBasicAuth(testUser, testPassword)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func TestServerEndpoints(t *testing.T) {
	var ready atomic.Bool
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "api %s", r.URL.Path)
	})
	ts := startServer(t, WebConfig{}, api, ready.Load, nil)
	if len(ts.urls) != 2 || ts.urls[0] == ts.urls[1] || strings.HasSuffix(ts.urls[0], ":0") {
		t.Fatalf("bound addresses %v", ts.urls)
	}
	for _, base := range ts.urls {
		for _, tc := range []struct {
			path   string
			header http.Header
			code   int
			body   string
			ctype  string
		}{
			{path: "/metrics", code: 200, body: "ntpexp_test_total 42", ctype: "text/plain"},
			{path: "/metrics", header: http.Header{"Accept": {"application/openmetrics-text; version=1.0.0"}}, code: 200, body: "ntpexp_test_total 42", ctype: "application/openmetrics-text"},
			{path: "/metrics", code: 200, body: "promhttp_metric_handler_requests_total"},
			{path: "/-/healthy", code: 200, body: "Healthy"},
			{path: "/-/ready", code: 503, body: "Not ready"},
			{path: "/", code: 200, body: `href="/metrics"`, ctype: "text/html"},
			{path: "/", code: 200, body: `href="/api/clients"`},
			{path: "/api/clients", code: 200, body: "api /api/clients"},
			{path: "/nope", code: 404},
		} {
			code, h, body := ts.get(t, base+tc.path, tc.header, false)
			if code != tc.code || !strings.Contains(body, tc.body) || !strings.HasPrefix(h.Get("Content-Type"), tc.ctype) {
				t.Errorf("GET %s (%v): %d %q %q, want %d with %q, type %q", tc.path, tc.header, code, h.Get("Content-Type"), body, tc.code, tc.body, tc.ctype)
			}
		}
	}
	ready.Store(true)
	if code, _, body := ts.get(t, ts.urls[0]+"/-/ready", nil, false); code != 200 || !strings.Contains(body, "Ready") {
		t.Errorf("/-/ready when ready: %d %q", code, body)
	}
	// exporter-toolkit's slog output reaches the go-kit logger.
	for _, u := range ts.urls {
		want := `level=info msg="Listening on" address=` + strings.TrimPrefix(u, "http://")
		if !strings.Contains(ts.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, ts.logs.String())
		}
	}
}

func TestServerWithoutAPI(t *testing.T) {
	ts := startServer(t, WebConfig{TelemetryPath: "m"}, nil, nil, nil)
	for _, tc := range []struct {
		path string
		code int
	}{{"/m", 200}, {"/metrics", 404}, {"/api/clients", 404}, {"/-/ready", 200}} {
		if code, _, _ := ts.get(t, ts.urls[0]+tc.path, nil, false); code != tc.code {
			t.Errorf("GET %s: %d, want %d", tc.path, code, tc.code)
		}
	}
	if _, _, body := ts.get(t, ts.urls[0]+"/", nil, false); strings.Contains(body, "api/clients") || !strings.Contains(body, `href="/m"`) {
		t.Errorf("landing page links wrong: %s", body)
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key into dir and returns their paths and a pool trusting it.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ntpexp test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestServerWebConfig(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := writeSelfSigned(t, dir)
	users := fmt.Sprintf("basic_auth_users:\n  %s: %s\n", testUser, testPasswordHash)
	tlsServer := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", certFile, keyFile)
	api := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "api") })

	for _, tc := range []struct {
		name   string
		config string
	}{
		{name: "basic auth", config: users},
		{name: "TLS", config: tlsServer},
		{name: "TLS and basic auth", config: tlsServer + users},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "web.yml")
			if err := os.WriteFile(file, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			useTLS := strings.Contains(tc.config, "tls_server_config")
			authOn := strings.Contains(tc.config, "basic_auth_users")
			var clientTLS *tls.Config
			if useTLS {
				clientTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			}
			ts := startServer(t, WebConfig{ConfigFile: file}, api, nil, clientTLS)
			for _, path := range []string{"/metrics", "/-/healthy", "/-/ready", "/", "/api/clients"} {
				for _, withAuth := range []bool{false, true} {
					want := 200
					if authOn && !withAuth {
						want = 401
					}
					code, h, _ := ts.get(t, ts.urls[1]+path, nil, withAuth)
					if code != want {
						t.Errorf("GET %s (credentials %v): %d, want %d", path, withAuth, code, want)
					}
					if code == 401 && h.Get("WWW-Authenticate") == "" {
						t.Errorf("GET %s: 401 without WWW-Authenticate", path)
					}
				}
			}
			if authOn {
				req, _ := http.NewRequest(http.MethodGet, ts.urls[0]+"/metrics", nil)
				req.SetBasicAuth(testUser, "wrong")
				resp, err := ts.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 401 {
					t.Errorf("wrong password: %d, want 401", resp.StatusCode)
				}
			}
			if useTLS {
				// Plain HTTP to a TLS listener fails.
				plain := &http.Transport{}
				defer plain.CloseIdleConnections()
				resp, err := (&http.Client{Transport: plain, Timeout: 5 * time.Second}).Get("http://" + strings.TrimPrefix(ts.urls[0], "https://") + "/metrics")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						t.Error("plain HTTP request to the TLS listener succeeded")
					}
				}
			}
		})
	}
}

func TestServerBadWebConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
	}{
		{"missing file", ""},
		{"not bcrypt", "basic_auth_users:\n  prometheus: plaintext\n"},
		{"missing key", "tls_server_config:\n  cert_file: " + filepath.Join(dir, "none.pem") + "\n"},
		{"unknown field", "tls_server_config:\n  certfile: x\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yml")
			if tc.content != "" {
				if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			srv := NewServer(log.NewNopLogger(), prometheus.NewRegistry(), WebConfig{ListenAddresses: []string{"127.0.0.1:0"}, ConfigFile: file}, nil, nil)
			if err := srv.Listen(); err == nil {
				t.Error("Listen accepted a bad web config file")
				srv.Shutdown(context.Background())
			}
			if err := srv.Run(context.Background()); err == nil {
				t.Error("Run accepted a bad web config file")
			}
		})
	}
}

func TestServerListenError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := NewServer(nil, prometheus.NewRegistry(), WebConfig{ListenAddresses: []string{"127.0.0.1:0", l.Addr().String()}}, nil, nil)
	if err := srv.Run(context.Background()); err == nil {
		t.Error("Run succeeded on an address in use")
	}
}

func TestServerShutdown(t *testing.T) {
	srv := NewServer(log.NewNopLogger(), prometheus.NewRegistry(), WebConfig{ListenAddresses: []string{"127.0.0.1:0"}}, nil, nil)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addrs()[0].String()
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	// Wait until it serves.
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	c := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := c.Get("http://" + addr + "/-/healthy")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	transport.CloseIdleConnections()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run after Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("listener still open after Shutdown")
	}
	if err := srv.Run(context.Background()); err != nil && !errors.Is(err, errAlreadyRunning) {
		t.Errorf("Run after Shutdown: %v", err)
	}

	// Shutdown before Run: Run returns at once.
	srv2 := NewServer(log.NewNopLogger(), prometheus.NewRegistry(), WebConfig{ListenAddresses: []string{"127.0.0.1:0"}}, nil, nil)
	if err := srv2.Listen(); err != nil {
		t.Fatal(err)
	}
	srv2.Shutdown(context.Background())
	if err := srv2.Run(context.Background()); err != nil {
		t.Errorf("Run after early Shutdown: %v", err)
	}
}
