package peers

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a background process started for a test. Its stdout and stderr go to LogPath.
// It is stopped (SIGTERM, then SIGKILL after 5 s) on t.Cleanup, and its log's tail is
// written to the test log if the test failed.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string

	done    chan struct{}
	waitErr error
	once    sync.Once
}

// StartProc starts cmd in its own process group. name labels it in logs. The log file is
// created in dir (t.TempDir() when dir is "").
func StartProc(t testing.TB, name, dir string, cmd *exec.Cmd) *Proc {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	logPath := filepath.Join(dir, name+".out")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("%s: log file: %v", name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Never outlive the test binary. (Pdeathsig fires when the OS thread that forked exits; Go
	// only ends threads of goroutines that exit while locked, so do not call this inside Netns.Do.)
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: start %s: %v", name, strings.Join(cmd.Args, " "), err)
	}
	p := &Proc{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Logf("%s: started pid %d: %s", name, cmd.Process.Pid, strings.Join(cmd.Args, " "))
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", name, tail(p.Output(), 40))
		}
	})
	return p
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has ended, and its wait error.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output returns everything the process wrote so far.
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Stop sends SIGTERM to the process group, waits up to 5 s, then sends SIGKILL. It is
// idempotent and returns the process's wait error (nil or the signal exit are both normal).
func (p *Proc) Stop() error {
	p.once.Do(func() {
		pgid := p.Cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	})
	<-p.done
	return p.waitErr
}

// errExited is returned by waits when the process ended first.
func (p *Proc) errExited() error {
	_, err := p.Exited()
	return fmt.Errorf("%s exited (%v); output:\n%s", p.Name, err, tail(p.Output(), 20))
}

func tail(s string, lines int) string {
	s = strings.TrimRight(s, "\n")
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// ErrTimeout is returned (wrapped) by the Wait helpers.
var ErrTimeout = errors.New("timeout")

// poll calls f every interval until it returns true or an error, the process p (if not nil)
// exits, or timeout passes.
func poll(p *Proc, timeout, interval time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if p != nil {
			if exited, _ := p.Exited(); exited {
				return p.errExited()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, ErrTimeout)
		}
		time.Sleep(interval)
	}
}

// run runs a command to completion and returns its stdout; stderr is included in the error.
func run(timeout time.Duration, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
		}
		return out.String(), nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("%s %s: %w after %v", name, strings.Join(args, " "), ErrTimeout, timeout)
	}
}

// shortTempDir makes a 0700 directory with a short path under os.TempDir (unix socket paths
// are limited to 108 bytes, and t.TempDir paths grow with the test name). Removed on cleanup.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatalf("chmod %s: %v", d, err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
