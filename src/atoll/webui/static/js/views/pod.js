// One pod: containers, logs (followed), an exec terminal, events and YAML.

import { query, streamText } from "../api.js";
import { age, h, panel, replace, table } from "../dom.js";
import { toYaml } from "../yaml.js";
import { eventsPanel, livePanel, statusCell } from "./common.js";
import { podStatus } from "./namespace.js";
import { openTerminal } from "../terminal.js";

const MAX_LOG = 256 * 1024;

function stateText(c) {
  const st = c.state || {};
  if (st.running) return "running";
  if (st.waiting) return `waiting: ${st.waiting.reason || ""}`;
  if (st.terminated) return `terminated: ${st.terminated.reason || ""} (exit ${st.terminated.exitCode})`;
  return "";
}

function containerSelect(id, label) {
  const select = h("select", { id });
  return { select, field: h("span", {}, h("label", { for: id }, label), select) };
}

export function podView(main, ns, name) {
  const base = `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`;
  let logAbort = null, closeTerm = () => {}, known = "";
  const logSel = containerSelect("log-container", "Container");
  const execSel = containerSelect("exec-container", "Container");
  const fillContainers = (pod) => {
    const names = ((pod.spec || {}).containers || []).map((c) => c.name);
    if (names.join("\n") === known) return;
    known = names.join("\n");
    for (const sel of [logSel.select, execSel.select]) {
      const was = sel.value;
      replace(sel, names.map((n) => h("option", { value: n, selected: n === was }, n)));
    }
  };
  const pre = h("pre", { tabindex: "0", "aria-label": "YAML of the pod" });
  const yaml = panel("YAML", "yaml");
  yaml.body.append(pre);
  const overview = livePanel({
    title: "Containers", id: "containers", resource: "pods", namespace: ns,
    path: `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`,
    params: { fieldSelector: `metadata.name=${name}` },
    empty: "This pod does not exist (or no longer).",
    render: ([pod]) => {
      fillContainers(pod);
      pre.textContent = toYaml(pod);
      const statuses = Object.fromEntries(((pod.status || {}).containerStatuses || []).map((c) => [c.name, c]));
      const st = pod.status || {};
      return h("div", {},
        h("dl", { class: "facts" },
          h("dt", {}, "Status"), h("dd", {}, podStatus(pod)),
          h("dt", {}, "Host"), h("dd", {}, (pod.spec || {}).nodeName || "not scheduled"),
          h("dt", {}, "Pod IP"), h("dd", {}, st.podIP || ""),
          h("dt", {}, "Created"), h("dd", {}, `${age(pod.metadata.creationTimestamp)} ago`)),
        table([
          ["Container", (c) => c.name],
          ["Image", (c) => c.image || "", "hide-narrow"],
          ["State", (c) => stateText(statuses[c.name] || {})],
          ["Ready", (c) => statusCell((statuses[c.name] || {}).ready ? "yes" : "no", Boolean((statuses[c.name] || {}).ready))],
          ["Restarts", (c) => String((statuses[c.name] || {}).restartCount || 0)],
        ], (pod.spec || {}).containers || []));
    },
  });

  const logs = panel("Logs", "logs");
  const logPre = h("pre", { id: "log-text", tabindex: "0", "aria-label": "Container log", "aria-live": "off" });
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const logState = h("span", { class: "muted", role: "status" });
  const showLogs = async () => {
    if (logAbort) logAbort.abort();
    const controller = new AbortController();
    logAbort = controller;
    logPre.textContent = "";
    const params = { container: logSel.select.value, tailLines: "1000", follow: follow.checked ? "true" : "" };
    logState.textContent = follow.checked ? "following…" : "";
    try {
      await streamText(`${base}/log${query(params)}`, { signal: controller.signal, onText: (text) => {
        logPre.appendChild(document.createTextNode(text));
        if (logPre.textContent.length > MAX_LOG) logPre.textContent = logPre.textContent.slice(-MAX_LOG / 2);
        logPre.scrollTop = logPre.scrollHeight;
      } });
      if (logAbort === controller) logState.textContent = "end of log";
    } catch (e) {
      if (e.name !== "AbortError") logState.textContent = `Cannot read the log: ${e.message}`;
    }
  };
  logs.body.append(h("div", { class: "row" }, logSel.field,
    h("span", {}, follow, h("label", { for: "log-follow" }, " Follow")),
    h("button", { type: "button", onclick: showLogs }, "Show logs"), logState), logPre);

  const exec = panel("Terminal", "terminal");
  const command = h("input", { type: "text", id: "exec-command", value: "sh", autocomplete: "off" });
  const termState = h("span", { class: "muted", role: "status" });
  const termBox = h("div", {});
  const openExec = async () => {
    closeTerm();
    const argv = command.value.trim().split(/\s+/).filter(Boolean);
    const params = new URLSearchParams({ container: execSel.select.value, stdin: "true", stdout: "true",
                                         stderr: "true", tty: "true" });
    for (const arg of argv.length ? argv : ["sh"]) params.append("command", arg);
    closeTerm = await openTerminal(termBox, `${base}/exec?${params}`,
      { channels: true, onState: (s) => { termState.textContent = s; } });
  };
  exec.body.append(h("div", { class: "row" }, execSel.field,
    h("span", {}, h("label", { for: "exec-command" }, "Command"), command),
    h("button", { type: "button", onclick: openExec }, "Open terminal"),
    h("button", { type: "button", class: "secondary", onclick: () => {
      closeTerm(); closeTerm = () => {}; replace(termBox); termState.textContent = "closed";
    } }, "Close terminal"), termState), termBox);

  const events = eventsPanel(ns, "Pod", name);
  main.append(h("div", { class: "crumbs" }, h("a", { href: "#/namespaces" }, "Namespaces"), " / ",
    h("a", { href: "#/ns/" + encodeURIComponent(ns) }, ns), " / pods /"),
  h("h1", {}, name), overview.section, logs.section, exec.section, events.section, yaml.section);
  return () => {
    if (logAbort) logAbort.abort();
    closeTerm();
    overview.stop();
    events.stop();
  };
}
