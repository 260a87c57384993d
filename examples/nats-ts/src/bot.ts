// A bot that reads dd's event stream in cluster mode (PRODUCT.md §7) directly from NATS JetStream with
// the `nats` package, instead of receiving events over HTTP: the TypeScript twin of examples/nats-go.
//
//   npm ci && npm run build
//   node dist/bot.js --nats nats://127.0.0.1:4222 --name dd --durable my-bot --shards 16
//
// It prints each event as one line of JSON; put your bot's logic in handle(). SIGINT or SIGTERM stops it
// cleanly: the event in hand is given back, and the next run (the consumers are durable) goes on there.
//
// Order: each shard has a durable pull consumer of its own (filter <name>.events.<shard>.>) with
// max_ack_pending 1, so the server hands out a shard's next event only once the previous one is
// acknowledged. That keeps a shard in order across a crash or a lost acknowledgement: with more than one
// event outstanding, a redelivered event (after ack_wait) would come after later ones the server had
// already handed out. Shards are independent: one loop each. The cost is a round trip per event within a
// shard, far less than a Discord shard's rate needs.
//
// Copies: delivery is at least once. An event comes again when its acknowledgement was lost or late, and
// the stream may hold two copies of one Discord event when dd replayed it after the stream's duplicate
// window. Both carry the same Nats-Msg-Id (dd's X-DD-Event-Id); the copy comes soon after the original,
// so remembering the last ids handled per shard drops it. That memory is this process's: an event
// handled just before a crash, not yet acknowledged, is handled again by the next run, so a handler whose
// effects must not repeat keeps the last id it handled with them.

import { AckPolicy, connect, DeliverPolicy, nanos } from "nats";
import type { ConsumerMessages, JsMsg } from "nats";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

/** One dispatch read from the stream. */
export interface DDEvent {
  /** The Nats-Msg-Id: "<session id>-<sequence>", the same for every copy of one Discord event. */
  id: string;
  shard: number;
  /** The gateway payload's t, s and d. */
  type: string;
  seq: number;
  data: unknown;
}

/** The delivery envelope dd publishes: {"shardId":N,"payload":{"op":0,"t":...,"s":...,"d":...}}. */
interface Envelope {
  shardId: number;
  payload: { op: number; t: string; s: number; d: unknown };
}

// The bot: here it prints the event. It runs for one shard's events one at a time, in order; throwing
// makes the loop call it again with the same event.
async function handle(ev: DDEvent): Promise<void> {
  console.log(JSON.stringify(ev));
}

const { values: args } = parseArgs({
  options: {
    nats: { type: "string", default: process.env.NATS_URL ?? "nats://127.0.0.1:4222" },
    name: { type: "string", default: "dd" },
    durable: { type: "string", default: "bot" },
    shards: { type: "string", default: "1" },
    "ack-wait": { type: "string", default: "30000" },
  },
});
const name = args.name!;
const stream = name.toUpperCase() + "_EVENTS";
const shards = Number(args.shards);
const ackWaitMs = Number(args["ack-wait"]);

const nc = await connect({ servers: args.nats!.split(","), name: `dd example bot ${args.durable}`, maxReconnectAttempts: -1 });
const jsm = await nc.jetstreamManager();
const js = nc.jetstream();

let stopping = false;
const readers: ConsumerMessages[] = [];

/** recentIds remembers the last n ids added. */
class RecentIds {
  private ids = new Set<string>();
  private ring: string[] = [];
  private next = 0;
  constructor(private n: number) {}
  has(id: string): boolean {
    return this.ids.has(id);
  }
  add(id: string): void {
    if (this.ring.length === this.n) this.ids.delete(this.ring[this.next]);
    this.ring[this.next] = id;
    this.ids.add(id);
    this.next = (this.next + 1) % this.n;
  }
}

function decode(m: JsMsg): DDEvent {
  const id = m.headers?.get("Nats-Msg-Id") ?? "";
  const env = m.json<Envelope>();
  if (!id || typeof env.shardId !== "number") throw new Error("no Nats-Msg-Id header or no shardId in the body");
  return { id, shard: env.shardId, type: env.payload.t, seq: env.payload.s, data: env.payload.d };
}

async function readShard(shard: number, msgs: ConsumerMessages): Promise<void> {
  const seen = new RecentIds(1024);
  for await (const m of msgs) {
    if (stopping) {
      m.nak(); // the next run gets it first, without waiting for ack_wait
      continue;
    }
    let ev: DDEvent;
    try {
      ev = decode(m);
    } catch (err) {
      console.error(`${m.subject}: not a dd event, dropped for good: ${err}`);
      m.term();
      continue;
    }
    if (seen.has(ev.id)) {
      console.error(`copy of event ${ev.id} (shard ${shard} ${ev.type}) dropped`);
      await ack(m);
      continue;
    }
    for (;;) {
      try {
        await handle(ev);
        break;
      } catch (err) {
        if (stopping) {
          m.nak();
          return;
        }
        console.error(`event ${ev.id} (shard ${shard} ${ev.type}): ${err}; trying again`);
        m.working(); // keeps the server from handing the event out again meanwhile
        await sleep(1000);
      }
    }
    seen.add(ev.id);
    await ack(m);
  }
}

// ack waits for the server's confirmation: the shard's next event comes only after it anyway. A failed
// acknowledgement means the event comes again after ack_wait, and is dropped as a copy.
async function ack(m: JsMsg): Promise<void> {
  try {
    await m.ackAck({ timeout: 5000 });
  } catch (err) {
    console.error(`acknowledging ${m.headers?.get("Nats-Msg-Id")}: ${err}`);
  }
}

const loops: Promise<void>[] = [];
for (let shard = 0; shard < shards; shard++) {
  const durable = `${args.durable}-shard-${shard}`;
  await jsm.consumers.add(stream, {
    durable_name: durable,
    filter_subject: `${name}.events.${shard}.>`,
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(ackWaitMs),
    max_ack_pending: 1,
    // A new consumer starts at the stream's oldest event; DeliverPolicy.New would start at its end.
    deliver_policy: DeliverPolicy.All,
  });
  const consumer = await js.consumers.get(stream, durable);
  const msgs = await consumer.consume({ max_messages: 8 });
  readers.push(msgs);
  loops.push(readShard(shard, msgs));
}
console.error(`reading ${stream}: shards 0-${shards - 1} as ${args.durable}`);

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await Promise.all(readers.map((r) => r.close()));
  await Promise.all(loops);
  await nc.drain();
}
process.on("SIGINT", stop);
process.on("SIGTERM", stop);

const err = await nc.closed();
if (err) {
  console.error(`NATS connection closed: ${err}`);
  process.exit(1);
}
