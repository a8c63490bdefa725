package e2e

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// TestDiskFull puts the database on a small tmpfs and fills it: NTP keeps
// answering at full rate, write errors are counted in metrics and logged,
// nothing crashes, and writing resumes by itself when space returns.
func TestDiskFull(t *testing.T) {
	peers.RequireRoot(t, "mount a small tmpfs")
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	d := startDaemon(t, daemonOpts{Args: []string{"--ntp.ratelimit.enabled=false", "--database.path", filepath.Join(mnt, "ntpexp.db")}})
	d.DB = filepath.Join(mnt, "ntpexp.db")

	// Fill the file system, leaving the database nowhere to grow.
	filler := filepath.Join(mnt, "filler")
	exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=64k").Run()

	before := runLoad(t, d.NTPAddr, "-rate", "3000", "-duration", "4s", "-sources", "500", "-personality", "mix")
	if before.Replies < before.Sent*99/100 {
		t.Fatalf("NTP answers dropped while the disk is full: %d of %d", before.Replies, before.Sent)
	}
	m := d.metrics()
	errs := m["ntpexp_store_write_errors_total"]
	if errs == 0 {
		t.Fatalf("disk full but no store write errors counted; rows written %v", m["ntpexp_store_rows_written_total"])
	}
	if !strings.Contains(strings.ToLower(d.Proc.Output()), "full") {
		t.Errorf("the log does not say the disk is full:\n%s", tail(d.Proc.Output(), 20))
	}
	writtenFull := m["ntpexp_store_rows_written_total"]

	// Space returns: writing resumes without a restart.
	os.Remove(filler)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m = d.metrics()
		if m["ntpexp_store_queue_length"] == 0 && m["ntpexp_store_rows_written_total"] > writtenFull {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writing did not resume: written %v (was %v), queue %v", m["ntpexp_store_rows_written_total"], writtenFull, m["ntpexp_store_queue_length"])
		}
		time.Sleep(200 * time.Millisecond)
	}
	after := runLoad(t, d.NTPAddr, "-rate", "1000", "-duration", "1s", "-sources", "100")
	if exited, _ := d.Proc.Exited(); exited {
		t.Fatalf("ntpexp died:\n%s", d.Proc.Output())
	}
	d.stop()
	db := openDB(t, d.DB)
	rows := queryInt(t, db, "SELECT count(*) FROM observations")
	dropped := m["ntpexp_store_rows_dropped_total"]
	want := int64(before.Sent+after.Sent) - int64(dropped)
	if rows != want {
		t.Errorf("database holds %d rows; %d requests sent minus %v counted as dropped = %d", rows, before.Sent+after.Sent, dropped, want)
	}
	t.Logf("disk full: %d/%d answered at %.0f/s, %v write errors counted, %v rows dropped from the full queue; after space returned: %d rows stored, %d/%d answered",
		before.Replies, before.Sent, before.RepliesPerSec, errs, dropped, rows, after.Replies, after.Sent)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestLongExportWhileServing: an export of millions of rows runs while
// ntpexp serves; NTP answers and the store are unaffected.
func TestLongExportWhileServing(t *testing.T) {
	first := startDaemon(t, daemonOpts{Args: []string{"--ntp.ratelimit.enabled=false"}})
	runLoad(t, first.NTPAddr, "-rate", "5000", "-duration", "2s", "-sources", "2000", "-personality", "mix")
	first.stop()
	// Grow the table to millions of rows by copying the real ones.
	db, err := sql.Open("sqlite3", "file:"+first.DB+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	// Only this test's copy: no durability needed while filling.
	db.Exec("PRAGMA synchronous = OFF")
	db.Exec("PRAGMA cache_size = -200000")
	var cols []string
	rows, err := db.Query("SELECT name FROM pragma_table_info('observations') WHERE name != 'id'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c string
		rows.Scan(&c)
		cols = append(cols, c)
	}
	rows.Close()
	list := strings.Join(cols, ", ")
	for queryInt(t, db, "SELECT count(*) FROM observations") < 2_000_000 {
		if _, err := db.Exec("INSERT INTO observations (" + list + ") SELECT " + list + " FROM observations"); err != nil {
			t.Fatal(err)
		}
	}
	stored := queryInt(t, db, "SELECT count(*) FROM observations")
	db.Close()

	d := startDaemonOn(t, first, []string{"--ntp.ratelimit.enabled=false"})
	m0 := d.metrics()
	out := filepath.Join(t.TempDir(), "out.csv")
	exp := exec.Command(ntpexpBin, "export", "--format", "csv", "--database.path", d.DB, "-o", out)
	started := time.Now()
	if err := exp.Start(); err != nil {
		t.Fatal(err)
	}
	expDone, expStopped := make(chan error, 1), make(chan struct{})
	go func() { expDone <- exp.Wait() }()
	// The export's RSS, sampled while it runs (rusage's maxrss would
	// include this test process's, inherited at the fork).
	var peakRSS atomic.Int64
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", exp.Process.Pid)); err == nil {
				var kb int64
				if i := strings.Index(string(b), "VmRSS:"); i >= 0 {
					fmt.Sscan(string(b[i+len("VmRSS:"):]), &kb)
				}
				if kb<<10 > peakRSS.Load() {
					peakRSS.Store(kb << 10)
				}
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-expStopped:
				return
			}
		}
	}()
	during := runLoad(t, d.NTPAddr, "-rate", "5000", "-duration", "5s", "-sources", "1000", "-personality", "mix")
	// The export is still reading: the rows of the load must already be
	// in the database, but for the last flush interval and transaction
	// gap (1.25 s at 5,000/s), or the export stalled the writer.
	mid := d.metrics()
	select {
	case err := <-expDone:
		t.Fatalf("the export ended (%v) before the load did, after %v: it did not overlap the whole load", err, time.Since(started))
	default:
	}
	if w := mid["ntpexp_store_rows_written_total"] - m0["ntpexp_store_rows_written_total"]; w < float64(during.Sent)-1.5*5000 {
		t.Errorf("while the export ran, the store wrote %v rows of %d requests: the writer fell behind", w, during.Sent)
	}
	err = <-expDone
	close(expStopped)
	<-sampling
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	took := time.Since(started)
	// Memory stays flat whatever the size: the export's peak RSS (its
	// 64 MiB page cache and a little heap) is a small fraction of what it
	// wrote.
	st, _ := os.Stat(out)
	maxRSS := peakRSS.Load()
	if maxRSS == 0 || maxRSS > 128<<20 || maxRSS > st.Size()/4 {
		t.Errorf("export of %d MiB peaked at %d MiB RSS", st.Size()>>20, maxRSS>>20)
	}
	time.Sleep(1500 * time.Millisecond) // one flush interval
	m1 := d.metrics()
	if during.Replies != during.Sent {
		t.Errorf("NTP lost %d of %d replies during the export", during.Sent-during.Replies, during.Sent)
	}
	if dd := m1["ntpexp_store_rows_dropped_total"] - m0["ntpexp_store_rows_dropped_total"]; dd != 0 {
		t.Errorf("store dropped %v rows during the export", dd)
	}
	if m1["ntpexp_store_write_errors_total"] != m0["ntpexp_store_write_errors_total"] {
		t.Errorf("store write errors during the export")
	}
	if w := m1["ntpexp_store_rows_written_total"] - m0["ntpexp_store_rows_written_total"]; w < float64(during.Sent) {
		t.Errorf("store wrote %v rows during the export, %d requests were answered", w, during.Sent)
	}
	t.Logf("export of %d rows (%d MiB CSV, peak RSS %d MiB) took %v; meanwhile %d/%d NTP requests answered, %v rows written, 0 store drops",
		stored, st.Size()>>20, maxRSS>>20, took.Round(time.Millisecond), during.Replies, during.Sent, m1["ntpexp_store_rows_written_total"]-m0["ntpexp_store_rows_written_total"])
}
