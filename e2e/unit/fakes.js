// Stand-ins for browser objects, so the client's logic runs under Node.

/** A WebSocket whose server side the test drives. */
export class FakeWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 3;
  static instances = [];
  readyState = 0;
  sent = [];
  constructor(url) {
    super();
    this.url = url;
    FakeWebSocket.instances.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000) {
    this.serverClose(code);
  }
  // test side
  serverOpen() {
    this.readyState = 1;
    this.dispatchEvent(new Event('open'));
  }
  serverSend(obj) {
    const data = typeof obj === 'string' ? obj : JSON.stringify(obj);
    this.dispatchEvent(Object.assign(new Event('message'), { data }));
  }
  serverClose(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.dispatchEvent(Object.assign(new Event('close'), { code, reason: '' }));
  }
}

/** Enough of RTCPeerConnection for the signaling logic: descriptions and candidates. */
export class FakePeerConnection extends EventTarget {
  static instances = [];
  localDescription = null;
  remoteDescription = null;
  currentRemoteDescription = null;
  signalingState = 'stable';
  iceRestarts = 0;
  connectionState = 'new';
  iceConnectionState = 'new';
  added = [];
  transceivers = [];
  tracks = [];
  closed = false;
  constructor(config) {
    super();
    this.config = config;
    FakePeerConnection.instances.push(this);
  }
  /** Each fake connection has its own "certificate", as a real one does. */
  fingerprint = `sha-256 ${String(FakePeerConnection.instances.length + 1).padStart(2, '0')}:ff`;
  async createOffer() {
    return { type: 'offer', sdp: `offer-${FakePeerConnection.instances.length}\na=fingerprint:${this.fingerprint}\n` };
  }
  async createAnswer() {
    if (!this.remoteDescription) throw new Error('no remote offer');
    return { type: 'answer', sdp: `answer\na=fingerprint:${this.fingerprint}\n` };
  }
  async setLocalDescription(d) {
    this.localDescription = { ...d, toJSON: () => ({ type: d.type, sdp: d.sdp }) };
    if (d.type === 'offer') this.signalingState = 'have-local-offer';
    else {
      // Our answer completes the exchange: the remote offer becomes current.
      this.signalingState = 'stable';
      this.currentRemoteDescription = this.remoteDescription;
    }
  }
  async setRemoteDescription(d) {
    this.remoteDescription = d;
    if (d.type === 'offer') this.signalingState = 'have-remote-offer';
    else {
      this.signalingState = 'stable';
      this.currentRemoteDescription = d;
    }
  }
  restartIce() {
    this.iceRestarts += 1;
  }
  async addIceCandidate(c) {
    if (!this.remoteDescription) throw new DOMException('The remote description was null', 'InvalidStateError');
    this.added.push(c);
  }
  addTrack(track) {
    this.tracks.push(track);
  }
  addTransceiver(kind, init) {
    this.transceivers.push({ kind, ...init });
  }
  getSenders() {
    return [];
  }
  /** Counts the samples; `statsReply` (settable) is what each one gets. */
  getStats() {
    this.statsRequests = (this.statsRequests ?? 0) + 1;
    return this.statsReply ?? Promise.resolve(new Map());
  }
  close() {
    this.closed = true;
  }
  // test side
  emitCandidate(candidate) {
    this.dispatchEvent(Object.assign(new Event('icecandidate'), { candidate: { toJSON: () => candidate } }));
  }
  setConnected() {
    this.connectionState = 'connected';
    this.iceConnectionState = 'connected';
    this.dispatchEvent(new Event('connectionstatechange'));
  }
  setFailed() {
    this.iceConnectionState = 'failed';
    this.dispatchEvent(new Event('iceconnectionstatechange'));
  }
  setDisconnected() {
    this.iceConnectionState = 'disconnected';
    this.connectionState = 'disconnected';
    this.dispatchEvent(new Event('iceconnectionstatechange'));
  }
}

/** Records what the controller asks the page to show. */
export function fakeUi() {
  const ui = {
    handlers: {},
    view: null,
    peer: null,
    callStatus: '',
    loginStatus: '',
    page: 'login',
    users: [],
    remoteStream: undefined,
    signalingUp: false,
    timer: undefined,
    stats: undefined,
    on(h) {
      Object.assign(ui.handlers, h);
    },
    loginName: undefined,
    showLogin(name) {
      ui.page = 'login';
      ui.loginName = name;
    },
    showCallPage() {
      ui.page = 'call';
    },
    setLoginBusy() {},
    setLoginStatus(t) {
      ui.loginStatus = t;
    },
    connection: '',
    setConnection(t) {
      ui.connection = t;
    },
    setSignalingUp(up) {
      ui.signalingUp = up;
    },
    setCallStatus(t) {
      ui.callStatus = t;
    },
    setCallState(state, peer) {
      ui.view = state;
      ui.peer = peer;
    },
    setUsers(names) {
      ui.users = names;
    },
    setLocalStream() {},
    setRemoteStream(s) {
      ui.remoteStream = s;
    },
    setMediaAvailable() {},
    setMicMuted() {},
    setCameraOff() {},
    setTimer(t) {
      ui.timer = t;
    },
    setStats(t) {
      ui.stats = t;
    },
  };
  return ui;
}

/** A sessionStorage: a Map behind the Storage methods the client uses. */
export function fakeStorage(entries = []) {
  const map = new Map(entries);
  return {
    map,
    getItem: (k) => (map.has(k) ? map.get(k) : null),
    setItem: (k, v) => map.set(k, String(v)),
    removeItem: (k) => map.delete(k),
  };
}

/** Let pending promise continuations run. */
export const settle = () => new Promise((ok) => setTimeout(ok, 0));
