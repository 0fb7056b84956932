// One RTCPeerConnection for one call: create it, run the offer/answer exchange
// (every step awaited), feed it remote ICE candidates (queued until the remote
// description is set), toggle the local tracks, and close it. It does not talk
// to the server itself: the caller passes `sendCandidate` and sends the
// descriptions this class returns.
//
// Events:
//   'remotestream' detail: MediaStream  remote media to show
//   'connected'                         ICE/DTLS up (first time, and again after a blip)
//   'icefailed'                         ICE could not find a path between the peers, or
//                                       gathering ended with no local candidate at all
//                                       (e.g. relay-only with no TURN server: Chrome then
//                                       stays in 'new' forever instead of 'failed')
//   'statechange'  detail: { connectionState, iceConnectionState }

import { CandidateQueue } from './candidate-queue.js';

/**
 * The DTLS certificate fingerprint of a session description (`a=fingerprint:`),
 * lower-cased, or null. Each RTCPeerConnection has its own certificate, so the
 * fingerprint tells one of the peer's connections from another: an ICE restart
 * or a renegotiation keeps it, a new connection (the peer reloaded) changes it.
 */
export function fingerprintOf(description) {
  const sdp = typeof description?.sdp === 'string' ? description.sdp : '';
  const found = /^a=fingerprint:(\S+ \S+)/m.exec(sdp);
  return found ? found[1].toLowerCase() : null;
}

export class PeerCall extends EventTarget {
  /** @type {RTCPeerConnection} */
  pc;
  #queue;
  #closed = false;
  #remoteStream = null;
  #looseTracks = null;
  #tracksAdded = false;
  /** Local candidates gathered; none at the end of gathering means no path. */
  #localCandidates = 0;

  /**
   * @param {object} options
   * @param {RTCIceServer[]} options.iceServers from the server's login reply
   * @param {boolean} [options.relayOnly] force TURN (`?relay=1`)
   * @param {(candidate: RTCIceCandidateInit) => void} options.sendCandidate
   * @param {(message: string) => void} [options.log]
   */
  constructor({ iceServers, relayOnly = false, sendCandidate, log = () => {} }) {
    super();
    const config = { iceServers: Array.isArray(iceServers) ? iceServers : [] };
    if (relayOnly) config.iceTransportPolicy = 'relay';
    this.pc = new RTCPeerConnection(config);
    this.#queue = new CandidateQueue((c) => this.pc.addIceCandidate(c), {
      onError: (err) => log(`ignored a remote ICE candidate: ${err?.message ?? err}`),
    });

    this.pc.addEventListener('icecandidate', (event) => {
      // A null candidate marks the end of gathering; the peer does not need it.
      if (event.candidate && !this.#closed) {
        this.#localCandidates += 1;
        sendCandidate(event.candidate.toJSON());
      }
    });
    this.pc.addEventListener('icegatheringstatechange', () => {
      if (!this.#closed && this.pc.iceGatheringState === 'complete' && this.#localCandidates === 0) {
        this.dispatchEvent(new Event('icefailed'));
      }
    });
    this.pc.addEventListener('track', (event) => {
      let stream = event.streams[0];
      if (!stream) {
        // A sender without a stream (not ours, but be lenient): collect its tracks.
        this.#looseTracks ??= new MediaStream();
        this.#looseTracks.addTrack(event.track);
        stream = this.#looseTracks;
      }
      if (stream !== this.#remoteStream) {
        this.#remoteStream = stream;
        this.dispatchEvent(new CustomEvent('remotestream', { detail: stream }));
      }
    });
    const onState = () => {
      if (this.#closed) return;
      const { connectionState, iceConnectionState } = this.pc;
      this.dispatchEvent(new CustomEvent('statechange', { detail: { connectionState, iceConnectionState } }));
      if (iceConnectionState === 'failed' || connectionState === 'failed') {
        this.dispatchEvent(new Event('icefailed'));
      } else if (connectionState === 'connected') {
        this.dispatchEvent(new Event('connected'));
      }
    };
    this.pc.addEventListener('connectionstatechange', onState);
    this.pc.addEventListener('iceconnectionstatechange', onState);
  }

  get closed() {
    return this.#closed;
  }

  /**
   * Caller side: add our media (or receive-only slots) and make the offer.
   * @param {MediaStream | null} localStream null: receive only
   */
  async makeOffer(localStream) {
    this.#addLocalTracks(localStream, { receiveOnlyForMissing: true });
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    return this.pc.localDescription.toJSON();
  }

  /**
   * Callee side (and renegotiation on either side): apply the peer's offer,
   * add our media the first time, and return our answer.
   * @param {RTCSessionDescriptionInit} offer
   * @param {MediaStream | null} [localStream] sent from the first answer on; null: receive only
   */
  async acceptOffer(offer, localStream = null) {
    await this.pc.setRemoteDescription(offer);
    await this.#queue.open();
    // After the remote offer, addTrack reuses the transceivers it created.
    // Kinds we have no track for stay recvonly in the answer.
    this.#addLocalTracks(localStream, { receiveOnlyForMissing: false });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    return this.pc.localDescription.toJSON();
  }

  /**
   * An ICE restart within the call: new ICE credentials, so both sides gather
   * and check paths again (after a change of network). Returns the offer.
   */
  async makeRestartOffer() {
    this.pc.restartIce();
    const offer = await this.pc.createOffer({ iceRestart: true });
    await this.pc.setLocalDescription(offer);
    return this.pc.localDescription.toJSON();
  }

  /** The fingerprint of the peer's connection we are talking to, or null before its first description. */
  get remoteFingerprint() {
    return fingerprintOf(this.pc.currentRemoteDescription ?? this.pc.remoteDescription);
  }

  /** Our offer waits for its answer. */
  get offerPending() {
    return this.pc.signalingState === 'have-local-offer';
  }

  /** ICE has a working path (again). */
  get pathUp() {
    return ['connected', 'completed'].includes(this.pc.iceConnectionState);
  }

  /** Caller side: the callee accepted. */
  async applyAnswer(answer) {
    await this.pc.setRemoteDescription(answer);
    await this.#queue.open();
  }

  /** A remote ICE candidate: added now, or queued until a remote description is set. */
  async addRemoteCandidate(candidate) {
    if (this.#closed || !candidate) return;
    await this.#queue.add(candidate);
  }

  /** Number of remote candidates still waiting for the remote description. */
  get queuedCandidates() {
    return this.#queue.size;
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.clear();
    try {
      this.pc.close();
    } catch {
      // already closed
    }
  }

  #addLocalTracks(localStream, { receiveOnlyForMissing }) {
    if (this.#tracksAdded) return;
    this.#tracksAdded = true;
    const tracks = localStream?.getTracks() ?? [];
    for (const track of tracks) this.pc.addTrack(track, localStream);
    if (!receiveOnlyForMissing) return;
    for (const kind of ['audio', 'video']) {
      if (!tracks.some((t) => t.kind === kind)) {
        this.pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
  }
}
