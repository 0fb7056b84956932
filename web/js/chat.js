// In-call chat over the control channel (peer-link.js, `chat`): a log of messages,
// an input, and an unread count on the Chat button while the chat is not in view.
// Nothing is lost silently: a message that cannot go (the channel is not open) stays
// in the log marked "not sent".

import { h } from './dom.js';
import { MAX_CHAT_CHARS } from './peer-link.js';

export class Chat {
  /** The panel section (id chatPanel). */
  section;
  #log;
  #input;
  #sendBtn;
  #send;
  #isVisible;
  #onUnread;
  #peer = '';
  #unread = 0;

  /**
   * @param {object} o
   * @param {(text: string) => boolean} o.send sends a chat message; false if it could not go
   * @param {() => boolean} o.isVisible whether the chat is in view (no unread count then)
   * @param {(count: number) => void} o.onUnread the unread count changed
   */
  constructor({ send, isVisible, onUnread }) {
    this.#send = send;
    this.#isVisible = isVisible;
    this.#onUnread = onUnread;
    this.#log = h('ol', { id: 'chatLog', class: 'chat-log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Chat messages' });
    this.#input = h('input', {
      id: 'chatInput',
      type: 'text',
      autocomplete: 'off',
      maxlength: MAX_CHAT_CHARS,
      'aria-label': 'Message',
      placeholder: 'Message',
      disabled: true,
    });
    this.#sendBtn = h('button', { id: 'chatSendBtn', type: 'submit', class: 'btn', disabled: true }, 'Send');
    const form = h('form', { id: 'chatForm', class: 'chat-form' }, this.#input, this.#sendBtn);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.section = h('section', { id: 'chatPanel', class: 'panel-section', 'aria-labelledby': 'chatTitle', hidden: true },
      h('h2', { id: 'chatTitle' }, 'Chat'), this.#log, form);
  }

  /** A new call: empty log. */
  reset(peer) {
    this.#peer = peer ?? '';
    this.#log.replaceChildren();
    this.#input.value = '';
    this.setReady(false);
    this.markRead();
  }

  /** The control channel is open (or not): the input works only then. */
  setReady(ready) {
    this.#input.disabled = !ready;
    this.#sendBtn.disabled = !ready;
  }

  /** A message from the peer. */
  received(text) {
    this.#append('them', this.#peer, text);
    if (!this.#isVisible()) {
      this.#unread += 1;
      this.#onUnread(this.#unread);
    }
  }

  /** The chat came into view. */
  markRead() {
    if (this.#unread === 0) return;
    this.#unread = 0;
    this.#onUnread(0);
  }

  focus() {
    if (!this.#input.disabled) this.#input.focus();
  }

  #submit() {
    const text = this.#input.value.trim();
    if (!text) return;
    const sent = this.#send(text);
    const item = this.#append('me', 'You', text);
    if (!sent) {
      item.classList.add('not-sent');
      item.append(h('span', { class: 'chat-error' }, ` Not sent: the connection to ${this.#peer} is not open.`));
      return;
    }
    this.#input.value = '';
  }

  #append(from, who, text) {
    const time = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const item = h('li', { class: `chat-message chat-${from}` },
      h('span', { class: 'chat-who' }, who), ' ',
      h('span', { class: 'chat-time' }, time), ' ',
      h('span', { class: 'chat-text' }, text));
    this.#log.append(item);
    this.#log.scrollTop = this.#log.scrollHeight;
    return item;
  }
}
