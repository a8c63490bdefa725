package main

import (
	"strings"
	"testing"
	"time"
)

// TestCaptureConfigErrors: every capture.* check in Validate refuses what
// it should, naming the key, the value, where it came from and what is
// allowed.
func TestCaptureConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		body string
		args []string
		want []string
	}{
		{"passive without interface", `{"mode": "passive"}`, nil,
			[]string{"capture.interface = []", "must name the interface", "ip link"}},
		{"interface with a slash", `{"capture": {"interface": ["eth0/1"]}}`, nil,
			[]string{`capture.interface = "eth0/1"`, "config.json", "is not an interface name"}},
		{"interface too long", `{}`, []string{"--capture.interface", "abcdefghijklmnop"},
			[]string{`capture.interface = "abcdefghijklmnop"`, "from flag --capture.interface", "is not an interface name"}},
		// An empty name is dropped when the file is read: none is left.
		{"empty interface", `{"mode": "passive", "capture": {"interface": [""]}}`, nil,
			[]string{"capture.interface = []", "from config file", "must name the interface"}},
		{"buffer too small", `{"capture": {"buffer_size": 65535}}`, nil,
			[]string{"capture.buffer_size = 65535", "config.json", "between 65536 and 1073741824"}},
		{"buffer too large", `{}`, []string{"--capture.buffer-size", "1073741825"},
			[]string{"capture.buffer_size = 1073741825", "from flag --capture.buffer-size", "between 65536 and 1073741824"}},
		{"reply timeout too short", `{"capture": {"reply_timeout": 0.005}}`, nil,
			[]string{"capture.reply_timeout = 0.005", "between 0.01 and 60 seconds"}},
		{"reply timeout too long", `{"capture": {"reply_timeout": 61}}`, nil,
			[]string{"capture.reply_timeout = 61", "between 0.01 and 60 seconds"}},
		{"max pending too small", `{"capture": {"max_pending": 15}}`, nil,
			[]string{"capture.max_pending = 15", "between 16 and 10000000"}},
		{"max pending too large", `{}`, []string{"--capture.max-pending", "10000001"},
			[]string{"capture.max_pending = 10000001", "from flag --capture.max-pending", "between 16 and 10000000"}},
		{"mirror not a bool", `{"capture": {"mirror": "yes"}}`, nil,
			[]string{`"capture.mirror"`, "want true or false"}},
		{"unknown capture key", `{"capture": {"mirrror": true}}`, nil,
			[]string{`unknown key "capture.mirrror"`, `did you mean "capture.mirror"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, _ := writeConfig(t, c.body)
			_, stderr, code := effective(t, append([]string{"--config", path}, c.args...)...)
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("message lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
	// The bounds themselves are allowed.
	path, _ := writeConfig(t, `{"mode": "passive", "capture": {"interface": ["eth0.10"], "buffer_size": 65536, "reply_timeout": 0.01, "max_pending": 16}}`)
	if _, stderr, code := effective(t, "--config", path); code != 0 {
		t.Errorf("lower bounds refused: %s", stderr)
	}
	path, _ = writeConfig(t, `{"mode": "passive", "capture": {"interface": ["abcdefghijklmno"], "buffer_size": 1073741824, "reply_timeout": 60, "max_pending": 10000000}}`)
	if _, stderr, code := effective(t, "--config", path); code != 0 {
		t.Errorf("upper bounds refused: %s", stderr)
	}
}

// TestCaptureConfigSettings: capture.* settings from the file, the
// environment and flags, with their defaults.
func TestCaptureConfigSettings(t *testing.T) {
	c, stderr, code := effective(t)
	if code != 0 {
		t.Fatalf("%d %s", code, stderr)
	}
	if c.Capture.Mirror || c.Capture.BufferSize != 8<<20 || c.Capture.ReplyTimeout.D() != time.Second ||
		c.Capture.MaxPending != 65536 || len(c.Capture.Interface) != 0 {
		t.Fatalf("capture defaults: %+v", c.Capture)
	}
	path, _ := writeConfig(t, `{"mode": "passive", "capture": {"interface": ["eth0", "eth0.10"], "mirror": true, "reply_timeout": 0.5}}`)
	c, stderr, code = effective(t, "--config", path)
	if code != 0 || c.Mode != "passive" || !c.Capture.Mirror || len(c.Capture.Interface) != 2 ||
		c.Capture.Interface[1] != "eth0.10" || c.Capture.ReplyTimeout.D() != 500*time.Millisecond {
		t.Fatalf("from the file: %d %+v %s", code, c.Capture, stderr)
	}
	// --capture.mirror=false on the command line beats the file.
	c, _, _ = effective(t, "--config", path, "--capture.mirror=false")
	if c.Capture.Mirror {
		t.Error("--capture.mirror=false ignored")
	}
	c, _, _ = effective(t, "--capture.mirror", "--capture.interface", "eth1,eth2")
	if !c.Capture.Mirror || len(c.Capture.Interface) != 2 || c.Capture.Interface[0] != "eth1" {
		t.Errorf("flags: %+v", c.Capture)
	}
	t.Setenv("NTPEXP_CAPTURE_MIRROR", "true")
	t.Setenv("NTPEXP_CAPTURE_MAX_PENDING", "1024")
	c, _, _ = effective(t)
	if !c.Capture.Mirror || c.Capture.MaxPending != 1024 {
		t.Errorf("environment: %+v", c.Capture)
	}
	t.Setenv("NTPEXP_CAPTURE_MAX_PENDING", "8")
	if _, stderr, code := effective(t); code != exitUsage || !strings.Contains(stderr, "from environment NTPEXP_CAPTURE_MAX_PENDING") {
		t.Errorf("invalid environment value: %d %s", code, stderr)
	}
}
