// Package gateway is dd's event pipeline from Discord to the queue: it runs a bot's shards as a shard
// set (a shard.Manager, the filter that knows each shard's guilds, and the set's sink into the queue),
// stores each shard's session and guild list with its events, and reshards without downtime.
//
// A reshard connects a new set beside the running one. The new set holds its events in memory while
// the old one keeps delivering; once every new shard is ready with its guilds and the old set has read
// as far as the new one, the switch hands delivery over in one step: a queue fence, then the new set's
// held events less those the old set already handled. Nothing is lost or repeated, and each guild's
// events stay in order for every consumer of the queue. If the new set fails, it is dropped and the old
// one, which never stopped, stays. The count a reshard moved to is stored, so a restart runs it.
//
// What it needs from outside is small: a Queue (append, fence), a Store for its keys, a function that
// fetches /gateway/bot, and optionally an identify.Limiter and a Coordinator (the processes of a split
// deployment agree on one count). An embedder runs and reshards shards with New, Run and Reshard;
// NewHandler is its HTTP API; dd's gateway role adds delivery and the cache feed around it (package roles).
//
// It is not one connection's state machine (package shard), the durable log (package queue) or
// delivery out of it (package delivery).
package gateway
