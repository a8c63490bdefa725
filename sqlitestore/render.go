package sqlitestore

import (
	"fmt"
	"io"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Human-readable rendering of query results, for the CLI. JSON output
// encodes the same structs instead.

type secondsUnit struct {
	below float64 // the unit is used for |v| below this
	scale float64 // multiply seconds by this
	name  string
}

var secondsUnits = []secondsUnit{
	{1e-6, 1e9, "ns"},
	{1e-3, 1e6, "µs"},
	{1, 1e3, "ms"},
	{60, 1, "s"},
	{3600, 1.0 / 60, "min"},
	{86400, 1.0 / 3600, "h"},
	{365.25 * 86400, 1.0 / 86400, "d"},
	{math.Inf(1), 1.0 / (365.25 * 86400), "y"},
}

// FormatSeconds renders a duration in seconds with three significant
// digits in a natural unit: "850 ns", "12.3 µs", "-1.5 ms", "2.25 s",
// "3.5 min", "26.1 h", "41.7 d", "55.2 y".
func FormatSeconds(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf s"
	case math.IsInf(v, -1):
		return "-Inf s"
	case v == 0:
		return "0 s"
	}
	sign := ""
	a := v
	if a < 0 {
		sign, a = "-", -a
	}
	for i := 0; i < len(secondsUnits); i++ {
		u := secondsUnits[i]
		if a >= u.below {
			continue
		}
		x := a * u.scale
		str := strconv.FormatFloat(x, 'g', 3, 64)
		r, _ := strconv.ParseFloat(str, 64)
		if r/u.scale >= u.below && i+1 < len(secondsUnits) {
			// Rounding reached the next unit (999.96 µs, 59.99 s).
			u = secondsUnits[i+1]
			x = a * u.scale
			str = strconv.FormatFloat(x, 'g', 3, 64)
		}
		if strings.ContainsRune(str, 'e') {
			str = strconv.FormatFloat(x, 'f', 0, 64)
		}
		return sign + str + " " + u.name
	}
	return sign + strconv.FormatFloat(a, 'g', 3, 64) + " s"
}

// FormatSecondsPtr is FormatSeconds with "-" for unknown values.
func FormatSecondsPtr(v *float64) string {
	if v == nil {
		return "-"
	}
	return FormatSeconds(*v)
}

func fmtTime(t Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

func fmtAddr(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTab(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// RenderClients writes clients as an aligned table.
func RenderClients(w io.Writer, rows []ClientRow) error {
	tw := newTab(w)
	fmt.Fprintln(tw, "CLIENT\tFIRST SEEN\tLAST SEEN\tREQUESTS\tDROPS\tINTERVAL\tVERSION\tMODE\tIMPLEMENTATION\tOFFSET\tMETHOD\tDELAY")
	for _, c := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n",
			fmtAddr(c.ClientIP), fmtTime(c.FirstSeen), fmtTime(c.LastSeen), c.Requests, c.Drops,
			FormatSecondsPtr(c.AvgIntervalSeconds), c.Version, c.Mode, c.Implementation,
			FormatSecondsPtr(c.LastOffsetSeconds), c.LastOffsetMethod, FormatSecondsPtr(c.LastDelaySeconds))
	}
	return tw.Flush()
}

// RenderObservations writes raw observations as an aligned table.
func RenderObservations(w io.Writer, rows []ObservationRow) error {
	tw := newTab(w)
	fmt.Fprintln(tw, "TIME\tCLIENT\tPORT\tVERSION\tMODE\tSTRATUM\tPOLL\tDROP\tOFFSET\tMETHOD\tDELAY\tIMPLEMENTATION")
	for _, o := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n",
			o.Time.UTC().Format(time.RFC3339Nano), fmtAddr(o.ClientIP), o.ClientPort, o.Version, o.Mode,
			o.Stratum, o.Poll, dash(o.DropReason), FormatSecondsPtr(o.OffsetSeconds), o.OffsetMethod,
			FormatSecondsPtr(o.DelaySeconds), o.Implementation)
	}
	return tw.Flush()
}

// RenderClientDetail writes a client's summary, latest observations and
// hourly history.
func RenderClientDetail(w io.Writer, d *ClientDetail) error {
	c := d.Client
	tw := newTab(w)
	kv := [][2]string{
		{"Client", fmtAddr(c.ClientIP)},
		{"First seen", fmtTime(c.FirstSeen)},
		{"Last seen", fmtTime(c.LastSeen)},
		{"Requests", strconv.FormatInt(c.Requests, 10)},
		{"Drops", strconv.FormatInt(c.Drops, 10)},
		{"Average interval", FormatSecondsPtr(c.AvgIntervalSeconds)},
		{"Version / mode / poll", fmt.Sprintf("%d / %d / %d", c.Version, c.Mode, c.Poll)},
		{"Implementation", c.Implementation},
		{"Last offset", fmt.Sprintf("%s (%s, %s)", FormatSecondsPtr(c.LastOffsetSeconds), c.LastOffsetMethod, fmtTimePtr(c.LastOffsetAt))},
		{"Last delay", fmt.Sprintf("%s (%s)", FormatSecondsPtr(c.LastDelaySeconds), fmtTimePtr(c.LastDelayAt))},
		{"Last local address", fmtAddr(c.LastLocalIP)},
	}
	for _, p := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nLatest %d observations (newest first):\n", len(d.Latest))
	if err := RenderObservations(w, d.Latest); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nHourly history, last %d hours:\n", d.Hours)
	tw = newTab(w)
	fmt.Fprintln(tw, "HOUR\tREQUESTS\tDROPS\tRATE LIMITED\tOFFSET MIN\tOFFSET MAX\tOFFSET MEAN\tDELAY MIN\tDELAY MAX\tDELAY MEAN\tVERSIONS\tIMPLEMENTATIONS")
	for _, h := range d.History {
		vs := make([]string, len(h.Versions))
		for i, v := range h.Versions {
			vs[i] = strconv.Itoa(v)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			fmtTime(h.Hour), h.Requests, h.Drops, h.RateLimited,
			FormatSecondsPtr(h.OffsetMinSeconds), FormatSecondsPtr(h.OffsetMaxSeconds), FormatSecondsPtr(h.OffsetMeanSeconds),
			FormatSecondsPtr(h.DelayMinSeconds), FormatSecondsPtr(h.DelayMaxSeconds), FormatSecondsPtr(h.DelayMeanSeconds),
			dash(strings.Join(vs, ",")), dash(strings.Join(h.Implementations, ",")))
	}
	return tw.Flush()
}

func sortedCounts(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return out
}

// RenderStats writes a Stats summary.
func RenderStats(w io.Writer, s *Stats) error {
	tw := newTab(w)
	q := func(x Quantiles) string {
		if x.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", FormatSecondsPtr(x.P50),
			FormatSecondsPtr(x.P90), FormatSecondsPtr(x.P99), FormatSecondsPtr(x.Max), x.Count)
	}
	list := func(m map[string]int64) string { return dash(strings.Join(sortedCounts(m), "  ")) }
	rows := [][2]string{
		{"Window", fmt.Sprintf("%d h since %s", s.Hours, fmtTime(s.Since))},
		{"Requests", strconv.FormatInt(s.Requests, 10)},
		{"Answered", strconv.FormatInt(s.Answered, 10)},
		{"Dropped", strconv.FormatInt(s.Dropped, 10)},
		{"Unique clients", strconv.FormatInt(s.UniqueClients, 10)},
		{"Clients revealing clock", fmt.Sprintf("%d (not: %d)", s.ClientsRevealingClock, s.ClientsNotRevealingClock)},
		{"By version", list(s.ByVersion)},
		{"By mode", list(s.ByMode)},
		{"By implementation", list(s.ByImplementation)},
		{"By offset method", list(s.ByOffsetMethod)},
		{"Drops by reason", list(s.DropsByReason)},
		{"|Offset|", q(s.AbsOffsetSeconds)},
		{"Delay", q(s.DelaySeconds)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nTop talkers:")
	tw = newTab(w)
	fmt.Fprintln(tw, "CLIENT\tREQUESTS\tDROPS")
	for _, t := range s.TopTalkers {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", fmtAddr(t.ClientIP), t.Requests, t.Drops)
	}
	return tw.Flush()
}

// RenderAnomalies writes anomalies as an aligned table.
func RenderAnomalies(w io.Writer, a *Anomalies) error {
	fmt.Fprintf(w, "Window %d h since %s; thresholds: offset %s, delay %s\n", a.Hours, fmtTime(a.Since),
		FormatSeconds(a.OffsetThresholdSeconds), FormatSeconds(a.DelayThresholdSeconds))
	tw := newTab(w)
	fmt.Fprintln(tw, "KIND\tCLIENT\tCOUNT\tTOTAL\tWORST\tLATEST\tMETHOD\tKOD\tLAST SEEN\tIMPLEMENTATION")
	for _, x := range a.Anomalies {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", x.Kind, fmtAddr(x.ClientIP), x.Count, x.Total,
			FormatSecondsPtr(x.WorstSeconds), FormatSecondsPtr(x.LatestSeconds), x.Method, x.KoD,
			fmtTime(x.LastSeen), x.Implementation)
	}
	return tw.Flush()
}
