// Files sent peer to peer over the call's file channel (peer-link.js, id 1), any size:
// read from disk a slice at a time and sent in CHUNK_BYTES chunks, waiting on
// `bufferedAmountLowThreshold` whenever more than HIGH_WATER_BYTES wait in the channel;
// received into a Blob a few MiB at a time (the browser may keep a large Blob on disk),
// so neither side ever holds the whole file in script memory. One file at a time per
// direction; more wait in a queue.
//
// On the channel (one ordered, reliable stream each way; text is JSON, binary is data):
//   {type:'file', id, name, size, mime}  a file follows: `size` bytes of binary chunks,
//   {type:'end', id}                     then this
//   {type:'received', id}                the receiver has it all (the sender says "Sent")
//   {type:'cancel', id}                  either side stops the transfer; chunks of a
//                                        cancelled file still on the way are dropped
// A transfer that the connection ends (hang-up, a re-join's new connection) is marked
// interrupted on both sides, never left looking as if it went on.

import { formatBytes, h } from './dom.js';

export const CHUNK_BYTES = 16 * 1024;
/** Read from the file this much at a time. */
export const READ_BYTES = 1024 * 1024;
/** Stop sending while this much is queued in the channel ... */
export const HIGH_WATER_BYTES = 1024 * 1024;
/** ... until it drains to this (bufferedAmountLowThreshold). */
export const LOW_WATER_BYTES = 256 * 1024;
/** The receiver folds its chunks into the Blob every this many bytes. */
export const FLUSH_BYTES = 4 * 1024 * 1024;
const MAX_NAME_CHARS = 255;

/** A header from the peer, checked; null when it is not one of ours. */
export function parseFileMessage(raw) {
  if (typeof raw !== 'string' || raw.length > 4096) return null;
  let m;
  try {
    m = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!m || typeof m !== 'object' || typeof m.id !== 'string' || m.id.length === 0 || m.id.length > 64) return null;
  switch (m.type) {
    case 'file':
      if (typeof m.name !== 'string' || !Number.isSafeInteger(m.size) || m.size < 0) return null;
      return {
        type: 'file',
        id: m.id,
        name: m.name.slice(0, MAX_NAME_CHARS) || 'file',
        size: m.size,
        mime: typeof m.mime === 'string' && m.mime.length < 200 ? m.mime : '',
      };
    case 'end':
    case 'received':
    case 'cancel':
      return { type: m.type, id: m.id };
    default:
      return null;
  }
}

function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** Resolves once the channel's queue drained below its threshold, or it closed. */
function drained(channel) {
  return new Promise((resolve) => {
    const done = () => {
      channel.removeEventListener('bufferedamountlow', done);
      channel.removeEventListener('close', done);
      resolve();
    };
    channel.addEventListener('bufferedamountlow', done);
    channel.addEventListener('close', done);
  });
}

/** One file in the list: its row in the panel and how far it got. */
class TransferRow {
  constructor(list, { id, name, size, incoming, onCancel }) {
    this.id = id;
    this.name = name;
    this.size = size;
    this.done = false;
    const verb = incoming ? 'Receiving' : 'Sending';
    this.progress = h('progress', { max: Math.max(size, 1), value: 0, 'aria-label': `${verb} ${name}` });
    this.status = h('span', { class: 'file-status', role: 'status' }, incoming ? 'Receiving…' : 'Waiting…');
    this.cancelBtn = h('button', { type: 'button', class: 'btn file-cancel', 'aria-label': `Cancel ${name}` }, 'Cancel');
    this.cancelBtn.addEventListener('click', onCancel);
    this.el = h('li', { class: `file-item ${incoming ? 'file-in' : 'file-out'}`, 'data-id': id },
      h('span', { class: 'file-name' }, `${incoming ? '⬇' : '⬆'} ${name} (${formatBytes(size)})`),
      this.progress,
      h('div', { class: 'file-row' }, this.status, this.cancelBtn));
    list.append(this.el);
  }

  setProgress(bytes) {
    this.progress.value = Math.min(bytes, this.size);
  }

  /** The end of the transfer: a status that stays, no Cancel. */
  finish(text, kind = 'info') {
    this.done = true;
    this.status.textContent = text;
    this.status.dataset.kind = kind;
    this.cancelBtn.remove();
  }
}

export class FileTransfers {
  /** The panel section (id filesPanel). */
  section;
  #list;
  #onActivity;
  #log;
  #peer = '';
  /** @type {RTCDataChannel | null} */
  #channel = null;
  /** Files waiting to be sent, then the one being sent: {row, file, cancelled}. */
  #queue = [];
  #sending = null;
  /** Files sent in full, waiting for the peer's `received`, by id. */
  #unconfirmed = new Map();
  /** The file being received: {row, parts, partBytes, blob, received, mime}, or null. */
  #incoming = null;
  /** Object URLs of received files, revoked when the list is cleared. */
  #urls = [];

  /** @param {{onActivity: () => void, log?: Function}} o onActivity: a transfer started (show the list) */
  constructor({ onActivity, log = () => {} }) {
    this.#onActivity = onActivity;
    this.#log = log;
    this.#list = h('ul', { id: 'fileList', class: 'file-list' });
    this.section = h('section', { id: 'filesPanel', class: 'panel-section', 'aria-labelledby': 'filesTitle', hidden: true },
      h('h2', { id: 'filesTitle' }, 'Files'), this.#list);
  }

  /** A new call: an empty list. */
  reset(peer) {
    this.#peer = peer ?? '';
    this.detach();
    for (const url of this.#urls) URL.revokeObjectURL(url);
    this.#urls = [];
    this.#list.replaceChildren();
  }

  /** The file channel of the call's (new) connection. */
  attach(channel) {
    this.detach();
    this.#channel = channel;
    channel.bufferedAmountLowThreshold = LOW_WATER_BYTES;
    channel.addEventListener('message', (event) => {
      if (this.#channel === channel) this.#onMessage(event.data);
    });
    channel.addEventListener('open', () => {
      if (this.#channel === channel) this.#pump();
    });
    channel.addEventListener('close', () => {
      if (this.#channel === channel) this.detach();
    });
  }

  /** The connection is gone: whatever was under way is interrupted. */
  detach() {
    this.#channel = null;
    const why = `Interrupted: the connection to ${this.#peer} closed.`;
    for (const t of this.#queue) if (!t.row.done) t.row.finish(why, 'error');
    this.#queue = [];
    if (this.#sending && !this.#sending.row.done) this.#sending.row.finish(why, 'error');
    this.#sending = null;
    for (const t of this.#unconfirmed.values()) if (!t.row.done) t.row.finish(why, 'error');
    this.#unconfirmed.clear();
    if (this.#incoming && !this.#incoming.row.done) this.#incoming.row.finish(why, 'error');
    this.#incoming = null;
  }

  /** Queue a file to send. */
  send(file) {
    const id = newId();
    const t = { file, cancelled: false, row: null };
    t.row = new TransferRow(this.#list, { id, name: file.name, size: file.size, incoming: false, onCancel: () => this.#cancelOutgoing(t, 'You cancelled it.') });
    this.#onActivity();
    if (!this.#channel) {
      t.row.finish(`Not sent: the connection to ${this.#peer} is not open.`, 'error');
      return;
    }
    this.#queue.push(t);
    this.#pump();
  }

  async #pump() {
    if (this.#sending) return;
    const channel = this.#channel;
    while (channel && channel === this.#channel && channel.readyState === 'open' && this.#queue.length > 0) {
      const t = this.#queue.shift();
      if (t.cancelled) continue;
      this.#sending = t;
      try {
        await this.#sendOne(channel, t);
      } catch (err) {
        if (!t.row.done) t.row.finish(`Failed: ${err?.message ?? err}`, 'error');
        this.#log('file send failed', err);
      }
      if (this.#sending === t) this.#sending = null;
    }
  }

  async #sendOne(channel, t) {
    const { file, row } = t;
    const live = () => !t.cancelled && channel === this.#channel && channel.readyState === 'open';
    channel.send(JSON.stringify({ type: 'file', id: row.id, name: file.name, size: file.size, mime: file.type }));
    row.status.textContent = 'Sending…';
    let offset = 0;
    while (offset < file.size) {
      const block = await file.slice(offset, Math.min(file.size, offset + READ_BYTES)).arrayBuffer();
      if (!live()) return;
      for (let at = 0; at < block.byteLength; at += CHUNK_BYTES) {
        if (channel.bufferedAmount > HIGH_WATER_BYTES) {
          await drained(channel);
          if (!live()) return;
          row.setProgress(offset + at - channel.bufferedAmount);
        }
        channel.send(new Uint8Array(block, at, Math.min(CHUNK_BYTES, block.byteLength - at)));
      }
      offset += block.byteLength;
      row.setProgress(offset - channel.bufferedAmount);
    }
    channel.send(JSON.stringify({ type: 'end', id: row.id }));
    row.status.textContent = `Waiting for ${this.#peer} to confirm…`;
    // The row finishes when `received` (or `cancel`) comes back.
    this.#unconfirmed.set(row.id, t);
  }

  #cancelOutgoing(t, text) {
    if (t.row.done) return;
    t.cancelled = true;
    t.row.finish(text, 'info');
    // Queued files the peer has not heard of need no message.
    if (this.#sending === t || this.#unconfirmed.delete(t.row.id)) this.#sendText({ type: 'cancel', id: t.row.id });
  }

  #cancelIncoming(text, { tell }) {
    const r = this.#incoming;
    if (!r || r.row.done) return;
    this.#incoming = null;
    r.row.finish(text, 'info');
    if (tell) this.#sendText({ type: 'cancel', id: r.row.id });
  }

  #sendText(message) {
    try {
      if (this.#channel?.readyState === 'open') this.#channel.send(JSON.stringify(message));
    } catch (err) {
      this.#log('could not send on the file channel', err);
    }
  }

  #onMessage(data) {
    if (typeof data !== 'string') return this.#onChunk(data);
    const m = parseFileMessage(data);
    if (!m) {
      this.#log('ignored a file channel message', data.slice(0, 80));
      return;
    }
    switch (m.type) {
      case 'file':
        return this.#onFile(m);
      case 'end':
        return this.#onEnd(m);
      case 'received': {
        const t = this.#unconfirmed.get(m.id);
        this.#unconfirmed.delete(m.id);
        if (t && !t.row.done) {
          t.row.setProgress(t.row.size);
          t.row.finish(`Sent to ${this.#peer}.`, 'ok');
        }
        return;
      }
      case 'cancel':
        if (this.#sending?.row.id === m.id) {
          const t = this.#sending;
          t.cancelled = true;
          t.row.finish(`${this.#peer} cancelled it.`, 'info');
          this.#sending = null;
          this.#pump();
        } else if (this.#unconfirmed.has(m.id)) {
          const t = this.#unconfirmed.get(m.id);
          this.#unconfirmed.delete(m.id);
          if (!t.row.done) t.row.finish(`${this.#peer} cancelled it.`, 'info');
        } else if (this.#incoming?.row.id === m.id) {
          this.#cancelIncoming(`${this.#peer} cancelled it.`, { tell: false });
        }
    }
  }

  #onFile(m) {
    if (this.#incoming) {
      // A new file before the end of the last: the last cannot be complete.
      this.#incoming.row.finish('Failed: the sender started another file before this one ended.', 'error');
    }
    const row = new TransferRow(this.#list, {
      id: m.id,
      name: m.name,
      size: m.size,
      incoming: true,
      onCancel: () => this.#cancelIncoming('You cancelled it.', { tell: true }),
    });
    this.#incoming = { row, parts: [], partBytes: 0, blob: new Blob([]), received: 0, mime: m.mime, shownPermille: -1 };
    this.#onActivity();
  }

  #onChunk(data) {
    const r = this.#incoming;
    // Chunks of a file we (or they) cancelled, still on the way: dropped.
    if (!r) return;
    const bytes = data instanceof ArrayBuffer ? data : null;
    if (!bytes) return;
    r.received += bytes.byteLength;
    if (r.received > r.row.size) {
      this.#incoming = null;
      r.row.finish('Failed: more data arrived than the file has.', 'error');
      this.#sendText({ type: 'cancel', id: r.row.id });
      return;
    }
    r.parts.push(bytes);
    r.partBytes += bytes.byteLength;
    if (r.partBytes >= FLUSH_BYTES) {
      r.blob = new Blob([r.blob, ...r.parts]);
      r.parts = [];
      r.partBytes = 0;
    }
    // The bar moves in steps of 1/1000: no DOM write per 16 KiB chunk.
    const permille = Math.floor((r.received * 1000) / Math.max(r.row.size, 1));
    if (permille !== r.shownPermille) {
      r.shownPermille = permille;
      r.row.setProgress(r.received);
    }
  }

  #onEnd(m) {
    const r = this.#incoming;
    if (!r || r.row.id !== m.id) return;
    this.#incoming = null;
    if (r.received !== r.row.size) {
      r.row.finish(`Failed: ${formatBytes(r.received)} of ${formatBytes(r.row.size)} arrived.`, 'error');
      return;
    }
    const blob = new Blob([r.blob, ...r.parts], { type: r.mime });
    const url = URL.createObjectURL(blob);
    this.#urls.push(url);
    r.row.setProgress(r.row.size);
    r.row.finish(`Received from ${this.#peer}.`, 'ok');
    r.row.el.append(h('a', { class: 'file-download', href: url, download: r.row.name }, `Save ${r.row.name}`));
    this.#sendText({ type: 'received', id: m.id });
  }
}
