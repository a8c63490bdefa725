package ntp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// ServerConfig configures the sockets of a Server.
type ServerConfig struct {
	// ListenAddresses are host:port pairs. An empty host (":123") means
	// both wildcards, 0.0.0.0 and [::], as separate sockets.
	ListenAddresses []string
	// Readers is the number of reading goroutines per address, each with
	// its own SO_REUSEPORT socket (default 1).
	Readers int
	// Batch is how many packets one recvmmsg call may return (default 16).
	Batch int
}

// Server answers NTP requests on UDP sockets with a Responder and hands
// every observation to a Consumer.
type Server struct {
	cfg      ServerConfig
	logger   log.Logger
	resp     *Responder
	consumer Consumer

	mu      sync.Mutex
	sockets []*socket
	wg      sync.WaitGroup
	stopped bool
}

// NewServer makes a server; Listen opens its sockets.
func NewServer(cfg ServerConfig, resp *Responder, consumer Consumer, logger log.Logger) *Server {
	if cfg.Readers < 1 {
		cfg.Readers = 1
	}
	if cfg.Batch < 1 {
		cfg.Batch = 16
	}
	if consumer == nil {
		consumer = Consumers(nil)
	}
	return &Server{cfg: cfg, logger: logger, resp: resp, consumer: consumer}
}

// ListenError explains a socket that could not be opened, and how to fix it.
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string {
	port := e.Addr[strings.LastIndexByte(e.Addr, ':')+1:]
	switch {
	case errors.Is(e.Err, syscall.EADDRINUSE):
		return fmt.Sprintf("cannot listen on UDP %s: port %s is already in use, probably by another NTP daemon. "+
			"Find it with: ss -ulnp 'sport = :%s'. Then either stop it, make chronyd a client only "+
			"(add \"port 0\" to chrony.conf and restart it), or give ntpexp another address "+
			"with --ntp.listen-address", e.Addr, port, port)
	case errors.Is(e.Err, syscall.EACCES) || errors.Is(e.Err, syscall.EPERM):
		return fmt.Sprintf("cannot listen on UDP %s: permission denied. Ports below 1024 need the "+
			"CAP_NET_BIND_SERVICE capability, not root: under systemd set "+
			"AmbientCapabilities=CAP_NET_BIND_SERVICE (the shipped unit does), or run "+
			"'sudo setcap cap_net_bind_service=+ep /path/to/ntpexp' once; or use a port above 1023 "+
			"with --ntp.listen-address", e.Addr)
	case errors.Is(e.Err, syscall.EADDRNOTAVAIL):
		return fmt.Sprintf("cannot listen on UDP %s: the address is not configured on this host; "+
			"check --ntp.listen-address against 'ip addr'", e.Addr)
	}
	return fmt.Sprintf("cannot listen on UDP %s: %v", e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// Listen opens every socket. On error, sockets already opened are closed.
func (s *Server) Listen() error {
	var socks []*socket
	fail := func(err error) error {
		for _, so := range socks {
			so.close()
		}
		return err
	}
	for _, addr := range s.cfg.ListenAddresses {
		host, portStr, err := net.SplitHostPort(addr)
		if err != nil {
			return fail(fmt.Errorf("ntp.listen-address %q: %w (want host:port, e.g. :123 or 127.0.0.1:1123)", addr, err))
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			return fail(fmt.Errorf("ntp.listen-address %q: bad port %q", addr, portStr))
		}
		var targets []netip.AddrPort
		if host == "" {
			targets = []netip.AddrPort{
				netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)),
				netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port)),
			}
		} else {
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return fail(fmt.Errorf("ntp.listen-address %q: %q is not an IP address", addr, host))
			}
			targets = []netip.AddrPort{netip.AddrPortFrom(ip.Unmap(), uint16(port))}
		}
		for ti := range targets {
			t := targets[ti]
			for r := 0; r < s.cfg.Readers; r++ {
				so, err := openSocket(t, s.cfg.Readers > 1)
				if err != nil {
					if host == "" && t.Addr().Is6() && ipv6Unavailable(err) {
						level.Warn(s.logger).Log("msg", "IPv6 not available, serving IPv4 only", "addr", t, "err", err)
						break
					}
					return fail(&ListenError{Addr: t.String(), Err: err})
				}
				if !so.kernelTimestamps {
					level.Warn(s.logger).Log("msg", "kernel receive timestamps unavailable, using the time of reading instead (less accurate under load)", "addr", t)
				}
				socks = append(socks, so)
				// With port 0 the first socket picks a port; the other
				// sockets of this address share it.
				if port == 0 {
					port = uint64(so.local.Port())
					for j := range targets {
						targets[j] = netip.AddrPortFrom(targets[j].Addr(), so.local.Port())
					}
					t = targets[ti]
				}
			}
		}
	}
	s.mu.Lock()
	s.sockets = socks
	s.mu.Unlock()
	return nil
}

func ipv6Unavailable(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EPROTONOSUPPORT)
}

// Addrs returns the bound local addresses, one per socket.
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.AddrPort, len(s.sockets))
	for i, so := range s.sockets {
		out[i] = so.local
	}
	return out
}

// Serve reads and answers packets until Shutdown. It returns after every
// reader has stopped.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	socks := s.sockets
	s.mu.Unlock()
	if len(socks) == 0 {
		return errors.New("ntp: Serve called before Listen")
	}
	errc := make(chan error, len(socks))
	for _, so := range socks {
		s.wg.Add(1)
		go func(so *socket) {
			defer s.wg.Done()
			r := newReader(so, s.resp, s.consumer, s.cfg.Batch)
			if err := r.run(); err != nil {
				errc <- err
			}
		}(so)
	}
	go func() {
		<-ctx.Done()
		s.Shutdown()
	}()
	s.wg.Wait()
	close(errc)
	return <-errc
}

// Shutdown stops reading packets: it closes the sockets and waits for the
// readers, which finish the batch they hold (so every request read is
// answered and observed) and return.
func (s *Server) Shutdown() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		for _, so := range s.sockets {
			so.close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}

type tableStats struct {
	table *ClientTable
	clock ClockStateSource
}

// StatsOf reports on a client table and clock, for the exporter.
func StatsOf(table *ClientTable, clock ClockStateSource) Stats { return tableStats{table, clock} }

func (s tableStats) ClockState() ClockState { return *s.clock.Load() }
func (s tableStats) TrackedClients() int    { return s.table.Len() }
func (s tableStats) Evictions() uint64      { return s.table.Evictions() }
func (s tableStats) TableCapacity() int     { return s.table.Capacity() }
