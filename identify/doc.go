// Package identify paces a bot's IDENTIFYs: one per max_concurrency bucket (shard_id % max_concurrency)
// per window, and never past the daily session-start budget, however many shards, shard sets or processes
// identify at once.
//
// A shard asks a [Limiter] for its [Turn] before it connects. The implementations are interchangeable:
//
//   - [Local]: in one process (and the pacing behind a [Queue]);
//   - [Remote]: asks a shared [Queue] over HTTP, so that several gateway processes of one bot identify no
//     faster than one would (the rest role serves it as a [Server], which learns the limits from
//     /gateway/bot when first asked);
//   - [Noop]: grants every turn at once, for embedders that pace identifies themselves or run against a
//     simulator;
//   - cluster.IdentifyLimiter (package cluster): shared through NATS in cluster mode.
//
// It is not the shard's state machine (package shard decides when to identify or resume), nor Discord's
// REST limits (package ratelimit), nor the gateway's per-connection send limit (package shard). It does
// not fetch the limits itself: a caller reads /gateway/bot (shard.FetchGatewayBot) and hands the
// [SessionStartLimit] in (to a [Server], the function that reads it).
package identify
