package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ntpexp/ntpexp/sqlitestore"
	"golang.org/x/sys/unix"
)

// outputFlag is shared by the query commands.
type outputFlag struct {
	Output string `short:"O" default:"table" enum:"table,json" help:"Output format: table (aligned, for people) or json (for scripts; the same field names as export and the API)."`
}

// queryClock is the time the query commands measure their windows from:
// the wall clock, except in tests, which fix it so that output is stable.
var queryClock = time.Now

// openReader opens the configured database read-only. The anonymizer
// lets lookups by a real address find truncated or hashed rows.
func openReader(c *Config) (*sqlitestore.Reader, error) {
	if _, err := os.Stat(c.Database.Path); err != nil {
		return nil, fmt.Errorf("database %s: %w (point --database.path or --config at the database of a running or past 'ntpexp serve')", c.Database.Path, err)
	}
	r, err := sqlitestore.OpenReadOnly(c.Database.Path)
	if err != nil {
		return nil, err
	}
	r.SetClock(queryClock)
	sc, err := storeConfig(c)
	if err != nil {
		r.Close()
		return nil, err
	}
	if sc.AddressMode != sqlitestore.AddressFull {
		a, err := sqlitestore.NewAnonymizer(sc.AddressMode, []byte(sc.AddressKey))
		if err != nil {
			r.Close()
			return nil, usageError{err}
		}
		r.SetAnonymizer(a)
	}
	return r, nil
}

// checkHours checks a query window: whole hours from 1 to
// sqlitestore.MaxHours (export also takes 0, for everything retained).
func checkHours(h int, zeroOK bool) error {
	lo := 1
	if zeroOK {
		lo = 0
	}
	if h < lo || h > sqlitestore.MaxHours {
		return usageError{fmt.Errorf("--hours %d: must be a whole number of hours from %d to %d", h, lo, sqlitestore.MaxHours)}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ListCmd lists clients.
type ListCmd struct {
	Active bool `help:"Only clients seen within --hours."`
	Hours  int  `default:"24" help:"Window for --active, in hours."`
	Limit  int  `default:"0" help:"Show at most this many clients (0: all)."`
	outputFlag
}

func (l *ListCmd) Run(c *Config, e *env) error {
	if err := checkHours(l.Hours, false); err != nil {
		return err
	}
	r, err := openReader(c)
	if err != nil {
		return err
	}
	defer r.Close()
	rows, err := r.ListClients(context.Background(), sqlitestore.ListOptions{Active: l.Active, Hours: l.Hours, Limit: l.Limit})
	if err != nil {
		return err
	}
	if l.Output == "json" {
		if rows == nil {
			rows = []sqlitestore.ClientRow{}
		}
		return writeJSON(e.stdout, rows)
	}
	return sqlitestore.RenderClients(e.stdout, rows)
}

// DetailCmd shows one client.
type DetailCmd struct {
	IP     string `arg:"" help:"Client IP address."`
	Latest int    `default:"20" help:"How many of the latest observations to show."`
	Hours  int    `default:"48" help:"Hours of hourly history to show."`
	outputFlag
}

func (d *DetailCmd) Run(c *Config, e *env) error {
	ip, err := netip.ParseAddr(d.IP)
	if err != nil {
		return usageError{fmt.Errorf("%q is not an IP address", d.IP)}
	}
	if err := checkHours(d.Hours, false); err != nil {
		return err
	}
	if d.Latest < 1 || d.Latest > sqlitestore.MaxLatest {
		return usageError{fmt.Errorf("--latest %d: must be from 1 to %d", d.Latest, sqlitestore.MaxLatest)}
	}
	r, err := openReader(c)
	if err != nil {
		return err
	}
	defer r.Close()
	det, err := r.ClientDetail(context.Background(), ip.Unmap(), d.Latest, d.Hours)
	if errors.Is(err, sqlitestore.ErrNotFound) {
		return fmt.Errorf("client %s: not in the database (ntpexp list shows the clients it has)", ip)
	}
	if err != nil {
		return err
	}
	if d.Output == "json" {
		return writeJSON(e.stdout, det)
	}
	return sqlitestore.RenderClientDetail(e.stdout, det)
}

// StatsCmd summarises traffic.
type StatsCmd struct {
	Hours int `default:"24" help:"Window, in hours."`
	outputFlag
}

func (s *StatsCmd) Run(c *Config, e *env) error {
	if err := checkHours(s.Hours, false); err != nil {
		return err
	}
	r, err := openReader(c)
	if err != nil {
		return err
	}
	defer r.Close()
	st, err := r.Stats(context.Background(), s.Hours)
	if err != nil {
		return err
	}
	if s.Output == "json" {
		return writeJSON(e.stdout, st)
	}
	return sqlitestore.RenderStats(e.stdout, st)
}

// AnomaliesCmd finds clients beyond thresholds.
type AnomaliesCmd struct {
	DelayThreshold  float64 `default:"0.1" help:"Round-trip delay threshold, seconds (the old tool's default 0.1)."`
	OffsetThreshold float64 `default:"0.05" help:"|Clock offset| threshold, seconds (the old tool's default 0.05)."`
	Hours           int     `default:"24" help:"Window, in hours."`
	outputFlag
}

func (a *AnomaliesCmd) Run(c *Config, e *env) error {
	if err := checkHours(a.Hours, false); err != nil {
		return err
	}
	if a.DelayThreshold <= 0 || a.OffsetThreshold <= 0 {
		return usageError{errors.New("--delay-threshold and --offset-threshold must be more than 0 seconds")}
	}
	r, err := openReader(c)
	if err != nil {
		return err
	}
	defer r.Close()
	an, err := r.Anomalies(context.Background(), sqlitestore.AnomalyOptions{DelayThreshold: a.DelayThreshold, OffsetThreshold: a.OffsetThreshold, Hours: a.Hours})
	if err != nil {
		return err
	}
	if a.Output == "json" {
		return writeJSON(e.stdout, an)
	}
	return sqlitestore.RenderAnomalies(e.stdout, an)
}

// ExportCmd streams raw observations.
type ExportCmd struct {
	Hours    int    `default:"0" help:"Only the last N hours (0: every retained observation)."`
	ClientIP string `name:"client-ip" placeholder:"IP|CIDR" help:"Only this client address or prefix."`
	Format   string `default:"json" enum:"json,csv,ndjson" help:"json (one array), csv (with a header row) or ndjson (one object per line)."`
	Out      string `short:"o" placeholder:"FILE" help:"Write to FILE instead of standard output."`
}

func (x *ExportCmd) Run(c *Config, e *env) (err error) {
	if err := checkHours(x.Hours, true); err != nil {
		return err
	}
	var prefix netip.Prefix
	if x.ClientIP != "" {
		if prefix, err = sqlitestore.ParseClientFilter(x.ClientIP); err != nil {
			return usageError{fmt.Errorf("--client-ip %q: want an IP address or a CIDR prefix", x.ClientIP)}
		}
	}
	r, err := openReader(c)
	if err != nil {
		return err
	}
	defer r.Close()
	w := e.stdout
	if x.Out != "" {
		out, oerr := createOutput(x.Out)
		if oerr != nil {
			return oerr
		}
		// Removes the partial file unless committed.
		defer out.abort()
		w = out.f
		defer func() {
			if err == nil { // the function's result
				err = out.commit()
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var progress func(int64)
	if isTerminal(e.stderr) {
		last := time.Now()
		progress = func(n int64) {
			if time.Since(last) > 500*time.Millisecond {
				fmt.Fprintf(e.stderr, "\rexported %d rows", n)
				last = time.Now()
			}
		}
	}
	n, err := r.Export(ctx, sqlitestore.ExportOptions{Hours: x.Hours, Client: prefix, Format: x.Format}, w, progress)
	if progress != nil {
		fmt.Fprintf(e.stderr, "\rexported %d rows\n", n)
	}
	return err
}

// output is an export file that appears only when complete: rows go to
// a temporary file beside it (mode 0600, like the database they come
// from), renamed over the name at the end, so a failed or interrupted
// export leaves nothing half-written. A name that is not a regular file
// (a FIFO, /dev/stdout) is written directly.
type output struct {
	f         *os.File
	name, tmp string
	done      bool
}

func createOutput(name string) (*output, error) {
	// Through a symbolic link (even one whose target does not exist
	// yet): replace its target, not the link.
	for range 40 {
		st, err := os.Lstat(name)
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			break
		}
		to, err := os.Readlink(name)
		if err != nil {
			break
		}
		if !filepath.IsAbs(to) {
			to = filepath.Join(filepath.Dir(name), to)
		}
		name = to
	}
	if st, err := os.Stat(name); err == nil && !st.Mode().IsRegular() {
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		return &output{f: f, name: name}, nil
	}
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".part-*")
	if err != nil {
		return nil, fmt.Errorf("export to %s: %w (the directory must exist and be writable)", name, err)
	}
	return &output{f: f, name: name, tmp: f.Name()}, nil
}

func (o *output) commit() error {
	o.done = true
	if o.tmp == "" {
		return o.f.Close()
	}
	// On disk before it has the name: complete even after a power cut.
	err := o.f.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.tmp, o.name)
	}
	if err != nil {
		os.Remove(o.tmp)
		return fmt.Errorf("export to %s: %w", o.name, err)
	}
	return nil
}

func (o *output) abort() {
	if o.done {
		return
	}
	o.f.Close()
	if o.tmp != "" {
		os.Remove(o.tmp)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// DBCmd groups database maintenance.
type DBCmd struct {
	Backup BackupCmd `cmd:"" help:"Write a consistent copy of the database to FILE, also while serve is writing."`
	Vacuum VacuumCmd `cmd:"" help:"Compact the database now (VACUUM); serve does incremental vacuum on its own."`
}

// BackupCmd takes a consistent copy.
type BackupCmd struct {
	File string `arg:"" help:"Destination file (must not exist)."`
}

func (b *BackupCmd) Run(c *Config, e *env) error {
	if _, err := os.Stat(b.File); err == nil {
		return usageError{fmt.Errorf("%s already exists; choose a new file name", b.File)}
	}
	r, err := openReader(c)
	if err != nil {
		return err
	}
	defer r.Close()
	start := time.Now()
	if err := r.Backup(context.Background(), b.File); err != nil {
		return err
	}
	st, _ := os.Stat(b.File)
	fmt.Fprintf(e.stderr, "backup of %s written to %s (%d bytes, %s)\n", c.Database.Path, b.File, st.Size(), time.Since(start).Round(time.Millisecond))
	return nil
}

// VacuumCmd compacts the database.
type VacuumCmd struct{}

func (v *VacuumCmd) Run(c *Config, e *env) error {
	sc, err := storeConfig(c)
	if err != nil {
		return err
	}
	s, err := sqlitestore.Open(context.Background(), sc, e.logger)
	if errors.Is(err, sqlitestore.ErrInUse) {
		return fmt.Errorf("%w. While serve runs, it vacuums incrementally on its own; for a full VACUUM, stop it first", err)
	}
	if err != nil {
		return err
	}
	if err := s.Vacuum(context.Background()); err != nil {
		s.Close(context.Background())
		return err
	}
	return s.Close(context.Background())
}
