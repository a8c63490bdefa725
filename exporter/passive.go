package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ntpexp/ntpexp/ntp"
)

// PassiveStats is what passive mode reports about its capture and
// matching; *ntp.Passive implements it. It is read at scrape time.
type PassiveStats interface {
	Counters() ntp.PassiveCounters
}

type passiveCollector struct {
	src                                   PassiveStats
	requests, replies, unanswered, lost   *prometheus.Desc
	pending, pendingCap, overflows, dups  *prometheus.Desc
	ignored, invalid, truncated, kernDrop *prometheus.Desc
	fragments                             *prometheus.Desc
}

// RegisterPassive registers the passive-mode metrics on reg, read from s
// at scrape time. Every request also yields an observation, so
// ntpexp_requests_total, ntpexp_drops_total{reason="unanswered"} and
// ntpexp_processing_seconds (the monitored daemon's T3 − T2) work as in
// server mode; these metrics describe the capture itself.
func RegisterPassive(reg prometheus.Registerer, s PassiveStats) error {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return reg.Register(&passiveCollector{
		src:        s,
		requests:   d("ntpexp_passive_requests_total", "Client requests to the monitored daemon seen by the capture."),
		replies:    d("ntpexp_passive_replies_total", "Replies of the monitored daemon seen by the capture, by whether they matched a captured request.", "result"),
		unanswered: d("ntpexp_passive_unanswered_total", "Requests the monitored daemon left unanswered within the reply timeout (while the capture lost nothing)."),
		lost:       d("ntpexp_passive_fate_unknown_total", "Requests whose reply may have been missed: the kernel dropped capture frames meanwhile, or the pending table was full."),
		pending:    d("ntpexp_passive_pending_requests", "Requests waiting for the daemon's reply."),
		pendingCap: d("ntpexp_passive_pending_capacity", "Most requests that may wait for a reply at once (capture.max_pending)."),
		overflows:  d("ntpexp_passive_pending_overflows_total", "Requests pushed out of a full pending table before their reply could be seen."),
		dups:       d("ntpexp_passive_duplicate_requests_total", "Requests identical to one still waiting for its reply (replays, copies in a flood)."),
		ignored:    d("ntpexp_passive_ignored_packets_total", "NTP packets not recorded as requests: this host's own upstream requests (own_request) and the replies to them (own_reply), requests and replies seen a second time on another captured interface (copy), and frames neither to nor from this host, without capture.mirror (other_host).", "kind"),
		invalid:    d("ntpexp_capture_invalid_frames_total", "Captured frames that passed the filter but are not a UDP/NTP packet that can be read."),
		truncated:  d("ntpexp_capture_truncated_frames_total", "Captured frames longer than the capture buffer (2048 bytes), not read; one this host sent is a capture gap."),
		fragments:  d("ntpexp_capture_fragments_total", "First fragments of fragmented NTP datagrams, not reassembled; one the daemon sent is a capture gap."),
		kernDrop:   d("ntpexp_capture_kernel_drops_total", "Frames the kernel dropped because the capture buffer was full; raise capture.buffer_size if this grows."),
	})
}

func (c *passiveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.replies, c.unanswered, c.lost, c.pending, c.pendingCap,
		c.overflows, c.dups, c.ignored, c.invalid, c.truncated, c.kernDrop, c.fragments} {
		ch <- d
	}
}

func (c *passiveCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.src.Counters()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.requests, n.Requests)
	counter(c.replies, n.Matched, "matched")
	counter(c.replies, n.Unmatched, "unmatched")
	counter(c.unanswered, n.Unanswered)
	counter(c.lost, n.Lost)
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(n.Pending))
	ch <- prometheus.MustNewConstMetric(c.pendingCap, prometheus.GaugeValue, float64(n.MaxPending))
	counter(c.overflows, n.Overflows)
	counter(c.dups, n.Duplicates)
	counter(c.ignored, n.IgnoredOutgoingRequests, "own_request")
	counter(c.ignored, n.IgnoredIncomingReplies, "own_reply")
	counter(c.ignored, n.Copies, "copy")
	counter(c.ignored, n.IgnoredOtherHost, "other_host")
	counter(c.invalid, n.Invalid)
	counter(c.truncated, n.Truncated)
	counter(c.fragments, n.Fragments)
	counter(c.kernDrop, n.KernelDrops)
}
