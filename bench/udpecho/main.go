// Command udpecho is a minimal UDP echo server, written for the
// side-by-side benchmark: it returns every datagram to its sender, reading
// and writing in batches (recvmmsg/sendmmsg). No NTP server can answer
// faster on the same socket path, so it is the ceiling ntpexp and chronyd
// are compared with.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/net/ipv4"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:11123", "address to echo on")
	readers := flag.Int("readers", 1, "goroutines reading the socket")
	flag.Parse()
	pc, err := net.ListenPacket("udp4", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpecho:", err)
		os.Exit(1)
	}
	pc.(*net.UDPConn).SetReadBuffer(4 << 20)
	conn := ipv4.NewPacketConn(pc)
	var wg sync.WaitGroup
	for r := 0; r < *readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]ipv4.Message, 16)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{make([]byte, 2048)}
			}
			out := make([]ipv4.Message, 16)
			for {
				n, err := conn.ReadBatch(msgs, 0)
				if err != nil {
					return
				}
				for i := 0; i < n; i++ {
					out[i] = ipv4.Message{Buffers: [][]byte{msgs[i].Buffers[0][:msgs[i].N]}, Addr: msgs[i].Addr}
				}
				for sent := 0; sent < n; {
					k, err := conn.WriteBatch(out[sent:n], 0)
					if err != nil {
						break
					}
					sent += k
				}
			}
		}()
	}
	wg.Wait()
}
