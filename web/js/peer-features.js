// What a call carries peer to peer besides its media: the other side's state, chat
// and files over the call's data channels (peer-link.js), and the local side's device
// choice and screen sharing. The controller (app.js) tells it what happens to the
// call; it owns the extra controls (#callExtras) and the side panel (#callPanel).
//
// Told by the controller:
//   callStarted(peer)   a call attempt with `peer` begins (also after glare)
//   connection(pc)      the attempt has a new RTCPeerConnection (its first, or a re-join's),
//                       before its first offer or answer
//   callEnded()         the attempt is over
//   localState(s)       our microphone/camera toggles changed ({micMuted, cameraOff})
//   localStream(stream) our camera/microphone stream (null: none)

import { Chat } from './chat.js';
import { Devices } from './devices.js';
import { h, icon } from './dom.js';
import { FileTransfers } from './file-transfer.js';
import { PeerLink } from './peer-link.js';
import { PeerStateView } from './peer-state.js';
import { ScreenShare } from './screen-share.js';

export class PeerFeatures {
  #doc;
  #log;
  #bar;
  #panel;
  #peerView;
  #chat;
  #chatBtn;
  #chatBadge;
  #files;
  #fileBtn;
  #devices;
  #screen;
  #screenBtn;
  #devicesBtn;
  #status;
  /** The current call's connection, or null outside a call. @type {RTCPeerConnection | null} */
  #pc = null;

  /** The data channels of the current connection, or null outside a call. */
  #link = null;
  #peer = null;
  #local = { micMuted: false, cameraOff: false };
  /** @type {MediaStream | null} */
  #stream = null;
  /** Local tracks' state shown to the peer beyond the toggles (screen-share.js sets `screen`). */
  #extraState = { screen: false };

  /**
   * @param {object} o
   * @param {Document} o.doc
   * @param {() => Promise<MediaStream | null>} [o.retryMedia] open the camera and microphone again (App.retryMedia)
   * @param {MediaDevices} [o.mediaDevices]
   * @param {(...args: unknown[]) => void} [o.log]
   */
  constructor({ doc = document, retryMedia = async () => null, mediaDevices = globalThis.navigator?.mediaDevices, log = () => {} } = {}) {
    this.#doc = doc;
    this.#log = log;
    const extras = doc.getElementById('callExtras');
    const panel = doc.getElementById('callPanel');
    const remote = doc.getElementById('remoteVideo');
    if (!extras || !panel || !remote?.parentElement) throw new Error('index.html lacks #callExtras, #callPanel or #remoteVideo');
    this.#peerView = new PeerStateView(remote.parentElement);

    this.#bar = h('div', { class: 'extras-bar', role: 'group', 'aria-label': 'More call controls' });
    this.#status = h('p', { id: 'extrasStatus', class: 'extras-status', role: 'status' });
    extras.append(this.#bar, this.#status);
    this.#panel = panel;
    panel.hidden = true;

    this.#chat = new Chat({
      send: (text) => this.#link?.send({ type: 'chat', text }) ?? false,
      isVisible: () => !this.#chat.section.hidden && !this.#panel.hidden && doc.visibilityState !== 'hidden',
      onUnread: (n) => this.#showUnread(n),
    });
    this.#chatBadge = h('span', { id: 'chatUnread', class: 'badge', 'aria-hidden': 'true', hidden: true });
    this.#chatBtn = this.#barButton('chatBtn', 'chat', 'Chat', () => this.#toggleSection(this.#chat.section, () => this.#chat.focus()));
    this.#chatBtn.append(this.#chatBadge);
    panel.append(this.#chat.section);

    this.#files = new FileTransfers({ onActivity: () => this.#openSection(this.#files.section), log });
    const fileInput = h('input', { id: 'fileInput', type: 'file', multiple: true, hidden: true, 'aria-hidden': 'true', tabindex: '-1' });
    fileInput.addEventListener('change', () => {
      for (const file of fileInput.files ?? []) this.#files.send(file);
      fileInput.value = '';
    });
    this.#fileBtn = this.#barButton('fileBtn', 'file', 'Send a file', () => fileInput.click());
    this.#bar.append(fileInput);
    panel.append(this.#files.section);

    this.#screen = new ScreenShare({
      mediaDevices,
      getVideoSender: () => this.#senders().find((s) => s.track?.kind === 'video' && s.track.readyState === 'live') ?? null,
      getCameraTrack: () => this.#stream?.getVideoTracks()[0] ?? null,
      onChange: (sharing, error) => this.#screenChanged(sharing, error),
      log,
    });
    this.#screenBtn = this.#barButton('screenBtn', 'screen', 'Share the screen', () => this.#screen.toggle());
    this.#screenBtn.setAttribute('aria-pressed', 'false');
    this.#screenBtn.hidden = !this.#screen.supported;

    this.#devices = new Devices({
      mediaDevices,
      getStream: () => this.#stream,
      getSenders: () => this.#senders(),
      retry: retryMedia,
      output: remote,
      log,
    });
    this.#devicesBtn = this.#barButton('devicesBtn', 'devices', 'Devices', () => this.#toggleSection(this.#devices.section, () => this.#devices.refresh()));
    this.#chatBtn.setAttribute('aria-controls', 'chatPanel');
    this.#devicesBtn.setAttribute('aria-controls', 'devicesPanel');
    panel.append(this.#devices.section);
    this.#showCallButtons(false);
    this.#refreshPanel();
    doc.addEventListener('visibilitychange', () => {
      if (this.#sectionShown(this.#chat.section)) this.#chat.markRead();
    });
  }

  callStarted(peer) {
    this.#detach();
    this.#peer = peer;
    this.#peerView.reset(peer);
    this.#chat.reset(peer);
    this.#files.reset(peer);
    this.#showCallButtons(false);
  }

  /** @param {RTCPeerConnection} pc */
  connection(pc) {
    this.#detach();
    this.#pc = pc;
    const link = new PeerLink(pc, this.#log);
    this.#link = link;
    this.#files.attach(link.file);
    link.addEventListener('open', () => {
      this.#showCallButtons(true);
      this.#chat.setReady(true);
      this.#sendState();
    });
    link.addEventListener('close', () => {
      this.#chat.setReady(false);
      this.#peerView.show(null);
    });
    link.addEventListener('message', (e) => this.#onMessage(e.detail));
  }

  callEnded() {
    this.#detach();
    this.#peer = null;
    this.#peerView.show(null);
    this.#showCallButtons(false);
    // The files stay listed (received ones not yet saved), until the next call starts.
    this.#chat.section.hidden = true;
    this.#refreshPanel();
  }

  localState({ micMuted, cameraOff }) {
    this.#local = { micMuted, cameraOff };
    this.#sendState();
  }

  localStream(stream) {
    this.#stream = stream;
    this.#devices.streamChanged(stream);
    this.#sendState();
  }

  /** For tests and debugging (window.duet.state.features). */
  get debugState() {
    return Object.freeze({ linkOpen: this.#link?.open ?? false, sharingScreen: this.#screen.sharing });
  }

  #detach() {
    this.#link?.close();
    this.#link = null;
    this.#chat.setReady(false);
    this.#files.detach();
    // The shared screen was on the old connection's sender; the new one sends the camera.
    this.#screen.stop({ restore: false });
    this.#pc = null;
  }

  #senders() {
    return this.#pc && this.#pc.connectionState !== 'closed' ? this.#pc.getSenders() : [];
  }

  /** Chat, files and screen need a call with an open channel; devices work any time. */
  #showCallButtons(inCall) {
    for (const id of ['chatBtn', 'fileBtn']) this.#bar.querySelector(`#${id}`).hidden = !inCall;
    this.#screenBtn.hidden = !inCall || !this.#screen.supported;
  }

  #screenChanged(sharing, error) {
    this.#extraState.screen = sharing;
    this.#screenBtn.setAttribute('aria-pressed', String(sharing));
    const label = sharing ? 'Stop sharing the screen' : 'Share the screen';
    this.#screenBtn.setAttribute('aria-label', label);
    this.#screenBtn.title = label;
    this.#status.textContent = error ?? (sharing ? 'You are sharing your screen.' : '');
    this.#status.dataset.kind = error ? 'error' : 'info';
    this.#sendState();
  }

  #sendState() {
    const s = this.#stream;
    this.#link?.send({
      type: 'state',
      micMuted: this.#local.micMuted,
      cameraOff: this.#local.cameraOff,
      audio: !!s?.getAudioTracks().length,
      video: !!s?.getVideoTracks().length,
      screen: this.#extraState.screen,
    });
  }

  #onMessage(m) {
    switch (m.type) {
      case 'state':
        this.#peerView.show(m);
        return;
      case 'chat':
        this.#chat.received(m.text);
        return;
    }
  }

  #showUnread(n) {
    this.#chatBadge.hidden = n === 0;
    this.#chatBadge.textContent = String(n);
    this.#chatBtn.setAttribute('aria-label', n === 0 ? 'Chat' : `Chat, ${n} unread`);
  }

  #barButton(id, iconName, label, onClick) {
    const button = h('button', { id, type: 'button', class: 'btn btn-icon', 'aria-label': label, title: label }, icon(iconName));
    button.addEventListener('click', onClick);
    this.#bar.append(button);
    return button;
  }

  #sectionShown(section) {
    return !section.hidden && !this.#panel.hidden;
  }

  /** Show a panel section (or hide it if shown); the panel is shown while any section is. */
  #toggleSection(section, then = () => {}) {
    const show = !this.#sectionShown(section);
    section.hidden = !show;
    this.#refreshPanel();
    if (show) then();
  }

  #openSection(section) {
    section.hidden = false;
    this.#refreshPanel();
  }

  #refreshPanel() {
    const sections = [...this.#panel.querySelectorAll('.panel-section')];
    this.#panel.hidden = !sections.some((s) => !s.hidden);
    this.#chatBtn.setAttribute('aria-expanded', String(this.#sectionShown(this.#chat.section)));
    this.#devicesBtn.setAttribute('aria-expanded', String(this.#sectionShown(this.#devices.section)));
    if (this.#sectionShown(this.#chat.section)) this.#chat.markRead();
  }
}
