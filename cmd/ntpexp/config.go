package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ntpexp/ntpexp/ntp"
	"github.com/ntpexp/ntpexp/sqlitestore"
)

// Seconds is a duration given in seconds, as in the old tool's
// config.json ("flush_interval": 30), or as a Go duration ("30s", "1h").
type Seconds time.Duration

// Decode implements kong.MapperValue.
func (s *Seconds) Decode(ctx *kong.DecodeContext) error {
	tok := ctx.Scan.Pop()
	switch v := tok.Value.(type) {
	case float64:
		*s = Seconds(v * float64(time.Second))
		return nil
	case int:
		*s = Seconds(time.Duration(v) * time.Second)
		return nil
	case string:
		d, err := parseSeconds(v)
		if err != nil {
			return err
		}
		*s = Seconds(d)
		return nil
	}
	return fmt.Errorf("want a number of seconds or a duration like 30s, got %v", tok.Value)
}

func parseSeconds(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("want a number of seconds or a duration like 30s, got %q", v)
	}
	return d, nil
}

// D returns the duration.
func (s Seconds) D() time.Duration { return time.Duration(s) }

func (s Seconds) String() string { return strconv.FormatFloat(time.Duration(s).Seconds(), 'f', -1, 64) }

// MarshalJSON writes seconds, the unit the config file uses.
func (s Seconds) MarshalJSON() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalJSON reads seconds (a number) or a duration string.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	d, err := parseSeconds(strings.Trim(string(b), `"`))
	*s = Seconds(d)
	return err
}

// Config is every setting. Each is a flag (--section.key), an environment
// variable (NTPEXP_SECTION_KEY) and a key of the JSON config file
// ({"section": {"key": …}}; the old tool's config.json is valid).
// Precedence: flag > environment > file > default.
type Config struct {
	Mode     string `default:"server" enum:"server,passive" json:"mode" help:"server: answer NTP requests on UDP port 123 from the host clock. passive: leave port 123 to the daemon already running here (chronyd, ntpd) and watch its traffic on capture.interface instead; sends nothing, needs only CAP_NET_RAW."`
	Database struct {
		Enabled             bool    `default:"true" negatable:"" json:"enabled" help:"Keep every observation in the SQLite store (history, query commands, API). --database.enabled=false serves with metrics only: no database is opened, the API answers 404."`
		Path                string  `default:"ntpexp.db" json:"path" help:"SQLite database file, created with mode 0600 if missing."`
		BatchSize           int     `default:"100" json:"batch_size" help:"A write starts as soon as this many observations are queued, at most one every 0.25 s unless the queue is half full (a transaction takes every whole batch queued, so it grows under load)."`
		FlushInterval       Seconds `default:"30" json:"flush_interval" help:"Longest time, in seconds, that a queued observation waits before it is written."`
		QueueSize           int     `default:"65536" json:"queue_size" help:"Observations held in memory for the writer. When full, new observations are dropped and counted (ntpexp_store_rows_dropped_total); NTP is never slowed."`
		RollupRetentionDays int     `default:"400" json:"rollup_retention_days" help:"Days to keep hourly per-client rollups (raw rows follow performance.retention_days)."`
		AddressMode         string  `default:"full" enum:"full,truncate,hash" json:"address_mode" help:"How client addresses are stored: full, truncate (IPv4 /24, IPv6 /48) or hash (keyed, needs database.address-key-file)."`
		AddressKeyFile      string  `json:"address_key_file" help:"File holding the secret key for address-mode=hash."`
	} `embed:"" prefix:"database." json:"database" group:"Database"`
	Monitoring struct {
		NTPPort   int    `name:"ntp-port" default:"123" json:"ntp_port" help:"UDP port to serve NTP on, on all addresses (ignored when ntp.listen-address is set)."`
		LogLevel  string `default:"info" json:"log_level" help:"Log level: debug, info, warn or error (any case)."`
		LogFile   string `json:"log_file" help:"Write logs to this file instead of stderr; reopened on SIGHUP for logrotate."`
		LogFormat string `default:"logfmt" enum:"logfmt,json" json:"log_format" help:"Log format: logfmt or json."`
	} `embed:"" prefix:"monitoring." json:"monitoring" group:"Monitoring"`
	Performance struct {
		MaxCacheSize    int     `default:"10000" json:"max_cache_size" help:"Clients tracked in memory (rate limiting, exchange matching); the least recently seen is evicted when full."`
		CleanupInterval Seconds `default:"3600" json:"cleanup_interval" help:"Seconds between retention and database maintenance runs."`
		RetentionDays   int     `default:"30" json:"retention_days" help:"Days to keep raw observations."`
	} `embed:"" prefix:"performance." json:"performance" group:"Performance"`
	NTP struct {
		ListenAddress []string `json:"listen_address" help:"Address to serve NTP on, host:port (repeatable). ':123' means all IPv4 and IPv6 addresses. Overrides monitoring.ntp_port."`
		Readers       int      `default:"1" json:"readers" help:"Reading goroutines per address, each with its own SO_REUSEPORT socket."`
		ClockSync     string   `default:"kernel" enum:"kernel,assume-synchronized" json:"clock_sync" help:"kernel: advertise the kernel's view of the host clock (leap=alarm when unsynchronised); assume-synchronized: always advertise a synchronised clock (for hosts whose clock is kept outside the kernel's knowledge)."`
		Stratum       int      `default:"2" json:"stratum" help:"Stratum advertised while the host clock is synchronised (1-15): the host's own source's stratum plus one."`
		RefID         string   `name:"refid" default:"127.127.1.1" json:"refid" help:"Reference ID advertised: an IPv4 address (stratum 2+) or up to 4 ASCII characters (stratum 1, e.g. GPS)."`
		RateLimit     struct {
			Enabled  bool `default:"true" negatable:"" json:"enabled" help:"Per-client response rate limiting (chrony's algorithm). On by default; --ntp.ratelimit.enabled=false turns it off."`
			Interval int  `default:"3" json:"interval" help:"Minimum mean interval between responses to one address, as a power of 2 in seconds (-19 to 12; 3 = 8 s)."`
			Burst    int  `default:"8" json:"burst" help:"Responses allowed back to back (1-255)."`
			Leak     int  `default:"2" json:"leak" help:"One in 2^leak over-limit requests is still answered, so spoofed floods cannot cut a victim off (1-4)."`
			KoD      int  `name:"kod" default:"0" json:"kod" help:"Send a KoD RATE reply to one in 2^(kod-1) dropped requests (0 = never, 1 = all)."`
		} `embed:"" prefix:"ratelimit." json:"ratelimit"`
	} `embed:"" prefix:"ntp." json:"ntp" group:"NTP"`
	Capture struct {
		Interface    []string `json:"interface" help:"Passive mode: network interface to capture NTP traffic on (repeatable, or comma-separated). Both directions are read; the daemon's own upstream polls are ignored."`
		BufferSize   int      `default:"8388608" json:"buffer_size" help:"Passive mode: kernel capture buffer per interface, in bytes. Frames that do not fit are dropped by the kernel and counted (ntpexp_capture_kernel_drops_total)."`
		ReplyTimeout Seconds  `default:"1" json:"reply_timeout" help:"Passive mode: seconds a captured request waits for the daemon's reply before it is recorded as unanswered."`
		MaxPending   int      `default:"65536" json:"max_pending" help:"Passive mode: requests that may wait for their reply at once (about 420 bytes each); beyond it the oldest is recorded with drop reason capture_lost."`
		Mirror       bool     `default:"false" json:"mirror" help:"Passive mode: the interface is a mirror (SPAN) port, so also pair frames neither to nor from this host. Off: such frames (seen while something, e.g. tcpdump, has the interface promiscuous) are ignored and counted (ntpexp_passive_ignored_packets_total{kind=\"other_host\"})."`
	} `embed:"" prefix:"capture." json:"capture" group:"Capture (passive mode)"`
	Metrics struct {
		MaxClients int      `default:"256" json:"max_clients" help:"Clients with per-client series (the most recently active); 0 disables per-client series."`
		Watch      []string `json:"watch" help:"Addresses or CIDR prefixes whose clients always have per-client series (repeatable)."`
		// Off by default: about 1 µs of CPU per request (docs/performance.md)
		// for series a default Prometheus does not ingest.
		NativeHistograms bool `default:"false" json:"native_histograms" help:"Also keep the offset, delay and processing histograms as native histograms, for a Prometheus scraping them (scrape_native_histograms). Costs about 15% more CPU per request; the classic buckets the dashboards use are always exposed."`
	} `embed:"" prefix:"metrics." json:"metrics" group:"Metrics"`
	Web struct {
		ListenAddress []string `default:":10123" json:"listen_address" help:"Address for /metrics, the API and health checks (repeatable)."`
		ConfigFile    string   `name:"config.file" json:"config_file" help:"exporter-toolkit web configuration file for TLS and basic auth (as every Prometheus exporter's --web.config.file)."`
		TelemetryPath string   `default:"/metrics" json:"telemetry_path" help:"Path of the metrics endpoint."`
		MaxRequests   int      `default:"40" json:"max_requests" help:"Concurrent scrapes allowed; 0 means no limit."`
		Timeout       Seconds  `default:"30" json:"timeout" help:"Scrape timeout in seconds."`
		EnablePprof   bool     `name:"enable-pprof" json:"enable_pprof" help:"Serve Go's profiler under /debug/pprof/ (behind the same TLS and auth)."`
	} `embed:"" prefix:"web." json:"web" group:"Web"`
}

// Validate checks values that flags cannot express. Each error names the
// key, where its value came from (source), the value and what is allowed.
func (c *Config) Validate(source func(key string) string) error {
	var errs []string
	bad := func(key string, v any, allowed string) {
		errs = append(errs, fmt.Sprintf("%s = %v (%s): %s", key, v, source(key), allowed))
	}
	if c.Database.Path == "" {
		bad("database.path", `""`, "must name a file")
	}
	if c.Database.BatchSize < 1 || c.Database.BatchSize > sqlitestore.MaxBatchSize {
		bad("database.batch_size", c.Database.BatchSize, fmt.Sprintf("must be between 1 and %d", sqlitestore.MaxBatchSize))
	}
	if c.Database.FlushInterval.D() <= 0 {
		bad("database.flush_interval", c.Database.FlushInterval, "must be more than 0 seconds")
	}
	if c.Database.QueueSize < c.Database.BatchSize {
		bad("database.queue_size", c.Database.QueueSize, fmt.Sprintf("must be at least database.batch_size (%d)", c.Database.BatchSize))
	}
	if c.Database.RollupRetentionDays < 1 {
		bad("database.rollup_retention_days", c.Database.RollupRetentionDays, "must be at least 1")
	}
	if c.Database.AddressMode == "hash" && c.Database.AddressKeyFile == "" {
		bad("database.address_key_file", `""`, "must name a key file when database.address_mode is hash")
	}
	if c.Monitoring.NTPPort < 1 || c.Monitoring.NTPPort > 65535 {
		bad("monitoring.ntp_port", c.Monitoring.NTPPort, "must be a UDP port, 1-65535")
	}
	if _, err := parseLevel(c.Monitoring.LogLevel); err != nil {
		bad("monitoring.log_level", strconv.Quote(c.Monitoring.LogLevel), "must be debug, info, warn or error")
	}
	if c.Performance.MaxCacheSize < 1 || c.Performance.MaxCacheSize > 100_000_000 {
		bad("performance.max_cache_size", c.Performance.MaxCacheSize, "must be between 1 and 100000000")
	}
	if c.Performance.CleanupInterval.D() <= 0 {
		bad("performance.cleanup_interval", c.Performance.CleanupInterval, "must be more than 0 seconds")
	}
	if c.Performance.RetentionDays < 1 {
		bad("performance.retention_days", c.Performance.RetentionDays, "must be at least 1 day")
	}
	for _, a := range c.NTP.ListenAddress {
		if _, _, err := splitHostPort(a); err != nil {
			bad("ntp.listen_address", strconv.Quote(a), err.Error())
		}
	}
	if c.NTP.Readers < 1 || c.NTP.Readers > 64 {
		bad("ntp.readers", c.NTP.Readers, "must be between 1 and 64")
	}
	if c.NTP.Stratum < 1 || c.NTP.Stratum > 15 {
		bad("ntp.stratum", c.NTP.Stratum, "must be between 1 and 15")
	}
	if _, err := ntp.ParseRefID(c.NTP.RefID); err != nil {
		bad("ntp.refid", strconv.Quote(c.NTP.RefID), "must be an IPv4 address or 1-4 ASCII characters")
	}
	rl := c.NTP.RateLimit
	if rl.Interval < -19 || rl.Interval > 12 {
		bad("ntp.ratelimit.interval", rl.Interval, "must be between -19 and 12 (a power of 2 in seconds)")
	}
	if rl.Burst < 1 || rl.Burst > 255 {
		bad("ntp.ratelimit.burst", rl.Burst, "must be between 1 and 255")
	}
	if rl.Leak < 1 || rl.Leak > 4 {
		bad("ntp.ratelimit.leak", rl.Leak, "must be between 1 and 4")
	}
	if rl.KoD < 0 || rl.KoD > 8 {
		bad("ntp.ratelimit.kod", rl.KoD, "must be between 0 (off) and 8")
	}
	if c.Mode == "passive" && len(c.Capture.Interface) == 0 {
		bad("capture.interface", "[]", "must name the interface the daemon's clients reach it on (see 'ip link') when mode is passive")
	}
	for _, name := range c.Capture.Interface {
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t") {
			bad("capture.interface", strconv.Quote(name), "is not an interface name (see 'ip link')")
		}
	}
	if c.Capture.BufferSize < 65536 || c.Capture.BufferSize > 1<<30 {
		bad("capture.buffer_size", c.Capture.BufferSize, "must be between 65536 and 1073741824 bytes")
	}
	if d := c.Capture.ReplyTimeout.D(); d < 10*time.Millisecond || d > time.Minute {
		bad("capture.reply_timeout", c.Capture.ReplyTimeout, "must be between 0.01 and 60 seconds")
	}
	if c.Capture.MaxPending < 16 || c.Capture.MaxPending > 10_000_000 {
		bad("capture.max_pending", c.Capture.MaxPending, "must be between 16 and 10000000")
	}
	if c.Metrics.MaxClients < 0 || c.Metrics.MaxClients > 100_000 {
		bad("metrics.max_clients", c.Metrics.MaxClients, "must be between 0 and 100000")
	}
	if _, err := parseWatch(c.Metrics.Watch); err != nil {
		bad("metrics.watch", c.Metrics.Watch, err.Error())
	}
	if len(c.Web.ListenAddress) == 0 {
		bad("web.listen_address", "[]", "needs at least one address")
	}
	if !strings.HasPrefix(c.Web.TelemetryPath, "/") {
		bad("web.telemetry_path", strconv.Quote(c.Web.TelemetryPath), "must start with /")
	}
	if c.Web.MaxRequests < 0 {
		bad("web.max_requests", c.Web.MaxRequests, "must be 0 or more")
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// NTPListenAddresses returns ntp.listen_address, or ":<monitoring.ntp_port>".
func (c *Config) NTPListenAddresses() []string {
	if len(c.NTP.ListenAddress) > 0 {
		return c.NTP.ListenAddress
	}
	return []string{":" + strconv.Itoa(c.Monitoring.NTPPort)}
}

func splitHostPort(a string) (string, uint16, error) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return "", 0, errors.New("want host:port, e.g. :123 or 192.0.2.1:123")
	}
	host := strings.TrimSuffix(strings.TrimPrefix(a[:i], "["), "]")
	p, err := strconv.ParseUint(a[i+1:], 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("bad port %q", a[i+1:])
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", 0, fmt.Errorf("%q is not an IP address", host)
		}
	}
	return host, uint16(p), nil
}

func parseWatch(ws []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, w := range ws {
		if p, err := netip.ParsePrefix(w); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(w)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", w)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// configFile is a loaded JSON configuration file.
type configFile struct {
	path   string
	values map[string]any // dotted key with underscores → JSON value
}

// defaultConfigPaths are searched, in order, when --config is not given.
var defaultConfigPaths = []string{"/etc/ntpexp/config.json"}

// findConfigPath returns the --config value from args or NTPEXP_CONFIG,
// or the first default path that exists ("" if none).
func findConfigPath(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		if a == "--config" && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
	}
	if v := os.Getenv("NTPEXP_CONFIG"); v != "" {
		return v
	}
	for _, p := range defaultConfigPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func loadConfigFile(path string) (*configFile, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var top map[string]any
	if err := dec.Decode(&top); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line := 1 + bytes.Count(raw[:min(int(se.Offset), len(raw))], []byte("\n"))
			return nil, fmt.Errorf("config file %s: line %d: %v", path, line, err)
		}
		return nil, fmt.Errorf("config file %s: %v (want a JSON object like the shipped config.json)", path, err)
	}
	f := &configFile{path: path, values: map[string]any{}}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := prefix + strings.ReplaceAll(k, "-", "_")
			if sub, ok := v.(map[string]any); ok {
				walk(key+".", sub)
				continue
			}
			f.values[key] = v
		}
	}
	walk("", top)
	return f, nil
}

// fileKeyAliases maps config-file keys to flag names where the flag keeps
// a name that every Prometheus exporter uses.
var fileKeyAliases = map[string]string{"web.config_file": "web.config.file"}

func flagKey(name string) string {
	k := strings.ReplaceAll(name, "-", "_")
	for alias, flag := range fileKeyAliases {
		if k == flag {
			return alias
		}
	}
	return k
}

// resolver feeds file values to kong. Environment variables win over the
// file: kong has already applied them as defaults, so the resolver stays
// silent for a flag whose variable is set.
type resolver struct{ file *configFile }

// Validate refuses keys that name no setting, and values of the wrong type.
func (r resolver) Validate(app *kong.Application) error {
	flags := map[string]*kong.Flag{}
	var visit func(n *kong.Node)
	visit = func(n *kong.Node) {
		for _, f := range n.Flags {
			flags[flagKey(f.Name)] = f
		}
		for _, c := range n.Children {
			visit(c)
		}
	}
	visit(app.Node)
	var errs []string
	keys := make([]string, 0, len(r.file.values))
	for k := range r.file.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f, ok := flags[k]
		if !ok || !isSetting(k) {
			msg := fmt.Sprintf("unknown key %q", k)
			if s := suggest(k, flags); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			errs = append(errs, msg)
			continue
		}
		if err := checkType(f, r.file.values[k]); err != nil {
			errs = append(errs, fmt.Sprintf("key %q: %v", k, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("config file %s: %s; every key is listed in 'ntpexp --help' and docs/configuration.md", r.file.path, strings.Join(errs, "; "))
	}
	return nil
}

// topLevelSettings are the undotted flags that are also file keys.
var topLevelSettings = map[string]bool{"mode": true}

// isSetting: dotted keys are configuration, and the few top-level
// settings; other top-level flags such as --debug or --config are not
// file keys.
func isSetting(k string) bool { return strings.Contains(k, ".") || topLevelSettings[k] }

func (r resolver) Resolve(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	v, ok := r.file.values[flagKey(flag.Name)]
	if !ok || !isSetting(flagKey(flag.Name)) {
		return nil, nil
	}
	for _, env := range flag.Envs {
		if _, set := os.LookupEnv(env); set {
			return nil, nil
		}
	}
	switch x := v.(type) {
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ","), nil
	}
	return v, nil
}

func checkType(f *kong.Flag, v any) error {
	target := f.Target
	kind := target.Kind().String()
	switch target.Interface().(type) {
	case Seconds:
		switch x := v.(type) {
		case json.Number:
			if s, err := x.Float64(); err != nil || s < 0 || math.IsInf(s, 0) {
				return fmt.Errorf("want a number of seconds, got %s", x)
			}
			return nil
		case string:
			_, err := parseSeconds(x)
			return err
		}
		return fmt.Errorf("want a number of seconds, got %s", describe(v))
	}
	switch kind {
	case "int", "int64", "int32":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("want an integer, got %s", describe(v))
		}
		if _, err := n.Int64(); err != nil {
			return fmt.Errorf("want an integer, got %s", n)
		}
	case "bool":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("want true or false, got %s", describe(v))
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("want a string, got %s", describe(v))
		}
		if f.Enum != "" && !contains(strings.Split(f.Enum, ","), v.(string)) {
			return fmt.Errorf("%q is not one of %s", v, f.Enum)
		}
	case "slice":
		switch x := v.(type) {
		case string:
		case []any:
			for _, e := range x {
				if _, ok := e.(string); !ok {
					return fmt.Errorf("want a list of strings, got an element %s", describe(e))
				}
			}
		default:
			return fmt.Errorf("want a list of strings, got %s", describe(v))
		}
	}
	return nil
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return "the string " + strconv.Quote(x)
	case json.Number:
		return "the number " + x.String()
	case bool:
		return "the boolean " + strconv.FormatBool(x)
	case nil:
		return "null"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%v", v)
}

// suggest returns the known key closest to k, if it is close.
func suggest(k string, flags map[string]*kong.Flag) string {
	best, bestD := "", 4
	for name := range flags {
		if !isSetting(name) {
			continue
		}
		if d := editDistance(k, name); d < bestD {
			best, bestD = name, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sourceOf says where a setting's value came from: a flag on the command
// line, an environment variable, the config file, or the default.
func sourceOf(args []string, file *configFile) func(key string) string {
	return func(key string) string {
		flag := "--" + strings.ReplaceAll(key, "_", "-")
		for _, a := range args {
			if a == flag || strings.HasPrefix(a, flag+"=") || a == "--no-"+flag[2:] {
				return "from flag " + flag
			}
		}
		env := "NTPEXP_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
		if _, ok := os.LookupEnv(env); ok {
			return "from environment " + env
		}
		if file != nil {
			if _, ok := file.values[key]; ok {
				return "from config file " + file.path
			}
		}
		return "default"
	}
}
