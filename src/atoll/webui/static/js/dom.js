// DOM helpers. Every string from the API becomes a text node or a property:
// nothing here ever parses a string as HTML, so names render as text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "hidden" || key === "disabled" || key === "checked" || key === "selected") {
      el[key] = Boolean(value);
    } else if (key === "value") {
      el.value = value;
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

// A hash link to a console page; every part is URI-encoded.
export function link(parts, text) {
  return h("a", { href: "#/" + parts.map(encodeURIComponent).join("/") }, text);
}

// A table: columns are [title, cell(obj) -> string | Node, optional class].
export function table(columns, rows, caption) {
  return h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map(([title, , cls]) => h("th", { scope: "col", class: cls }, title)))),
    h("tbody", {}, rows.map((row) => h("tr", {},
      columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row)))))));
}

export function chips(map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return h("div", { class: "chips" }, entries.map(([k, v]) => h("span", {}, v === "" ? k : `${k}=${v}`)));
}

export function age(timestamp) {
  if (!timestamp) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(timestamp)) / 1000);
  if (seconds < 120) return `${Math.floor(seconds)}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

// A panel: a titled section with a live-status marker and a body the caller fills.
export function panel(title, id) {
  const status = h("span", { class: "live", "aria-live": "polite" });
  const body = h("div", {});
  const section = h("section", { class: "panel", "aria-labelledby": id + "-h", id },
    h("div", { class: "panel-head" }, h("h2", { id: id + "-h" }, title), status), body);
  return { section, body, status };
}

export function setLive(status, state) {
  status.className = "live " + (state === "live" ? "on" : state === "" ? "" : "off");
  status.textContent = state === "live" ? "live" : state;
}

export function filterBox(label, onInput) {
  const id = "filter-" + Math.random().toString(36).slice(2, 8);
  const input = h("input", { type: "search", id, placeholder: "name, label or text", autocomplete: "off" });
  input.addEventListener("input", () => onInput(input.value.trim().toLowerCase()));
  return h("div", { class: "filter" }, h("label", { for: id }, label), input);
}

// Whether an object matches a filter text: its name, namespace or any label.
export function matches(obj, text) {
  if (!text) return true;
  const meta = obj.metadata || {};
  const hay = [meta.name, meta.namespace, ...Object.entries(meta.labels || {}).map(([k, v]) => `${k}=${v}`)];
  return hay.some((s) => String(s || "").toLowerCase().includes(text));
}
