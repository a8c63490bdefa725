package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bcrypt("s3cret-scrape"), cost 4.
const scrapeHash = "$2a$04$lpZyOUqjFGzGTEkA8aDQy.JGxjtFLQZvWthfS2k94Doi0Jnlc5WKy"

func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ntpexp-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestWebTLSAndBasicAuth: with --web.config.file, /metrics and the REST
// API need TLS and credentials: none gets 401, the right ones get data.
func TestWebTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	webcfg := filepath.Join(dir, "web.yml")
	os.WriteFile(webcfg, []byte("tls_server_config:\n  cert_file: "+cert+"\n  key_file: "+key+
		"\nbasic_auth_users:\n  prometheus: "+scrapeHash+"\n"), 0o600)
	d := startDaemon(t, daemonOpts{NoWait: true, Args: []string{"--web.config.file", webcfg}})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path, user, pass string) (int, string) {
		req, _ := http.NewRequest("GET", "https://"+d.WebAddr+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, _ := get("/-/healthy", "prometheus", "s3cret-scrape"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTPS answer:\n%s", d.Proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	runLoad(t, d.NTPAddr, "-rate", "50", "-duration", "1s", "-sources", "5", "-workers", "1")
	time.Sleep(1500 * time.Millisecond) // one flush interval
	for _, path := range []string{"/metrics", "/api/clients", "/api/stats?hours=1"} {
		if code, _ := get(path, "", ""); code != 401 {
			t.Errorf("%s without credentials: %d, want 401", path, code)
		}
		if code, _ := get(path, "prometheus", "wrong"); code != 401 {
			t.Errorf("%s with a wrong password: %d, want 401", path, code)
		}
		code, body := get(path, "prometheus", "s3cret-scrape")
		if code != 200 {
			t.Errorf("%s with credentials: %d %s", path, code, body)
		}
		if path == "/metrics" && !strings.Contains(body, "ntpexp_requests_total") {
			t.Errorf("/metrics body lacks ntpexp_requests_total")
		}
		if path == "/api/clients" && !strings.Contains(body, `"client_ip"`) {
			t.Errorf("/api/clients body: %s", body)
		}
	}
	// Plain HTTP is refused.
	if resp, err := http.Get("http://" + d.WebAddr + "/metrics"); err == nil {
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP served metrics")
		}
		resp.Body.Close()
	}
}
