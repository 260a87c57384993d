// Package loadtool measures dd from outside its process: it starts the Discord simulator and dd as
// separate processes (each in its own process group, killed when the run's context ends), receives the
// bot's events in the caller's process, and reads what each process did from the simulator's admin API,
// dd's /metrics and /status, and /proc (RSS, VmHWM, CPU time).
//
// Three scenarios: RunFirehose (ingest, delivery, queue depth, memory and CPU per event under a
// firehose, and a check that every event arrived exactly once), RunShards (many shards: identify
// pacing against the limit, memory per shard, idle CPU, GET /status) and RunMembers (whole member
// lists: cache reads while the chunks apply, time until every list is complete against the pace's
// minimum, memory, the store per member). cmd/ddload runs them from the
// command line; a Go test runs them with binaries it built (Build).
//
// It is for figures and smoke tests on one machine, over loopback; it is not a test of correctness
// under faults (the e2e tests are) and not for production.
package loadtool
