// Hosts: the Nodes, live: readiness, capacity and allocatable, conditions, taints.

import { age, chips, filterBox, h, table } from "../dom.js";
import { conditionText, livePanel, statusCell } from "./common.js";

function resources(node, key) {
  const s = node.status || {};
  const cap = (s.capacity || {})[key] || "", alloc = (s.allocatable || {})[key] || "";
  return cap === alloc ? cap : `${alloc} of ${cap}`;
}

function troubles(node) {
  return ((node.status || {}).conditions || [])
    .filter((c) => c.type !== "Ready" && c.status === "True")
    .map((c) => `${c.type}${c.message ? ": " + c.message : ""}`);
}

export function hostsView(main) {
  const hosts = livePanel({
    title: "Hosts", id: "hosts", resource: "nodes", path: "/api/v1/nodes",
    empty: "No hosts have registered.",
    render: (nodes) => table([
      ["Name", (n) => n.metadata.name],
      ["Ready", (n) => { const r = conditionText((n.status || {}).conditions, "Ready"); return statusCell(r, r === "True"); }],
      ["Schedulable", (n) => (n.spec || {}).unschedulable ? statusCell("No (cordoned)", false) : "Yes"],
      ["CPU", (n) => resources(n, "cpu")],
      ["Memory", (n) => resources(n, "memory"), "hide-narrow"],
      ["Pods", (n) => resources(n, "pods"), "hide-narrow"],
      ["Taints", (n) => chips(Object.fromEntries(((n.spec || {}).taints || []).map(
        (t) => [`${t.key}${t.value ? "=" + t.value : ""}`, t.effect])))],
      ["Conditions", (n) => { const t = troubles(n); return t.length ? statusCell(t.join("; "), false) : "OK"; }, "hide-narrow"],
      ["Age", (n) => age(n.metadata.creationTimestamp), "hide-narrow"],
    ], nodes),
  });
  main.append(h("h1", {}, "Hosts"), filterBox("Filter hosts", (t) => hosts.setFilter(t)), hosts.section);
  return () => hosts.stop();
}
