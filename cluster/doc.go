// Package cluster is dd's footing on NATS JetStream for cluster mode (PRODUCT.md §7, issue #12): several
// dd processes of one bot, on several machines, coordinating through a NATS deployment instead of
// through coordination of dd's own making.
//
// It holds:
//
//   - [Connect]: one NATS connection per process (reconnecting forever) and the key-value buckets dd
//     uses, created idempotently and prefixed with the deployment's name (dd_leases, dd_sessions,
//     dd_identify, dd_target), replicated as configured (1 on a single server, 3 on a cluster).
//   - [Leaser] and [Lease]: a key held by at most one process at any instant, by compare-and-set on the
//     key's revision, renewed well inside its TTL, expiring at the server when its holder dies, and
//     given up by its holder (see [Lease.Done]) before the server could let anyone else take it, even
//     when the holder is cut off from NATS. [Election] builds a leader on one lease (the rest role).
//   - [IdentifyLimiter]: an identify.Limiter shared by every process of the bot through the KV: one
//     IDENTIFY per max_concurrency bucket per window, timed from the previous one's answer, and the daily
//     session_start_limit budget.
//   - [EventSink]: a shard.Sink that publishes every dispatch to the stream <NAME>_EVENTS (subject
//     <name>.events.<shard>.<EVENT_TYPE>, body the delivery envelope, Nats-Msg-Id "<session id>-<seq>"
//     so that a replay is dropped inside the stream's duplicate window, 2 minutes by default), returns
//     once the stream acknowledged the whole batch, and only then writes the session: the session in
//     the KV never runs ahead of the stream. A batch not acknowledged within AckTimeout fails, and the
//     shard resumes from the last session written.
//   - [SessionStore]: the sessions in the KV (key "<num_shards>.<shard>"), a shard.SessionLoader; its
//     writes are compare-and-set on the revision the process last saw, so a late write of a process
//     that lost the shard cannot replace the new owner's session. Beside each session, the shard's guild
//     ids ("<num_shards>.<shard>.guilds", written by the EventSink when they change), restored into the
//     event filter of the process that takes the shard over: it resumes, so no READY tells it its guilds.
//   - [ShardOwner]: this process's share of the shards, one lease per shard ("shard.<num>.<id>") and a
//     presence lease per process ("member.<instance>"): each process aims for ceil(shards / live
//     processes), takes free shards up to that, and hands extra ones over when a process below its share
//     joins (the algorithm is described in owner.go); or holds a fixed set. It tells a [ShardHost] which
//     shards to start and stop.
//   - [ShardRunner]: the ShardHost of a gateway process: a shard.Shard per held shard, resumed from the
//     KV's session, writing through the EventSink fenced by the shard's lease, stopped the instant the
//     lease ends (lost: another process may take it a margin later) and stopped resumably, its last
//     batch written, before a handover releases the lease.
//   - [Delivery]: the bot's events from the stream to events.urls, as one machine delivers them (the
//     envelope as stored, X-DD-Event-Id the Nats-Msg-Id, events.batch_max, acknowledged after the bot's
//     2xx): a durable consumer per shard ("dd-delivery-<shard>", AckAll, MaxAckPending = batch_max),
//     pulled only by the shard's owner, which gathers what a previous holder left out before anything
//     later (delivery.go says why and how).
//   - [Follow]: a cache process's own durable consumer of the whole stream ("dd-cache-<instance>"),
//     for --role=all and --role=cache in cluster mode ([FollowConnecting] for a process that only
//     follows).
//   - [AgreeShardCount]: one shard count for the deployment, in the target bucket.
//   - [Gateway.Reshard]: the zero-downtime reshard of the whole deployment (reshard.go describes the
//     steps): the record in the target bucket, a second ShardOwner on the new count whose shards are held
//     (reshardSink) until the old shards that share their guilds stopped, the old shards' events read
//     back from the stream into internal/eventmatch's multiset matcher, and Delivery's fence that keeps
//     a guild's events in order for the bot across the switch.
//   - [Gateway]: a gateway process of cluster mode assembled from the above (built from a
//     GatewayConfig; Run, Status, Ready, and Running for the shards it runs). What it needs from the
//     gateway package (fetching /gateway/bot, the shard-count check, a fixed shard range) it is given
//     as functions, so that this package stays below it.
//
// roles/cluster_gateway.go builds a Gateway from the config when cluster.nats_url is set and serves its
// HTTP API (GET /status shows the processes and each shard's owner; /readyz is 503 while NATS is
// unreachable or the process holds no connected shard) and POST /reshard. What remains: events.sink
// "redis" and cache.request_members in cluster mode; delivery putting back in place the one event the
// stream may store late (below: it is delivered where the stream holds it).
//
// # Order in the stream
//
// A shard's events enter the stream in Discord's order: a batch's publishes leave in order on one
// connection, a publish that finds no stream leader is not retried behind the others' backs (the batch
// fails and Discord replays it), and a takeover replays from the last session written, with copies
// dropped by id. One case remains: a publish lost while later ones of its batch land (a stream leader
// lost between them, on a cluster); the replay then stores the lost event after them. The event id
// carries the session and the sequence, so a consumer can put it back in place.
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
