package e2e

import (
	"os"
	"runtime"
	"testing"
)

// TestWriterProcessor: with its store on, serve runs with one Go processor
// more than the default (the CPUs, or the container's CPU limit), for the
// store's writer, which spends its time inside SQLite (cgo); with the store
// off it keeps the default, and a GOMAXPROCS in the environment wins.
func TestWriterProcessor(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Fatal("GOMAXPROCS is set in the test's environment: this test needs the default")
	}
	// The test binary runs with the same default as the daemon.
	base := float64(runtime.GOMAXPROCS(0))
	for _, tc := range []struct {
		name string
		opts daemonOpts
		want float64
	}{
		{"store on", daemonOpts{}, base + 1},
		{"store off", daemonOpts{Args: []string{"--database.enabled=false"}}, base},
		{"GOMAXPROCS set", daemonOpts{Env: []string{"GOMAXPROCS=1"}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, tc.opts)
			defer d.stop()
			if got := d.metrics()["go_sched_gomaxprocs_threads"]; got != tc.want {
				t.Errorf("go_sched_gomaxprocs_threads %g, want %g (default %g)", got, tc.want, base)
			}
		})
	}
}
