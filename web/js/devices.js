// Camera, microphone and speaker choice. A camera or microphone picked mid-call goes
// to the peer with RTCRtpSender.replaceTrack (no renegotiation: same kind, same
// transceiver), and takes the old track's place in the local stream in place, so the
// self-view, the mute/camera toggles and the next call all use it. The speaker is the
// remote video's output (setSinkId, where the browser has it). "Try again" asks for the
// camera and microphone anew after permission was refused or a device was missing.

import { h } from './dom.js';

const KINDS = Object.freeze({
  videoinput: { kind: 'video', label: 'Camera', id: 'cameraSelect' },
  audioinput: { kind: 'audio', label: 'Microphone', id: 'micSelect' },
  audiooutput: { kind: 'output', label: 'Speaker', id: 'speakerSelect' },
});

export class Devices {
  /** The panel section (id devicesPanel). */
  section;
  #mediaDevices;
  #getStream;
  #getSenders;
  #retry;
  #output;
  #log;
  #selects = {};
  #status;
  #retryBtn;

  /**
   * @param {object} o
   * @param {MediaDevices} o.mediaDevices
   * @param {() => MediaStream | null} o.getStream our camera/microphone stream
   * @param {() => RTCRtpSender[]} o.getSenders the current call's senders (none outside a call)
   * @param {() => Promise<MediaStream | null>} o.retry open the camera and microphone again
   * @param {HTMLMediaElement} o.output where the peer's sound plays
   */
  constructor({ mediaDevices, getStream, getSenders, retry, output, log = () => {} }) {
    this.#mediaDevices = mediaDevices;
    this.#getStream = getStream;
    this.#getSenders = getSenders;
    this.#retry = retry;
    this.#output = output;
    this.#log = log;
    const form = h('form', { class: 'device-form' });
    form.addEventListener('submit', (e) => e.preventDefault());
    for (const [deviceKind, { label, id }] of Object.entries(KINDS)) {
      const select = h('select', { id });
      select.addEventListener('change', () => this.#picked(deviceKind, select.value));
      this.#selects[deviceKind] = select;
      const row = h('div', { class: 'device-row' }, h('label', { for: id }, label), ' ', select);
      if (deviceKind === 'audiooutput' && typeof output?.setSinkId !== 'function') row.hidden = true;
      form.append(row);
    }
    this.#status = h('p', { id: 'deviceStatus', class: 'device-status', role: 'status' });
    this.#retryBtn = h('button', { id: 'mediaRetryBtn', type: 'button', class: 'btn', hidden: true }, 'Try again');
    this.#retryBtn.addEventListener('click', () => this.retry());
    this.section = h('section', { id: 'devicesPanel', class: 'panel-section', 'aria-labelledby': 'devicesTitle', hidden: true },
      h('h2', { id: 'devicesTitle' }, 'Devices'), form, this.#status, this.#retryBtn);
    mediaDevices?.addEventListener?.('devicechange', () => this.refresh());
  }

  /** The local stream changed (opened, or missing a kind): offer "Try again" while something is missing. */
  streamChanged(stream) {
    const missing = !stream?.getVideoTracks().length || !stream?.getAudioTracks().length;
    this.#retryBtn.hidden = !missing;
    if (missing) this.#say(stream ? 'A camera or microphone is missing.' : 'No camera or microphone.', 'error');
    else this.#say('Camera and microphone are on.', 'ok');
    this.refresh();
  }

  /** Fill the lists from enumerateDevices, the ones in use selected. */
  async refresh() {
    if (!this.#mediaDevices?.enumerateDevices) return;
    let devices;
    try {
      devices = await this.#mediaDevices.enumerateDevices();
    } catch (err) {
      this.#log('enumerateDevices failed', err);
      return;
    }
    const stream = this.#getStream();
    const inUse = {
      videoinput: stream?.getVideoTracks()[0]?.getSettings().deviceId,
      audioinput: stream?.getAudioTracks()[0]?.getSettings().deviceId,
      audiooutput: this.#output?.sinkId || 'default',
    };
    for (const [deviceKind, select] of Object.entries(this.#selects)) {
      const options = devices
        .filter((d) => d.kind === deviceKind && d.deviceId)
        .map((d, i) => h('option', { value: d.deviceId }, d.label || `${KINDS[deviceKind].label} ${i + 1}`));
      if (options.length === 0) options.push(h('option', { value: '' }, `No ${KINDS[deviceKind].label.toLowerCase()} found`));
      select.replaceChildren(...options);
      select.disabled = options.length < 2 && deviceKind !== 'audiooutput';
      if (inUse[deviceKind] && options.some((o) => o.value === inUse[deviceKind])) select.value = inUse[deviceKind];
    }
  }

  /** Ask for the camera and microphone again. */
  async retry() {
    this.#say('Asking for the camera and microphone…', 'info');
    const stream = await this.#retry();
    const missing = !stream?.getVideoTracks().length || !stream?.getAudioTracks().length;
    if (!missing) this.#say('Camera and microphone are on.', 'ok');
    // Into a call that is going on: tracks of kinds it already sends.
    for (const track of stream?.getTracks() ?? []) {
      const sender = this.#getSenders().find((s) => s.track?.kind === track.kind);
      if (sender) await sender.replaceTrack(track).catch((err) => this.#log('replaceTrack failed', err));
    }
  }

  async #picked(deviceKind, deviceId) {
    if (!deviceId) return;
    if (deviceKind === 'audiooutput') return this.#setSpeaker(deviceId);
    const { kind, label } = KINDS[deviceKind];
    const stream = this.#getStream();
    if (!stream) return this.retry();
    const old = stream.getTracks().find((t) => t.kind === kind) ?? null;
    let fresh;
    try {
      fresh = await this.#open(kind, deviceId, old);
    } catch (err) {
      this.#say(`Could not switch the ${label.toLowerCase()}: ${err?.message || err?.name || err}`, 'error');
      this.refresh();
      return;
    }
    if (old) fresh.enabled = old.enabled;
    // The sender carrying the old track (not one carrying a shared screen) gets the new one.
    for (const sender of this.#getSenders()) {
      if (old && sender.track === old) await sender.replaceTrack(fresh);
    }
    if (old) {
      stream.removeTrack(old);
      old.stop();
    }
    stream.addTrack(fresh);
    this.#say(`${label}: ${fresh.label}`, 'ok');
  }

  /** A track from `deviceId`; if the device cannot be opened twice, the old track is stopped first. */
  async #open(kind, deviceId, old) {
    const constraints = { [kind]: { deviceId: { exact: deviceId } } };
    try {
      return (await this.#mediaDevices.getUserMedia(constraints)).getTracks()[0];
    } catch (err) {
      if (err?.name !== 'NotReadableError' || !old) throw err;
      old.stop();
      return (await this.#mediaDevices.getUserMedia(constraints)).getTracks()[0];
    }
  }

  async #setSpeaker(deviceId) {
    try {
      await this.#output.setSinkId(deviceId);
      this.#say(`Speaker: ${this.#selects.audiooutput.selectedOptions[0]?.textContent ?? deviceId}`, 'ok');
    } catch (err) {
      this.#say(`Could not switch the speaker: ${err?.message || err}`, 'error');
    }
  }

  #say(text, kind) {
    this.#status.textContent = text;
    this.#status.dataset.kind = kind;
  }
}
