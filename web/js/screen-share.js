// Screen sharing: getDisplayMedia's track takes the camera's place on the call's video
// sender (replaceTrack, no renegotiation), and the camera comes back when sharing
// stops (our Stop button, the browser's own "Stop sharing", the call or its connection
// ending). A call that sends no video (no camera) has no sender to carry it: the
// button then says so instead of sharing.

export class ScreenShare {
  #mediaDevices;
  #getVideoSender;
  #getCameraTrack;
  #onChange;
  #log;
  /** The shared screen's track, or null. */
  #track = null;
  /** The sender it went out on. */
  #sender = null;

  /**
   * @param {object} o
   * @param {MediaDevices} o.mediaDevices
   * @param {() => RTCRtpSender | null} o.getVideoSender the call's video sender that sends a track
   * @param {() => MediaStreamTrack | null} o.getCameraTrack our camera's current track
   * @param {(sharing: boolean, error?: string) => void} o.onChange
   */
  constructor({ mediaDevices, getVideoSender, getCameraTrack, onChange, log = () => {} }) {
    this.#mediaDevices = mediaDevices;
    this.#getVideoSender = getVideoSender;
    this.#getCameraTrack = getCameraTrack;
    this.#onChange = onChange;
    this.#log = log;
  }

  get supported() {
    return typeof this.#mediaDevices?.getDisplayMedia === 'function';
  }

  get sharing() {
    return this.#track !== null;
  }

  async toggle() {
    if (this.sharing) return this.stop();
    return this.start();
  }

  async start() {
    if (this.sharing) return;
    const sender = this.#getVideoSender();
    if (!sender) {
      this.#onChange(false, 'This call sends no video, so there is nothing to put the screen on.');
      return;
    }
    let display;
    try {
      display = await this.#mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (err) {
      // The user closed the picker: not an error worth more than a line.
      this.#onChange(false, err?.name === 'NotAllowedError' ? 'Screen sharing was not allowed.' : `Could not share the screen: ${err?.message || err}`);
      return;
    }
    const track = display.getVideoTracks()[0];
    if (!track) return;
    try {
      await sender.replaceTrack(track);
    } catch (err) {
      track.stop();
      this.#onChange(false, `Could not share the screen: ${err?.message || err}`);
      return;
    }
    this.#track = track;
    this.#sender = sender;
    track.addEventListener('ended', () => {
      if (this.#track === track) this.stop();
    });
    this.#onChange(true);
  }

  /** Stop sharing; the camera goes back on the sender (unless `restore` is false: the connection is gone). */
  async stop({ restore = true } = {}) {
    const track = this.#track;
    const sender = this.#sender;
    if (!track) return;
    this.#track = null;
    this.#sender = null;
    track.stop();
    if (restore && sender) {
      await sender.replaceTrack(this.#getCameraTrack()).catch((err) => this.#log('could not put the camera back', err));
    }
    this.#onChange(false);
  }
}
