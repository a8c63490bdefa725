package exporter

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ntpexp/ntpexp/ntp"
)

type fixedPassive ntp.PassiveCounters

func (f fixedPassive) Counters() ntp.PassiveCounters { return ntp.PassiveCounters(f) }

func TestPassiveMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if err := RegisterPassive(reg, fixedPassive{Requests: 10, Matched: 7, Unmatched: 1, Unanswered: 2, Lost: 1,
		Pending: 3, MaxPending: 64, Overflows: 1, Duplicates: 4, IgnoredOutgoingRequests: 5, IgnoredIncomingReplies: 6,
		Invalid: 8, Truncated: 9, KernelDrops: 11, Copies: 12, IgnoredOtherHost: 13, Fragments: 14}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP ntpexp_capture_fragments_total First fragments of fragmented NTP datagrams, not reassembled; one the daemon sent is a capture gap.
# TYPE ntpexp_capture_fragments_total counter
ntpexp_capture_fragments_total 14
# HELP ntpexp_capture_kernel_drops_total Frames the kernel dropped because the capture buffer was full; raise capture.buffer_size if this grows.
# TYPE ntpexp_capture_kernel_drops_total counter
ntpexp_capture_kernel_drops_total 11
# HELP ntpexp_passive_ignored_packets_total NTP packets not recorded as requests: this host's own upstream requests (own_request) and the replies to them (own_reply), requests and replies seen a second time on another captured interface (copy), and frames neither to nor from this host, without capture.mirror (other_host).
# TYPE ntpexp_passive_ignored_packets_total counter
ntpexp_passive_ignored_packets_total{kind="copy"} 12
ntpexp_passive_ignored_packets_total{kind="other_host"} 13
ntpexp_passive_ignored_packets_total{kind="own_reply"} 6
ntpexp_passive_ignored_packets_total{kind="own_request"} 5
# HELP ntpexp_passive_pending_requests Requests waiting for the daemon's reply.
# TYPE ntpexp_passive_pending_requests gauge
ntpexp_passive_pending_requests 3
# HELP ntpexp_passive_replies_total Replies of the monitored daemon seen by the capture, by whether they matched a captured request.
# TYPE ntpexp_passive_replies_total counter
ntpexp_passive_replies_total{result="matched"} 7
ntpexp_passive_replies_total{result="unmatched"} 1
# HELP ntpexp_passive_unanswered_total Requests the monitored daemon left unanswered within the reply timeout (while the capture lost nothing).
# TYPE ntpexp_passive_unanswered_total counter
ntpexp_passive_unanswered_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ntpexp_capture_fragments_total", "ntpexp_capture_kernel_drops_total",
		"ntpexp_passive_ignored_packets_total", "ntpexp_passive_pending_requests", "ntpexp_passive_replies_total",
		"ntpexp_passive_unanswered_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 17 {
		t.Errorf("%d series, err %v; want 17", n, err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
