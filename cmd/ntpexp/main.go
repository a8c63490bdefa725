// Command ntpexp is an NTP server that watches its clients: it answers
// NTP requests from the host clock and records what every client reveals,
// for Prometheus and for a SQLite long-term store.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/alecthomas/kong"
	"github.com/go-kit/log"
	"github.com/ntpexp/ntpexp/sqlitestore"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure, or a start-up failure such as a busy port
	exitUsage   = 2 // bad arguments or configuration
)

// CLI is the command line. Every setting of Config is a global flag.
type CLI struct {
	ConfigFile string `name:"config" placeholder:"FILE" help:"JSON configuration file; the old tool's config.json works as is. Default: ${config_paths} if it exists. Also NTPEXP_CONFIG."`
	Debug      bool   `help:"Log at debug level (as the old tool's --debug)."`

	Settings Config `embed:""`

	Serve       ServeCmd       `cmd:"" default:"withargs" help:"Serve NTP and metrics, and record every client (the default command)."`
	List        ListCmd        `cmd:"" help:"List clients."`
	Detail      DetailCmd      `cmd:"" help:"Show one client: summary, latest observations and hourly history."`
	Stats       StatsCmd       `cmd:"" help:"Summarise traffic: requests, clients, versions, implementations, offsets and delays."`
	Anomalies   AnomaliesCmd   `cmd:"" help:"Find clients with large offsets or delays, rate-limited clients and clocks wrong by hours."`
	Export      ExportCmd      `cmd:"" help:"Export raw observations as JSON, CSV or NDJSON (streamed)."`
	DB          DBCmd          `cmd:"" name:"db" help:"Database maintenance: backup and vacuum."`
	CheckConfig CheckConfigCmd `cmd:"" name:"check-config" help:"Validate the configuration and print the effective one."`
	Version     VersionCmd     `cmd:"" help:"Print the version."`
}

// env is what commands get from main.
type env struct {
	args   []string
	file   *configFile
	stdout io.Writer
	stderr io.Writer
	logger log.Logger
	logw   *reopenWriter // nil when logging to stderr
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// usageError marks errors that exit with exitUsage.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func run(args []string, stdout, stderr io.Writer) int {
	var cli CLI
	var file *configFile
	path := findConfigPath(args)
	if path != "" {
		f, err := loadConfigFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "ntpexp: %v\n", err)
			return exitUsage
		}
		file = f
	}
	opts := []kong.Option{
		kong.Name("ntpexp"),
		kong.Description("An NTP server that watches its clients: it serves time from the host clock and records every client's version, poll, clock offset and network delay for Prometheus and a SQLite store."),
		kong.DefaultEnvars("NTPEXP"),
		kong.Vars{"config_paths": fmt.Sprint(defaultConfigPaths)},
		kong.Writers(stdout, stderr),
		kong.Exit(func(int) {}),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	}
	if file != nil {
		opts = append(opts, kong.Resolvers(resolver{file: file}))
	}
	parser, err := kong.New(&cli, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "ntpexp: internal error: %v\n", err)
		return exitFailure
	}
	if file != nil && !isHelp(args) {
		// Check the file first, so a typo or a wrong type is reported
		// against the file rather than as a flag error.
		if err := (resolver{file: file}).Validate(parser.Model); err != nil {
			fmt.Fprintf(stderr, "ntpexp: %v\n", err)
			return exitUsage
		}
	}
	ctx, err := parser.Parse(args)
	if isHelp(args) {
		return exitOK // kong printed the help
	}
	if err != nil {
		fmt.Fprintf(stderr, "ntpexp: %v\n", err)
		return exitUsage
	}
	if err := cli.Settings.Validate(sourceOf(args, file)); err != nil {
		fmt.Fprintf(stderr, "ntpexp: invalid configuration: %v\n", err)
		return exitUsage
	}
	e := &env{args: args, file: file, stdout: stdout, stderr: stderr}
	var out io.Writer = stderr
	if cli.Settings.Monitoring.LogFile != "" {
		w, err := openLogFile(cli.Settings.Monitoring.LogFile)
		if err != nil {
			fmt.Fprintf(stderr, "ntpexp: %v\n", err)
			return exitUsage
		}
		defer w.Close()
		e.logw, out = w, w
	}
	e.logger, err = newLogger(out, cli.Settings.Monitoring.LogFormat, cli.Settings.Monitoring.LogLevel, cli.Debug)
	if err != nil {
		fmt.Fprintf(stderr, "ntpexp: %v\n", err)
		return exitUsage
	}
	if err := ctx.Run(&cli.Settings, e); err != nil {
		fmt.Fprintf(stderr, "ntpexp: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) || errors.Is(err, sqlitestore.ErrInvalidArgument) {
			return exitUsage
		}
		return exitFailure
	}
	return exitOK
}

func isHelp(args []string) bool {
	for _, a := range args {
		if a == "--help" || a == "-h" {
			return true
		}
	}
	return false
}
