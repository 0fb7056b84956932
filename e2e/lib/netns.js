// A network namespace for one test, joined to the test's own namespace by a veth pair,
// so a browser can run behind an address the test can change (a change of network).
// Only documentation-free private addresses inside namespaces the test made; the
// namespace is removed by remove(), which tests call in `after` and which also runs
// when the process exits.

import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHROMIUM } from './browser.js';

function ip(...args) {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export class NetNs {
  /**
   * @param {string} name namespace name (made unique with the process id)
   * @param {string} hostIf / nsIf names of the veth ends (outside / inside)
   */
  constructor(name) {
    this.name = `${name}-${process.pid}`;
    this.hostIf = `vh${process.pid % 100000}`;
    this.nsIf = 'vb0';
    this.dir = null;
    this.removed = false;
  }

  /** Make the namespace and the veth pair, both ends up; addresses are added by the caller. */
  create() {
    ip('netns', 'add', this.name);
    process.once('exit', () => this.remove());
    ip('link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf, 'netns', this.name);
    ip('link', 'set', this.hostIf, 'up');
    ip('-n', this.name, 'link', 'set', 'lo', 'up');
    ip('-n', this.name, 'link', 'set', this.nsIf, 'up');
    return this;
  }

  /** `ip addr add` on the outside end. */
  addHostAddress(cidr) {
    ip('addr', 'add', cidr, 'dev', this.hostIf);
  }

  /** `ip addr add` inside. */
  addAddress(cidr) {
    ip('-n', this.name, 'addr', 'add', cidr, 'dev', this.nsIf);
  }

  delAddress(cidr) {
    ip('-n', this.name, 'addr', 'del', cidr, 'dev', this.nsIf);
  }

  defaultRoute(via) {
    ip('-n', this.name, 'route', 'replace', 'default', 'via', via);
  }

  /** An executable that runs Chromium inside the namespace (for launchBrowser's executablePath). */
  chromiumWrapper() {
    this.dir ??= mkdtempSync(join(tmpdir(), 'duet-netns-'));
    const path = join(this.dir, 'chromium');
    writeFileSync(path, `#!/bin/sh\nexec ip netns exec '${this.name}' '${CHROMIUM}' "$@"\n`);
    chmodSync(path, 0o755);
    return path;
  }

  remove() {
    if (this.removed) return;
    this.removed = true;
    // Deleting the namespace takes its veth end, and the pair with it.
    try {
      ip('netns', 'del', this.name);
    } catch {
      // already gone
    }
    try {
      ip('link', 'del', this.hostIf);
    } catch {
      // went with the namespace
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
