// Package cluster is dd's footing on NATS JetStream for cluster mode (PRODUCT.md §7, issue #12): several
// dd processes of one bot, on several machines, coordinating through a NATS deployment instead of
// through coordination of dd's own making.
//
// It holds three things:
//
//   - [Connect]: one NATS connection per process (reconnecting forever) and the key-value buckets dd
//     uses, created idempotently and prefixed with the deployment's name (dd_leases, dd_sessions,
//     dd_identify, dd_target), replicated as configured (1 on a single server, 3 on a cluster).
//   - [Leaser] and [Lease]: a key held by at most one process at any instant, by compare-and-set on the
//     key's revision, renewed well inside its TTL, expiring at the server when its holder dies, and
//     given up by its holder (see [Lease.Done]) before the server could let anyone else take it, even
//     when the holder is cut off from NATS.
//   - [IdentifyLimiter]: a shard.IdentifyLimiter shared by every process of the bot through the KV: one
//     IDENTIFY per max_concurrency bucket per window, timed from the previous one's answer, and the daily
//     session_start_limit budget.
//
// It is not the wiring: nothing in dd builds a Conn yet (cluster.nats_url is not a config key). Shards
// leased across processes, sessions in the KV and events in a stream are built on this package in later
// steps; the rest of dd, on one machine, does not need it and does not import it.
//
// # Time
//
// dd processes do not share a clock, and this package never compares one process's clock with
// another's. A lease expires by NATS's per-message TTL, counted by the server from when it stored the
// holder's last write; the holder counts its own deadline from before it sent that write, on its own
// monotonic clock, minus a margin, so it stops first whatever its wall clock says. The identify limiter
// keeps its times on the server's clock (the timestamps JetStream puts on each write) and converts them
// with bounds measured around its own requests. What remains assumed: clocks run at nearly the same rate,
// and the servers of one NATS cluster agree within the margin (NTP).
package cluster
