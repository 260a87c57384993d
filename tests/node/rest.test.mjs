// Real Node Discord REST clients pointed at dd's rest role, nothing changed but the URL:
//   - Discordeno's @discordeno/rest in proxy mode (proxy: {baseUrl, authorization}): it sends /v10/...
//     with dd's secret replacing the token and keeps no rate limits of its own, so any 429 from dd would
//     be an error in the bot;
//   - discord.js's @discordjs/rest with its `api` option and the bot token.
// The test builds the real dd binary and the simulator (cmd/discordsim), starts both, and checks that the
// simulator answered no 429 at all.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRestManager } from '@discordeno/rest';
import { REST } from '@discordjs/rest';
import { admin as simAdmin, build, spawnDD, spawnSim, simURL as waitSimURL, stop, waitListening } from './dd.mjs';

const dir = mkdtempSync(join(tmpdir(), 'dd-node-'));
const secret = 'node-test-secret-0123456789';
const token = 'sim-token-for-node-tests';
let sim, dd, simURL, ddURL;

function admin(method, path, body) {
  return simAdmin(simURL, method, path, body);
}

async function simStats() {
  return admin('GET', '/_sim/rest/stats');
}

function assertNo429(st) {
  assert.equal(st.rate_limited_user + st.rate_limited_global + st.rate_limited_shared + st.banned_requests, 0,
    `the simulator answered 429s: ${JSON.stringify(st)}`);
}

// newChannels adds guilds to the simulator and returns their text channels' IDs.
async function newGuilds(n) {
  return (await admin('POST', `/_sim/gateway/guilds?n=${n}`)).map((g) => g.id);
}

before(async () => {
  build(dir);
  sim = spawnSim(dir, token);
  simURL = await waitSimURL(dir);
  dd = spawnDD(dir, 'rest', {
    DD_DISCORD__TOKEN: token,
    DD_DISCORD__API_URL: `${simURL}/api`,
    DD_REST__LISTEN: '127.0.0.1:0',
    DD_REST__SECRET: secret,
  });
  ddURL = await waitListening(dd, 'rest');
  // Message creates: 5 per second per channel instead of 5 per 5 s, so that bursts take seconds.
  await admin('POST', '/_sim/rest/limits', { route: 'POST /channels/{channel_id}/messages', limit: 5, window_ns: 1e9 });
});

after(async () => {
  await stop([dd, sim]);
  rmSync(dir, { recursive: true, force: true });
});

test('Discordeno in proxy mode sends through dd without a 429', async () => {
  // Discordeno derives the application ID from the token; in proxy mode the token itself is never sent.
  const rest = createRestManager({
    token: `${Buffer.from('4194304000').toString('base64')}.unused.unused`,
    proxy: { baseUrl: ddURL, authorization: secret },
  });
  const [guild] = await newGuilds(1);
  const channels = (await rest.getChannels(guild)).map((c) => c.id);
  assert.ok(channels.length >= 2, `channels: ${channels}`);
  const ch = channels[0];

  const m = await rest.sendMessage(ch, { content: 'hello from Discordeno' });
  assert.equal(m.content, 'hello from Discordeno');
  const edited = await rest.editMessage(ch, m.id, { content: 'edited' });
  assert.equal(edited.content, 'edited');
  await rest.addReaction(ch, m.id, '👍');
  const up = await rest.sendMessage(ch, {
    content: 'a file',
    files: [{ blob: new Blob([Buffer.alloc(2 << 20, 7)]), name: 'two-megabytes.bin' }],
  });
  assert.equal(up.attachments.length, 1);
  assert.equal(up.attachments[0].size, 2 << 20);

  // A burst: Discordeno keeps no limits in proxy mode, so this only works if dd keeps them all.
  const burst = [];
  for (let i = 0; i < 30; i++) {
    const c = channels[i % channels.length];
    burst.push(rest.sendMessage(c, { content: `burst ${i}` }).then((msg) => (i % 3 === 0 ? rest.addReaction(c, msg.id, '✅') : undefined)));
  }
  await Promise.all(burst);
  assertNo429(await simStats());
});

test('discord.js REST with the api option sends through dd without a 429', async () => {
  const rest = new REST({ api: `${ddURL}/api`, version: '10' }).setToken(token);
  const [guild] = await newGuilds(1);
  const channels = (await rest.get(`/guilds/${guild}/channels`)).map((c) => c.id);
  const ch = channels[0];

  const m = await rest.post(`/channels/${ch}/messages`, { body: { content: 'hello from discord.js' } });
  assert.equal(m.content, 'hello from discord.js');
  const edited = await rest.patch(`/channels/${ch}/messages/${m.id}`, { body: { content: 'edited' } });
  assert.equal(edited.content, 'edited');
  await rest.put(`/channels/${ch}/messages/${m.id}/reactions/${encodeURIComponent('👍')}/@me`);
  const up = await rest.post(`/channels/${ch}/messages`, {
    body: { content: 'a file' },
    files: [{ name: 'notes.txt', data: Buffer.from('line\n'.repeat(1000)) }],
  });
  assert.equal(up.attachments.length, 1);
  assert.equal(up.attachments[0].filename, 'notes.txt');

  const burst = [];
  for (let i = 0; i < 30; i++) {
    const c = channels[i % channels.length];
    burst.push(rest.post(`/channels/${c}/messages`, { body: { content: `burst ${i}` } }));
  }
  await Promise.all(burst);
  assertNo429(await simStats());
});

test('dd refuses a caller without the secret or the token', async () => {
  const res = await fetch(`${ddURL}/api/v10/users/@me`, { headers: { authorization: 'wrong' } });
  assert.equal(res.status, 401);
  const body = await res.json();
  assert.equal(body.code, 0);
  const tc = await fetch(`${ddURL}/timecheck`, { headers: { authorization: secret } });
  assert.equal(tc.status, 200);
  assert.ok(Math.abs((await tc.json()).message - Date.now()) < 5000);
});
