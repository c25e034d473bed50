// A minimal graphql-transport-ws client (the protocol Strawberry serves): one subscription per socket,
// reconnecting with backoff while the element wants it.

const PROTOCOL = 'graphql-transport-ws';

export function wsUrl(endpoint) {
  const u = new URL(endpoint, document.baseURI);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

export class LiveSubscription {
  /**
   * @param {string} endpoint GraphQL URL (http or https; the socket uses ws/wss on the same path)
   * @param {string} query subscription document
   * @param {object} variables
   * @param {object} headers sent as the connection_init payload (browsers cannot set WebSocket headers)
   * @param {(data: object) => void} onData
   * @param {(state: string, detail?: string) => void} onState  'connecting' | 'open' | 'closed' | 'error'
   */
  constructor(endpoint, query, variables, headers, onData, onState) {
    this.headers = headers || {};
    this.url = wsUrl(endpoint);
    this.query = query;
    this.variables = variables;
    this.onData = onData;
    this.onState = onState;
    this.closed = false;
    this.retry = 0;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    this.onState('connecting');
    const ws = new WebSocket(this.url, PROTOCOL);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: this.headers }));
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === 'connection_ack') {
        this.retry = 0;
        ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: this.query, variables: this.variables } }));
        this.onState('open');
      } else if (msg.type === 'next' && msg.payload) {
        if (msg.payload.data) this.onData(msg.payload.data);
        else if (msg.payload.errors) this.onState('error', msg.payload.errors[0].message);
      } else if (msg.type === 'error') {
        this.onState('error', (msg.payload && msg.payload[0] && msg.payload[0].message) || 'subscription refused');
      } else if (msg.type === 'ping') {
        ws.send(JSON.stringify({ type: 'pong' }));
      } else if (msg.type === 'complete') {
        this.onState('closed');
      }
    };
    ws.onclose = (ev) => {
      if (this.closed) return;
      this.onState('closed', ev.reason || String(ev.code));
      const delay = Math.min(30000, 500 * 2 ** this.retry++);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws && this.ws.readyState <= 1) {
      try { this.ws.send(JSON.stringify({ id: '1', type: 'complete' })); } catch { /* closing anyway */ }
      this.ws.close(1000, 'done');
    }
  }
}
