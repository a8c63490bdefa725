package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NTPdigOptions configure one ntpdig run.
type NTPdigOptions struct {
	// FakeTime, if set, runs ntpdig under `faketime -f FakeTime` (e.g. "+1.5s": the client's
	// clock reads 1.5 s ahead, so the server-minus-client offset ntpdig reports is about −1.5).
	FakeTime string
	// Env adds environment variables.
	Env []string
	// Netns runs ntpdig inside this namespace (ntpdig always talks to port 123).
	Netns *Netns
	// Timeout is ntpdig's -t (whole seconds to wait for a reply, rounded up); 2 s when 0.
	Timeout time.Duration
	// Args are extra ntpdig arguments (never -S/-s: they set the clock).
	Args []string
}

// NTPdigResult is ntpdig -j's JSON output, and what it printed.
type NTPdigResult struct {
	Time string `json:"time"` // server time of the reply, local time zone
	// Offset is theta: server minus client, in seconds (printed with 6 decimals).
	Offset float64 `json:"offset"`
	// SyncDistance is what ntpdig calls "precision": |delay/2 + epsilon|, seconds.
	SyncDistance float64 `json:"precision"`
	Host         string  `json:"host"`
	IP           string  `json:"ip"`
	Stratum      int     `json:"stratum"`
	Leap         string  `json:"leap"`
	Adjusted     bool    `json:"adjusted"` // always false here: -S/-s are never passed

	Stdout, Stderr string `json:"-"`
}

// NTPdig runs `/usr/bin/python3 /usr/bin/ntpdig -j HOST` (Debian's python, since a pyenv
// python lacks the ntp module) and parses its JSON. It never sets the clock. A missing ntpdig
// or faketime follows the Require policy; an error means ntpdig ran and failed (no reply, ...).
func NTPdig(t testing.TB, host string, opt NTPdigOptions) (NTPdigResult, error) {
	t.Helper()
	bin := Require(t, "ntpdig")
	for _, a := range opt.Args {
		if a == "-S" || a == "-s" || strings.HasPrefix(a, "--step") || strings.HasPrefix(a, "--slew") {
			t.Fatalf("ntpdig: %s would set the clock", a)
		}
	}
	timeout := opt.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	secs := int((timeout + time.Second - 1) / time.Second)
	timeout = time.Duration(secs) * time.Second
	args := []string{bin, "-j", "-t", strconv.Itoa(secs)}
	args = append(args, opt.Args...)
	args = append(args, host)
	name := Python3
	if opt.FakeTime != "" {
		ft := Require(t, "faketime")
		args = append([]string{"-f", opt.FakeTime, Python3}, args...)
		name = ft
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if opt.Netns != nil {
		cmd = opt.Netns.Command(name, args...)
	} else {
		cmd = exec.Command(name, args...)
	}
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	cmd.Env = append(os.Environ(), opt.Env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := NTPdigResult{Stdout: out.String(), Stderr: errb.String()}
	if err != nil {
		return res, fmt.Errorf("ntpdig %s: %w: %s", host, err, strings.TrimSpace(res.Stderr))
	}
	line := strings.TrimSpace(res.Stdout)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if line == "" {
		return res, errors.New("ntpdig printed nothing: " + strings.TrimSpace(res.Stderr))
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		return res, fmt.Errorf("ntpdig output %q: %w", line, err)
	}
	return res, nil
}
