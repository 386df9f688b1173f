// Terminals (xterm.js, vendored from npm) over the API's websockets: a pod's exec channels
// (v5/v4.channel.k8s.io: one byte of channel, then data) or a VM's raw serial console.

import { h, replace } from "./dom.js";
import { openSocket } from "./api.js";

const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
let loading = null;

export function xtermInstalled() {
  return meta("atoll-xterm") === "installed";
}

export function missingMessage() {
  return `xterm.js is not installed: run ${meta("atoll-setup") || "bash scripts/setup.sh"}`;
}

// xterm.js adds <style> elements and style attributes at run time. Under this page's
// policy (no 'unsafe-inline') the elements need the page's nonce, and attributes are
// applied through the CSSOM instead, which the policy allows.
function allowTerminalStyles() {
  const nonce = (document.getElementById("main-script") || {}).nonce || "";
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function (tag, options) {
    const el = create.call(this, tag, options);
    if (nonce && String(tag).toLowerCase() === "style") el.setAttribute("nonce", nonce);
    return el;
  };
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (String(name).toLowerCase() === "style" && this.style) {
      this.style.cssText = String(value);
      return;
    }
    setAttribute.call(this, name, value);
  };
}

function loadXterm() {
  if (!loading) {
    loading = (async () => {
      allowTerminalStyles();
      document.head.appendChild(h("link", { rel: "stylesheet", href: "/ui/vendor/xterm/xterm.css" }));
      const [xterm, fit] = await Promise.all([import("/ui/vendor/xterm/xterm.mjs"),
                                              import("/ui/vendor/xterm/addon-fit.mjs")]);
      return { Terminal: xterm.Terminal, FitAddon: fit.FitAddon };
    })();
    loading.catch(() => { loading = null; });
  }
  return loading;
}

const encoder = new TextEncoder();

function frame(channel, bytes) {
  const out = new Uint8Array(bytes.length + 1);
  out[0] = channel;
  out.set(bytes, 1);
  return out;
}

// Open a terminal in `box` on the websocket `path`; `channels`: the exec protocol, else raw
// bytes. `onState(text)` tells the page what happens. Returns close().
export async function openTerminal(box, path, { channels, onState }) {
  if (!xtermInstalled()) {
    replace(box, h("p", { class: "error" }, missingMessage()));
    return () => {};
  }
  const { Terminal, FitAddon } = await loadXterm();
  const area = h("div", { class: "term" });
  replace(box, area);
  const term = new Terminal({ convertEol: !channels, cursorBlink: true, fontSize: 14, scrollback: 2000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(area);
  fit.fit();
  const protocols = channels ? ["v5.channel.k8s.io", "v4.channel.k8s.io"] : ["console.atoll.dev"];
  const ws = openSocket(path, protocols);
  onState("connecting…");
  const resize = () => {
    if (channels && ws.readyState === WebSocket.OPEN) {
      ws.send(frame(4, encoder.encode(JSON.stringify({ Width: term.cols, Height: term.rows }))));
    }
  };
  ws.onopen = () => {
    onState("connected");
    resize();
    term.focus();
  };
  ws.onmessage = (msg) => {
    if (typeof msg.data === "string") { term.write(msg.data); return; }
    const bytes = new Uint8Array(msg.data);
    if (!channels) { term.write(bytes); return; }
    if (!bytes.length) return;
    const channel = bytes[0], data = bytes.subarray(1);
    if (channel === 1 || channel === 2) term.write(data);
    else if (channel === 3) {
      let text = "";
      try {
        const status = JSON.parse(new TextDecoder().decode(data));
        text = status.status === "Success" ? "the process exited" : status.message || "the process failed";
      } catch (e) { text = "the process ended"; }
      onState(text);
    }
  };
  let failed = false;
  ws.onclose = (ev) => {
    if (!failed) onState(ev.code === 1000 || ev.code === 1005 ? "closed" : `closed (${ev.code})`);
  };
  ws.onerror = () => {
    failed = true;
    onState("the connection failed (not allowed, or the host is unreachable)");
  };
  const input = term.onData((text) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const bytes = encoder.encode(text);
    ws.send(channels ? frame(0, bytes) : bytes);
  });
  term.onResize(resize);
  const onWindow = () => fit.fit();
  window.addEventListener("resize", onWindow);
  return () => {
    window.removeEventListener("resize", onWindow);
    input.dispose();
    ws.onclose = null;
    ws.onerror = null;
    if (ws.readyState <= WebSocket.OPEN) ws.close();
    term.dispose();
  };
}
