// Package loadtool measures dd from outside its process: it starts the Discord simulator and dd as
// separate processes (each in its own process group, killed when the run's context ends), receives the
// bot's events in the caller's process, and reads what each process did from the simulator's admin API,
// dd's /metrics and /status, and /proc (RSS, VmHWM, CPU time).
//
// The scenarios: RunFirehose (ingest, delivery, queue depth, memory and CPU per event under a
// firehose, and a check that every event arrived exactly once), RunShards (many shards: identify
// pacing against the limit, memory per shard, idle CPU, GET /status), RunMembers (whole member
// lists: cache reads while the chunks apply, time until every list is complete against the pace's
// minimum, memory, the store per member), RunREST (the rest role) and RunCluster (cluster mode: a NATS
// server with JetStream from nats-server's Go module, as a child process of its own, and several dd
// gateway processes sharing the shards; time to READY and the split, the SIGKILL of one process and the
// time until its shards are READY on the others, identifies spent, its restart and the rebalance, every
// event checked, memory and CPU of each process, NATS's too). cmd/ddload runs them from the command
// line; a Go test runs them with binaries it built (Build). A program that runs RunCluster calls
// natsproc.RunChild first in main: the run starts that program again as its NATS server.
//
// It is for figures and smoke tests on one machine, over loopback; it is not a test of correctness
// under faults (the e2e tests are) and not for production.
package loadtool
