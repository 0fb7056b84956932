// What a cluster test needs besides duet: a real redis-server on a free loopback port, and
// a failover TCP proxy standing in for the load balancer in front of the nodes (each new
// connection goes to the first node that accepts it, as a balancer with health checks
// does once a node is dead).

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './server.js';

export class Redis {
  async start() {
    this.port = await freePort();
    this.dir = mkdtempSync(join(tmpdir(), 'duet-e2e-redis-'));
    this.proc = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning', '--dir', this.dir],
      { stdio: 'ignore' },
    );
    this.exited = new Promise((ok) => this.proc.once('exit', ok));
    const deadline = Date.now() + 10_000;
    for (;;) {
      const up = await new Promise((ok) => {
        const s = createConnection({ host: '127.0.0.1', port: this.port }, () => {
          s.end();
          ok(true);
        });
        s.on('error', () => ok(false));
      });
      if (up) return this;
      if (Date.now() > deadline) throw new Error('redis-server did not start within 10 s');
      await sleep(50);
    }
  }

  get url() {
    return `redis://127.0.0.1:${this.port}/`;
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      await this.exited;
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A TCP proxy on a free loopback port; each connection goes to the first of `targets` that accepts it. */
export class FailoverProxy {
  /** @param {number[]} targets ports on 127.0.0.1, in order of preference */
  constructor(targets) {
    this.targets = targets;
    this.sockets = new Set();
  }

  async start() {
    this.port = await freePort();
    this.server = createServer((client) => this.#connect(client, 0));
    await new Promise((ok) => this.server.listen(this.port, '127.0.0.1', ok));
    return this;
  }

  get baseUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  #connect(client, i) {
    if (i >= this.targets.length) {
      client.destroy();
      return;
    }
    client.pause();
    const upstream = createConnection({ host: '127.0.0.1', port: this.targets[i] });
    upstream.once('error', () => {
      if (!upstream.connected) this.#connect(client, i + 1);
      else client.destroy();
    });
    upstream.once('connect', () => {
      upstream.connected = true;
      this.sockets.add(client);
      this.sockets.add(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      // One side gone (a node killed): the other goes too, as a balancer's would.
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('close', close);
      upstream.on('close', close);
      client.on('error', close);
      upstream.on('error', close);
    });
  }

  async stop() {
    for (const s of this.sockets) s.destroy();
    await new Promise((ok) => this.server?.close(() => ok()) ?? ok());
  }
}
