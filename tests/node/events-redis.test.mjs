// A discord.js bot reading dd's events from Redis Streams with the real @discordjs/brokers
// (PubSubRedisBroker over ioredis), nothing of dd's own on the bot's side: dd runs with
// events.sink = "redis", the bot subscribes to the event names (after events.redis_prefix) and must get
// every event of a firehose once, with Discord's payload as discord.js reads it (data.payload.d...).
// The test builds the real dd binary and the simulator, and runs a redis-server on a free port; it is
// skipped when redis-server is not installed (.ci/run installs it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { PubSubRedisBroker } from '@discordjs/brokers';
import { Redis } from 'ioredis';
import { admin as simAdmin, build, spawnDD, spawnSim, simURL as waitSimURL, stop, waitFor, waitListening } from './dd.mjs';

const dir = mkdtempSync(join(tmpdir(), 'dd-node-redis-'));
const token = 'sim-token-for-node-redis-tests';
const prefix = 'gw:';
const password = 'node-redis-password-0123';
let redisBin = null;
try {
  redisBin = execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim() || null;
} catch {}
const skip = redisBin ? false : 'redis-server is not installed (apt-get install redis-server; .ci/run does it)';
let sim, dd, redisServer, simURL, ddURL, redisPort;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function admin(method, path, body) {
  return simAdmin(simURL, method, path, body);
}

function newRedis() {
  const r = new Redis({ host: '127.0.0.1', port: redisPort, password, maxRetriesPerRequest: null });
  r.on('error', () => {}); // reconnects are ioredis's business; a test failure says what went wrong
  return r;
}

before(async () => {
  if (skip) return;
  redisPort = await freePort();
  redisServer = spawn(redisBin, ['--port', String(redisPort), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', 'no', '--requirepass', password], { stdio: 'ignore' });
  const probe = newRedis();
  await waitFor('redis-server', async () => (await probe.ping().catch(() => null)) === 'PONG', 30000);
  probe.disconnect();
  build(dir);
  sim = spawnSim(dir, token, ['--guilds', '6']);
  simURL = await waitSimURL(dir);
});

after(async () => {
  await stop([dd, sim, redisServer]);
  rmSync(dir, { recursive: true, force: true });
});

test('a discord.js PubSubRedisBroker gets every event dd puts in Redis, as Discord sent it', { skip }, async () => {
  const events = ['READY', 'GUILD_CREATE', 'MESSAGE_CREATE', 'MESSAGE_UPDATE', 'RESUMED'];
  const got = new Map(); // shard -> seq -> count
  const ids = new Set();
  const problems = [];
  let messages = 0;
  // The bot: subscribed before dd starts, as a bot deployed first would be.
  const broker = new PubSubRedisBroker(newRedis(), { group: 'bot', name: 'bot-1' });
  broker.on('error', (e) => problems.push(`broker: ${e}`));
  for (const ev of events) {
    broker.on(prefix + ev, async ({ data, ack }) => {
      const { shardId, payload, eventId } = data;
      if (typeof shardId !== 'number' || typeof eventId !== 'string' || payload?.op !== 0 || payload.t !== ev ||
          typeof payload.s !== 'number' || typeof payload.d !== 'object') {
        problems.push(`${ev}: not the envelope: ${JSON.stringify(data).slice(0, 200)}`);
      }
      if (ev === 'MESSAGE_CREATE') {
        messages++;
        const d = payload.d;
        if (typeof d.id !== 'string' || typeof d.channel_id !== 'string' || typeof d.content !== 'string' ||
            typeof d.author?.id !== 'string' || typeof d.tts !== 'boolean') {
          problems.push(`MESSAGE_CREATE d is not Discord's message: ${JSON.stringify(d).slice(0, 300)}`);
        }
      }
      if (ids.has(eventId)) problems.push(`event ${eventId} twice`);
      ids.add(eventId);
      if (!got.has(shardId)) got.set(shardId, new Map());
      const seqs = got.get(shardId);
      seqs.set(payload.s, (seqs.get(payload.s) ?? 0) + 1);
      await ack();
    });
  }
  await broker.subscribe(events.map((e) => prefix + e));

  dd = spawnDD(dir, 'gateway', {
    DD_DISCORD__TOKEN: token,
    DD_DISCORD__API_URL: `${simURL}/api`,
    DD_GATEWAY__LISTEN: '127.0.0.1:0',
    DD_GATEWAY__TOTAL_SHARDS: '2',
    DD_GATEWAY__DEDUP_MESSAGE_UPDATES: 'false',
    DD_EVENTS__SINK: 'redis',
    DD_EVENTS__REDIS_URL: `redis://:${password}@127.0.0.1:${redisPort}/0`,
    DD_EVENTS__REDIS_PREFIX: prefix,
  });
  ddURL = await waitListening(dd, 'gateway');
  await waitFor('dd ready', async () => (await fetch(`${ddURL}/readyz`)).status === 200, 30000);
  // Only what the default intents (Guilds, GuildMessages) let through, so that every event is counted.
  await admin('POST', '/_sim/gateway/firehose', { rate: 2000, total: 3000, message_create: 3, message_update: 1 });

  let last = '';
  await waitFor('every event at the bot', async () => {
    const sessions = await admin('GET', '/_sim/gateway/sessions');
    if (sessions.length !== 2) return false;
    const sent = sessions.reduce((n, s) => n + s.seq, 0);
    if (sent < 3000) return false; // the firehose is still going
    for (const s of sessions) {
      for (let seq = 1; seq <= s.seq; seq++) {
        if (!got.get(s.shard)?.has(seq)) {
          last = `shard ${s.shard} seq ${seq} of ${s.seq}`;
          return false;
        }
      }
    }
    return true;
  }, 60000).catch((e) => { throw new Error(`${e.message}: missing ${last}`); });

  for (const [shard, seqs] of got) {
    for (const [seq, n] of seqs) {
      assert.equal(n, 1, `shard ${shard} seq ${seq} arrived ${n} times`);
    }
  }
  assert.deepEqual(problems, []);
  assert.ok(messages > 1000, `only ${messages} MESSAGE_CREATE`);
  // Every entry was acknowledged by the bot's group: nothing pending.
  const check = newRedis();
  for (const ev of events) {
    const [pending] = await check.xpending(prefix + ev, 'bot');
    assert.equal(pending, 0, `${prefix + ev}: ${pending} entries pending`);
  }
  check.disconnect();
  await broker.destroy();
});
