// Starts the real duet binary for a test: on a free loopback port, waits for
// GET /healthz, and can be killed and restarted on the same port.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function duetBinary() {
  const bin = resolve(repoRoot, process.env.DUET_BIN || 'target/release/duet');
  if (!existsSync(bin)) {
    throw new Error(`duet binary not found at ${bin}; build it with 'cargo build --release' or set DUET_BIN`);
  }
  return bin;
}

/** A port nobody listens on right now (the kernel picks it, we release it). */
export async function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

export class DuetServer {
  /**
   * @param {{args?: string[], port?: number, dataDir?: string, host?: string, https?: boolean}} [options]
   *   extra duet flags; the address to listen on (default 127.0.0.1 and a free port);
   *   https: the args turn TLS on, so the base URL is https; `dataDir` defaults to a new
   *   temporary directory, kept across restart() (so resume tokens and held names
   *   survive it) and never shared with another server
   */
  constructor({ args = [], port, dataDir, host = '127.0.0.1', https = false } = {}) {
    this.args = args;
    this.port = port;
    /** The address to listen on: loopback, or one inside a namespace the test made. */
    this.host = host;
    this.https = https;
    // A test that passes its own --data-dir keeps it.
    this.ownsDataDir = !dataDir && !args.includes('--data-dir');
    this.dataDir = this.ownsDataDir ? mkdtempSync(join(tmpdir(), 'duet-e2e-')) : dataDir;
    this.proc = null;
    this.log = [];
  }

  get baseUrl() {
    return `${this.https ? 'https' : 'http'}://${this.host}:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    const args = ['--listen', `${this.host}:${this.port}`, '--rate-limit', '0', ...this.args];
    if (this.dataDir) args.push('--data-dir', this.dataDir);
    if (process.env.DUET_WEB_DIR) args.push('--web-dir', resolve(process.env.DUET_WEB_DIR));
    const proc = spawn(duetBinary(), args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    this.proc = proc;
    const keep = (chunk) => {
      this.log.push(chunk.toString());
      if (this.log.length > 2000) this.log.splice(0, 1000);
      if (process.env.E2E_SERVER_LOG) process.stderr.write(`[duet] ${chunk}`);
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    this.exited = new Promise((ok) => proc.once('exit', (code, signal) => ok({ code, signal })));
    await this.#waitHealthy(proc);
    return this;
  }

  async #waitHealthy(proc) {
    const deadline = Date.now() + 15_000;
    let lastError = null;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) {
        throw new Error(`duet exited with ${proc.exitCode} before it was healthy:\n${this.log.join('')}`);
      }
      try {
        const res = await fetch(`${this.baseUrl}/healthz`);
        if (res.status === 200) return;
        lastError = new Error(`/healthz answered ${res.status}`);
      } catch (err) {
        lastError = err;
      }
      await sleep(50);
    }
    throw new Error(`duet not healthy within 15 s: ${lastError}\n${this.log.join('')}`);
  }

  /** Kill the process (SIGKILL: an abrupt loss, as a crash would be). */
  async kill(signal = 'SIGKILL') {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    await this.exited;
  }

  /** Kill and start again on the same port. */
  async restart() {
    await this.kill();
    await this.start();
  }

  async stop() {
    await this.kill('SIGTERM');
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }
}
