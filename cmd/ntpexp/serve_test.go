package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kit/log"
)

func TestWarnWorldReadable(t *testing.T) {
	dir := t.TempDir()
	web := filepath.Join(dir, "web.yml")
	key := filepath.Join(dir, "key")
	os.WriteFile(web, []byte("basic_auth_users: {}\n"), 0o644)
	os.WriteFile(key, []byte("k"), 0o600)
	var c Config
	c.Web.ConfigFile, c.Database.AddressKeyFile = web, key
	var buf bytes.Buffer
	got := warnWorldReadable(log.NewLogfmtLogger(&buf), &c, "")
	if len(got) != 1 || got[0] != web || !strings.Contains(buf.String(), "chmod o-r "+web) {
		t.Fatalf("warned %v: %s", got, buf.String())
	}
	os.Chmod(web, 0o640)
	if got := warnWorldReadable(log.NewNopLogger(), &c, ""); len(got) != 0 {
		t.Fatalf("warned about private files: %v", got)
	}
}
