package peers

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a named network namespace (ip netns) with one veth end and address.
// Namespaces isolate the network, not the clock.
type Netns struct {
	Name string     // ip netns name
	Dev  string     // veth device inside the namespace
	Addr netip.Addr // the veth's address (10.99.X.1 for A, 10.99.X.2 for B)
}

// NetnsPair is two namespaces joined by a veth pair on Prefix (10.99.X.0/24). Use it to run a
// server on port 123 in A and a client that needs port 123 too (NTPsec ntpd) in B, or to run
// anything on port 123 without touching the host's.
type NetnsPair struct {
	A, B   *Netns
	Prefix netip.Prefix
}

var netnsSeq atomic.Uint32

// NewNetnsPair creates namespaces A and B with unique names, a veth between them, addresses
// 10.99.X.1/24 (A) and 10.99.X.2/24 (B), and lo up in both. They are deleted on cleanup
// (after every process started later in the test has been stopped). Needs root and iproute2.
func NewNetnsPair(t testing.TB) *NetnsPair {
	t.Helper()
	RequireRoot(t, "create network namespaces")
	ip := Require(t, "ip")
	seq := netnsSeq.Add(1)
	// Interface names are at most 15 bytes; namespace names are files in /run/netns.
	id := fmt.Sprintf("%d%d", os.Getpid()%100000, seq%1000)
	x := int((uint32(os.Getpid())*7 + seq) % 250) // third octet, for readability only: namespaces do not share addresses
	prefix := netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", x))
	a := &Netns{Name: "ntpxa" + id, Dev: "vxa" + id, Addr: netip.AddrFrom4([4]byte{10, 99, byte(x), 1})}
	b := &Netns{Name: "ntpxb" + id, Dev: "vxb" + id, Addr: netip.AddrFrom4([4]byte{10, 99, byte(x), 2})}

	cleanup := func() {
		// Deleting a namespace destroys the veth end in it, and so the pair.
		_, _ = run(10*time.Second, ip, "netns", "del", a.Name)
		_, _ = run(10*time.Second, ip, "netns", "del", b.Name)
	}
	steps := [][]string{
		{"netns", "add", a.Name},
		{"netns", "add", b.Name},
		{"link", "add", a.Dev, "type", "veth", "peer", "name", b.Dev},
		{"link", "set", a.Dev, "netns", a.Name},
		{"link", "set", b.Dev, "netns", b.Name},
		{"-n", a.Name, "addr", "add", a.Addr.String() + "/24", "dev", a.Dev},
		{"-n", b.Name, "addr", "add", b.Addr.String() + "/24", "dev", b.Dev},
		{"-n", a.Name, "link", "set", "lo", "up"},
		{"-n", b.Name, "link", "set", "lo", "up"},
		{"-n", a.Name, "link", "set", a.Dev, "up"},
		{"-n", b.Name, "link", "set", b.Dev, "up"},
	}
	for _, s := range steps {
		if _, err := run(10*time.Second, ip, s...); err != nil {
			cleanup()
			// e.g. a container without CAP_SYS_ADMIN/CAP_NET_ADMIN.
			unavailable(t, "cannot create network namespaces: %v", err)
		}
	}
	t.Cleanup(cleanup)
	// Wait until the link is usable (carrier up) so the first packets are not lost.
	_ = poll(nil, 3*time.Second, 20*time.Millisecond, func() (bool, error) {
		out, err := run(5*time.Second, ip, "-n", a.Name, "-o", "link", "show", a.Dev)
		return err == nil && strings.Contains(out, "LOWER_UP"), nil
	})
	return &NetnsPair{A: a, B: b, Prefix: prefix}
}

// Command returns a command that runs name with args inside the namespace (ip netns exec).
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	ip := Lookup("ip")
	if ip == "" {
		ip = "ip"
	}
	return exec.Command(ip, append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Exec runs name with args inside the namespace to completion and returns its stdout.
func (n *Netns) Exec(timeout time.Duration, name string, args ...string) (string, error) {
	ip := Lookup("ip")
	if ip == "" {
		ip = "ip"
	}
	return run(timeout, ip, append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Do runs fn on an OS thread that has entered the namespace. Sockets created in fn stay in the
// namespace after Do returns and can be used from any goroutine, so a server under test can
// run in-process and still listen inside the namespace.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// If switching back fails the goroutine exits still locked and the runtime discards
		// the thread, so no other goroutine ever runs in the wrong namespace.
		orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", n.Name))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w (fn: %v)", err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenUDP opens a UDP socket inside the namespace (address like "10.99.3.1:123" or ":123").
func (n *Netns) ListenUDP(addr string) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.Do(func() error {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp", ua)
		return err
	})
	return c, err
}

// DialUDP opens a connected UDP socket inside the namespace.
func (n *Netns) DialUDP(addr string) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.Do(func() error {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.DialUDP("udp", nil, ua)
		return err
	})
	return c, err
}

// execIn returns a command for name and args, run inside ns when it is not nil.
func execIn(ns *Netns, name string, args ...string) *exec.Cmd {
	if ns == nil {
		return exec.Command(name, args...)
	}
	return ns.Command(name, args...)
}
