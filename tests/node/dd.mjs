// What the Node tests share: building and starting dd and the simulator, waiting, and the simulator's
// admin API. (Not a test file: `node --test` runs only *.test.mjs here.)
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// waitFor polls f (which may be async) every 50 ms until it returns something true, and returns that.
export async function waitFor(what, f, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// waitListening reads dd's JSON log until the listener of role shows, and returns its URL.
export function waitListening(proc, role) {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: proc.stderr });
    const timer = setTimeout(() => reject(new Error('dd did not start listening')), 20000);
    lines.on('line', (line) => {
      try {
        const e = JSON.parse(line);
        if (e.msg === 'listening' && e.role === role) {
          clearTimeout(timer);
          resolve(`http://${e.addr}`);
        }
      } catch {}
    });
    proc.on('exit', (code) => reject(new Error(`dd exited with ${code}`)));
  });
}

// build builds dd and the simulator into dir.
export function build(dir) {
  execFileSync('go', ['build', '-o', join(dir, 'dd'), '.'], { cwd: repo, stdio: 'inherit' });
  execFileSync('go', ['build', '-o', join(dir, 'discordsim'), './cmd/discordsim'], { cwd: repo, stdio: 'inherit' });
}

// spawnSim starts the simulator built by build with the bot token and args; simURL waits for its URL.
export function spawnSim(dir, token, args = []) {
  return spawn(join(dir, 'discordsim'), ['--url-file', join(dir, 'sim.url'), '--tokens', token, ...args],
    { stdio: ['ignore', 'ignore', 'inherit'] });
}

export function simURL(dir) {
  const urlFile = join(dir, 'sim.url');
  return waitFor('the simulator', () => existsSync(urlFile) && readFileSync(urlFile, 'utf8').trim());
}

// spawnDD starts dd (built by build) in dir with role and the DD_* variables of env, logging JSON to its
// stderr (waitListening reads it).
export function spawnDD(dir, role, env) {
  return spawn(join(dir, 'dd'), [`--role=${role}`], {
    cwd: dir,
    env: { ...process.env, ...env, DD_STORE__PATH: join(dir, 'data'), DD_LOG__FORMAT: 'json' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

// stop ends each process still running with SIGTERM and waits for its exit.
export async function stop(procs) {
  for (const p of procs) {
    if (p && p.exitCode === null) {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    }
  }
}

// admin calls the simulator's admin API at base and returns the JSON answer (none for a 204).
export async function admin(base, method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
  return res.status === 204 ? undefined : res.json();
}
