// A small YAML writer for the read-only YAML views (block style, JSON-quoted scalars
// where plain ones would be misread). The result is shown with textContent.

const PLAIN = /^[A-Za-z0-9_./][A-Za-z0-9_./ :-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|~|y|n|[-+]?[0-9.][0-9.eE+-]*)$/i;

function scalar(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  const s = String(v);
  if (s === "" || !PLAIN.test(s) || RESERVED.test(s) || s.endsWith(":") || s.includes(": ") ||
      s.includes(" #") || s !== s.trim()) return JSON.stringify(s);
  return s;
}

function key(k) {
  return PLAIN.test(k) && !RESERVED.test(k) && !k.includes(": ") ? k : JSON.stringify(k);
}

function lines(value, indent, out) {
  const pad = " ".repeat(indent);
  if (Array.isArray(value)) {
    if (!value.length) { out.push(pad + "[]"); return; }
    for (const item of value) {
      if (item !== null && typeof item === "object" && Object.keys(item).length) {
        const sub = [];
        lines(item, indent + 2, sub);
        out.push(pad + "- " + sub[0].slice(indent + 2), ...sub.slice(1));
      } else {
        out.push(pad + "- " + (item !== null && typeof item === "object" ? (Array.isArray(item) ? "[]" : "{}") : scalar(item)));
      }
    }
    return;
  }
  const entries = Object.entries(value);
  if (!entries.length) { out.push(pad + "{}"); return; }
  for (const [k, v] of entries) {
    if (v !== null && typeof v === "object" && (Array.isArray(v) ? v.length : Object.keys(v).length)) {
      out.push(pad + key(k) + ":");
      lines(v, Array.isArray(v) ? indent : indent + 2, out);
    } else if (v !== null && typeof v === "object") {
      out.push(pad + key(k) + ": " + (Array.isArray(v) ? "[]" : "{}"));
    } else if (typeof v === "string" && v.includes("\n")) {
      out.push(pad + key(k) + ": |-");
      for (const line of v.split("\n")) out.push(pad + "  " + line);
    } else {
      out.push(pad + key(k) + ": " + scalar(v));
    }
  }
}

export function toYaml(obj) {
  const copy = JSON.parse(JSON.stringify(obj));
  if (copy.metadata) delete copy.metadata.managedFields;
  const out = [];
  lines(copy, 0, out);
  return out.join("\n") + "\n";
}
