// Package peers runs real NTP peers (chronyd, ntpdig, NTPsec ntpd) and network namespaces for
// end-to-end tests, and parses what those peers report about each exchange.
//
// Policy (DEVELOPERS.md): a test that needs a peer that is missing skips loudly on a developer's
// machine and fails in CI (CI=true). Install everything with `sudo scripts/install-peers.sh`.
//
// Real NTP clients can step this machine's clock when run as root: every runner here starts them
// with clock control off (chronyd -x, ntpdig without -S/-s, ntpd with `disable ntp`/`disable kernel`).
// Traffic goes only to loopback or to network namespaces created by NewNetnsPair.
package peers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// InstallScript is the command that installs every peer; it is quoted in skip messages.
const InstallScript = "sudo scripts/install-peers.sh"

// DefaultNTPsecDir is where scripts/install-peers.sh unpacks the ntpsec package
// (override with NTPEXP_NTPSEC_DIR, for both the script and this package).
const DefaultNTPsecDir = "/var/cache/ntpexp-peers/ntpsec"

// Python3 is Debian's python: the NTPsec scripts (ntpdig, ntpq) need its python3-ntp module,
// which a pyenv python earlier in PATH does not have.
const Python3 = "/usr/bin/python3"

// Peer names understood by Require besides plain executable names.
const (
	// NTPsecNtpd is the unpacked NTPsec ntpd (it conflicts with chrony, so it is never installed).
	NTPsecNtpd = "ntpsec-ntpd"
)

// hints says which Debian package provides a peer.
var hints = map[string]string{
	"chronyd":                 "chrony",
	"chronyc":                 "chrony",
	"ntpdig":                  "ntpsec-ntpdig",
	"faketime":                "faketime",
	"prometheus":              "prometheus",
	"promtool":                "prometheus",
	"prometheus-alertmanager": "prometheus-alertmanager",
	"ip":                      "iproute2",
	"sqlite3":                 "sqlite3",
	"setcap":                  "libcap2-bin",
	NTPsecNtpd:                "ntpsec (unpacked, not installed)",
}

// InCI reports whether the tests run in CI (CI=true), where a missing peer is a failure.
func InCI() bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv("CI")))
	return v == "true" || v == "1"
}

// unavailable fails the test in CI and skips it loudly elsewhere.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("FAIL (CI=true, peers must be present): %s", msg)
	}
	t.Skipf("SKIP: %s (in CI, CI=true, this is a failure)", msg)
}

// NTPsecDir is the directory holding the unpacked ntpsec package.
func NTPsecDir() string {
	if d := os.Getenv("NTPEXP_NTPSEC_DIR"); d != "" {
		return d
	}
	return DefaultNTPsecDir
}

// Lookup finds a peer's executable without any test policy: "" if it is missing.
// name is an executable name (searched in PATH, then /usr/sbin and /sbin, which a
// non-root PATH may lack) or NTPsecNtpd.
func Lookup(name string) string {
	switch name {
	case NTPsecNtpd:
		return executable(filepath.Join(NTPsecDir(), "usr/sbin/ntpd"))
	case "ntpdig":
		// ntpdig is run as `/usr/bin/python3 PATH`; it needs Debian's python.
		if executable(Python3) == "" {
			return ""
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := executable(filepath.Join(dir, name)); p != "" {
			return p
		}
	}
	return ""
}

func executable(p string) string {
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return ""
	}
	return p
}

// Require returns the path of a peer executable (see Lookup for names). If it is missing, the
// test fails when CI=true and is skipped with a loud reason otherwise.
func Require(t testing.TB, name string) string {
	t.Helper()
	if p := Lookup(name); p != "" {
		return p
	}
	pkg := hints[name]
	if pkg == "" {
		pkg = "?"
	}
	where := ""
	if name == NTPsecNtpd {
		where = " in " + NTPsecDir()
	}
	if name == "ntpdig" {
		where += " (or " + Python3 + " is missing)"
	}
	unavailable(t, "%s not installed%s (package %s); run `%s`", name, where, pkg, InstallScript)
	return ""
}

// RequireRoot requires root (for port 123, network namespaces, ...); why says what for.
// Same policy as Require: fatal in CI, a loud skip elsewhere.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "needs root to %s; run the tests as root (sudo -E go test ...)", why)
	}
}
