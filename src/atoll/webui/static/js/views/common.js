// What the inventory pages share: a live panel of one kind, guarded by an access review.

import { ApiError, canI, watchList } from "../api.js";
import { age, h, matches, panel, replace, setLive, table } from "../dom.js";

export function conditionText(conditions, type) {
  const c = (conditions || []).find((x) => x.type === type);
  return c ? c.status : "Unknown";
}

export function statusCell(text, good) {
  return h("span", { class: good === undefined ? "" : good ? "ok" : "bad" }, text);
}

// A panel listing one resource live. spec: {title, id, resource, group, namespace, path,
// params, columns, render?, empty}. Returns {section, stop, setFilter}.
export function livePanel(spec) {
  const { section, body, status } = panel(spec.title, spec.id);
  let items = [], filter = "", stop = () => {}, stopped = false;
  const draw = () => {
    const shown = items.filter((o) => (spec.match || matches)(o, filter));
    if (!shown.length) {
      replace(body, h("p", { class: "empty" }, items.length ? "Nothing matches the filter." : spec.empty));
    } else {
      replace(body, spec.render(shown));
    }
  };
  const denied = (text) => {
    setLive(status, "");
    replace(body, h("p", { class: "empty" }, text));
  };
  const explain = `You may not list ${spec.title.toLowerCase()} ${spec.namespace ? "in this namespace" : "here"}: ` +
    "your roles do not include it, so this panel stays empty.";
  replace(body, h("p", { class: "muted" }, "Loading…"));
  Promise.all([canI("list", spec.resource, spec.group, spec.namespace),
               canI("watch", spec.resource, spec.group, spec.namespace)]).then(([list, watch]) => {
    if (stopped) return;
    if (!list || !watch) { denied(explain); return; }
    stop = watchList(spec.path, spec.params || {}, {
      onChange(next) { items = next; draw(); setLive(status, "live"); },
      onState(state) { setLive(status, state); },
      onError(e) {
        if (e instanceof ApiError && e.status === 403) denied(explain);
        else denied(`Cannot read ${spec.title.toLowerCase()}: ${e.message}`);
      },
    });
  }, (e) => denied(`Cannot check access: ${e.message}`));
  return {
    section,
    setFilter(text) { filter = text; draw(); },
    stop() { stopped = true; stop(); },
  };
}

function eventTime(e) {
  return String(e.lastTimestamp || e.eventTime || (e.metadata || {}).creationTimestamp || "");
}

// The Events of a namespace, or of one object in it (kind and name).
export function eventsPanel(namespace, kind, name) {
  const selector = kind ? `involvedObject.kind=${kind},involvedObject.name=${name}` : "";
  return livePanel({
    title: "Events", id: "events", resource: "events", namespace,
    path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/events`,
    params: { fieldSelector: selector },
    match: (e, text) => !text || [e.reason, e.message, (e.involvedObject || {}).name]
      .some((s) => String(s || "").toLowerCase().includes(text)),
    empty: "No events.",
    render: (events) => table([
      ["Last seen", (e) => age(eventTime(e))],
      ["Type", (e) => statusCell(e.type || "", e.type !== "Warning")],
      ["Reason", (e) => e.reason || ""],
      ["Object", (e) => `${(e.involvedObject || {}).kind || ""}/${(e.involvedObject || {}).name || ""}`, "hide-narrow"],
      ["Message", (e) => e.message || ""],
    ], [...events].sort((a, b) => eventTime(b).localeCompare(eventTime(a))).slice(0, 200)),
  });
}
