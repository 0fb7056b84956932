// The other side's state, shown over its video: microphone off, camera off (then its
// initials instead of a black picture), screen shared. What the peer tells us over the
// control channel (peer-link.js, `state`); DOM only, no call logic. Each indicator has
// visible text, and the container is a polite live region so a screen reader hears
// "alice turned the microphone off" when it happens.

import { h, icon, initials } from './dom.js';

export class PeerStateView {
  #root;
  #avatar;
  #initials;
  #avatarText;
  #mic;
  #micText;
  #camera;
  #cameraText;
  #screen;
  #screenText;
  #peer = '';

  /** @param {HTMLElement} stage the element around the remote video (positioned) */
  constructor(stage) {
    this.#initials = h('span', { class: 'peer-initials', 'aria-hidden': 'true' });
    this.#avatarText = h('span', { class: 'peer-avatar-text' });
    this.#avatar = h('div', { id: 'peerAvatar', class: 'peer-avatar', hidden: true }, this.#initials, this.#avatarText);
    this.#micText = h('span');
    this.#mic = h('li', { id: 'peerMicOff', class: 'peer-badge', hidden: true }, icon('micOff'), this.#micText);
    this.#cameraText = h('span');
    this.#camera = h('li', { id: 'peerCameraOff', class: 'peer-badge', hidden: true }, icon('cameraOff'), this.#cameraText);
    this.#screenText = h('span');
    this.#screen = h('li', { id: 'peerScreen', class: 'peer-badge', hidden: true }, icon('screen'), this.#screenText);
    const badges = h('ul', { class: 'peer-badges', 'aria-label': 'The other side' }, this.#mic, this.#camera, this.#screen);
    this.#root = h('div', { id: 'peerState', class: 'peer-state', role: 'status', 'aria-live': 'polite', hidden: true }, this.#avatar, badges);
    // Over the remote video, under our self-view and the rest of the stage.
    const remote = stage.querySelector('#remoteVideo');
    if (remote) remote.after(this.#root);
    else stage.append(this.#root);
  }

  /** A new call with `peer`: nothing known about its state yet. */
  reset(peer) {
    this.#peer = peer ?? '';
    this.#initials.textContent = initials(this.#peer);
    this.show(null);
  }

  /**
   * @param {{micMuted: boolean, cameraOff: boolean, audio: boolean, video: boolean, screen: boolean} | null} s
   *   the peer's last `state`, or null (unknown: no call, or an older client)
   */
  show(s) {
    this.#root.hidden = s === null;
    if (s === null) return;
    const who = this.#peer;
    const noMic = s.micMuted || !s.audio;
    this.#mic.hidden = !noMic;
    this.#micText.textContent = s.audio ? `${who} muted the microphone` : `${who} has no microphone`;
    // Screen sharing replaces the camera picture: the camera state says nothing then.
    const noPicture = !s.screen && (s.cameraOff || !s.video);
    this.#camera.hidden = !noPicture;
    this.#cameraText.textContent = s.video ? `${who} turned the camera off` : `${who} has no camera`;
    this.#avatar.hidden = !noPicture;
    this.#avatarText.textContent = who;
    this.#screen.hidden = !s.screen;
    this.#screenText.textContent = `${who} is sharing the screen`;
  }
}
