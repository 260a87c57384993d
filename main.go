// Command dd runs the infrastructure of a large Discord bot: the REST proxy, the gateway shards with a
// durable event queue, and the cache, as one process (--role=all) or split (--role=rest|gateway|cache).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/internal/logging"
	"github.com/ddhq/dd/internal/memlimit"
	"github.com/ddhq/dd/roles"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `dd runs a Discord bot's infrastructure: REST proxy, gateway shards, cache.

Usage:
  dd [--role=rest|gateway|cache|all] [--config FILE] [--check-config]
  dd --version
  dd --help

Flags:
  --role ROLE      which part to run (default all)
  --config FILE    TOML config (default dd.toml in the working directory, when present)
  --check-config   validate the config, print it with secrets masked, exit 0 (valid) or 2
  --version        print the version
  --help           print this help

Every config key can be set from the environment: DD_ + the key path upper-cased, sections joined by
"__" (discord.token -> DD_DISCORD__TOKEN). Flags beat environment beat file beat defaults.
config.example.toml documents every key.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit, so tests can drive it.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	roleFlag := fs.String("role", "all", "")
	configFlag := fs.String("config", "", "")
	checkFlag := fs.Bool("check-config", false, "")
	versionFlag := fs.Bool("version", false, "")
	helpFlag := fs.Bool("help", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "dd: %v\n\n%s", err, usage)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dd: unexpected argument %q\n\n%s", fs.Arg(0), usage)
		return 2
	}
	if *helpFlag {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if *versionFlag {
		fmt.Fprintf(stdout, "dd %s\n", fullVersion())
		return 0
	}
	role, err := config.ParseRole(*roleFlag)
	if err != nil {
		fmt.Fprintf(stderr, "dd: %v\n", err)
		return 2
	}
	src := config.Source{File: "dd.toml", Role: role}
	if *configFlag != "" {
		src.File, src.FileRequired = *configFlag, true
	}
	cfg, err := config.Load(src)
	if err != nil {
		fmt.Fprintf(stderr, "dd: invalid configuration:\n%v\n", err)
		return 2
	}
	if *checkFlag {
		fmt.Fprintf(stdout, "# effective configuration for --role=%s (secrets masked)\n%s", role, cfg.Effective())
		return 0
	}

	log, err := logging.New(logging.Options{Level: cfg.Log.Level, Format: cfg.Log.Format, Secrets: cfg.Secrets(), Output: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "dd: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("starting", zap.String("version", fullVersion()), zap.String("role", string(role)))
	if floor := memoryLimit(role, cfg, os.Getenv); floor > 0 {
		go memlimit.Keep(ctx, floor, time.Second)
		log.Info("Go's soft memory limit is four fifths of store.memory_limit, or the runtime's other memory plus 1.5 times the live heap when that is more (GOMEMLIMIT overrides it)",
			zap.Int64("floor_bytes", floor))
	}
	err = roles.Run(ctx, roles.Options{Config: cfg, Role: role, Logger: log, Version: version})
	if err != nil {
		var fatal *roles.FatalError
		if errors.As(err, &fatal) {
			log.Error("fatal", zap.Error(fatal.Err), zap.String("what_to_do", fatal.Hint))
		} else {
			log.Error("fatal", zap.Error(err))
		}
		return 1
	}
	log.Info("stopped cleanly")
	return 0
}

// memoryLimit is the soft memory limit dd gives Go's runtime for a role that opens the store: four fifths
// of store.memory_limit, the budget Badger's worst case (all its table builders at their largest) is
// sized to. Under a firehose the heap is then collected before it doubles, and the collector works
// harder only while Badger nears its worst case (issue #9, ddload's firehose: peak RSS 396-683 -> 173-183
// MiB, CPU per event 0.90-1.35 of before with the new sizes, median 1.0). It is the limit's floor:
// memlimit.Keep raises the limit above a live heap that passes it (thousands of shards), so that the
// collector never runs all the time. It is 0, and the runtime's own setting stays, when GOMEMLIMIT is
// set or the role (rest) opens no store.
func memoryLimit(role config.Role, cfg *config.Config, getenv func(string) string) int64 {
	if getenv("GOMEMLIMIT") != "" || !role.Runs(config.RoleGateway) && !role.Runs(config.RoleCache) {
		return 0
	}
	return cfg.Store.MemoryLimit / 5 * 4
}

// fullVersion adds the VCS revision Go stamped into the binary, when there is one.
func fullVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return version + " (" + s.Value[:12] + ")"
		}
	}
	return version
}
