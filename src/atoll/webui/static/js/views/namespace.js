// One namespace: its labels and annotations, then VMs, pods, services, claims and events,
// each live and each empty with a reason when the user's roles do not reach it.

import { preferredVersion, query, request } from "../api.js";
import { age, chips, filterBox, h, link, panel, replace, table } from "../dom.js";
import { eventsPanel, livePanel, statusCell } from "./common.js";

export const VM_GROUP = "vmoperator.vmware.com";

export function podStatus(p) {
  const s = p.status || {};
  if ((p.metadata || {}).deletionTimestamp) return "Terminating";
  for (const c of s.containerStatuses || []) {
    const st = c.state || {};
    if (st.waiting && st.waiting.reason) return st.waiting.reason;
    if (st.terminated && st.terminated.reason && s.phase === "Running") return st.terminated.reason;
  }
  return s.reason || s.phase || "Pending";
}

function ready(p) {
  const cs = (p.status || {}).containerStatuses || [];
  return `${cs.filter((c) => c.ready).length}/${((p.spec || {}).containers || []).length}`;
}

function ports(svc) {
  return ((svc.spec || {}).ports || []).map((p) =>
    `${p.port}${p.nodePort ? ":" + p.nodePort : ""}/${p.protocol || "TCP"}`).join(", ");
}

function facts(box, name) {
  // a list narrowed to the name: someone else's namespace is an empty list, not a 403
  request("/apis/tenancy.atoll.dev/v1/projects" + query({ fieldSelector: `metadata.name=${name}` })).then((list) => {
    const ns = (list.items || [])[0];
    if (!ns) {
      replace(box, h("p", { class: "empty" }, "You hold no role here, so its details are hidden."));
      return;
    }
    const meta = ns.metadata || {};
    replace(box, h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", {}, (ns.status || {}).phase || ""),
      h("dt", {}, "Created"), h("dd", {}, `${age(meta.creationTimestamp)} ago`),
      h("dt", {}, "Labels"), h("dd", {}, chips(meta.labels)),
      h("dt", {}, "Annotations"), h("dd", {}, chips(meta.annotations))));
  }, (e) => replace(box, h("p", { class: "error" }, `Cannot read the namespace: ${e.message}`)));
}

export function namespaceView(main, ns) {
  const base = `/api/v1/namespaces/${encodeURIComponent(ns)}`;
  const about = panel("About", "about");
  about.body.append(h("p", { class: "muted" }, "Loading…"));
  facts(about.body, ns);
  const pods = livePanel({
    title: "Pods", id: "pods", resource: "pods", namespace: ns, path: `${base}/pods`, empty: "No pods.",
    render: (items) => table([
      ["Name", (p) => link(["ns", ns, "pod", p.metadata.name], p.metadata.name)],
      ["Ready", ready],
      ["Status", (p) => { const s = podStatus(p); return statusCell(s, s === "Running" || s === "Succeeded"); }],
      ["Restarts", (p) => String(((p.status || {}).containerStatuses || []).reduce((n, c) => n + (c.restartCount || 0), 0)), "hide-narrow"],
      ["IP", (p) => (p.status || {}).podIP || "", "hide-narrow"],
      ["Host", (p) => (p.spec || {}).nodeName || "", "hide-narrow"],
      ["Age", (p) => age(p.metadata.creationTimestamp)],
    ], items),
  });
  const services = livePanel({
    title: "Services", id: "services", resource: "services", namespace: ns, path: `${base}/services`,
    empty: "No services.",
    render: (items) => table([
      ["Name", (s) => s.metadata.name],
      ["Type", (s) => (s.spec || {}).type || "ClusterIP"],
      ["Cluster IP", (s) => (s.spec || {}).clusterIP || "", "hide-narrow"],
      ["Ports", ports],
      ["Age", (s) => age(s.metadata.creationTimestamp), "hide-narrow"],
    ], items),
  });
  const claims = livePanel({
    title: "Volume claims", id: "pvcs", resource: "persistentvolumeclaims", namespace: ns,
    path: `${base}/persistentvolumeclaims`, empty: "No persistent volume claims.",
    render: (items) => table([
      ["Name", (c) => c.metadata.name],
      ["Status", (c) => (c.status || {}).phase || ""],
      ["Capacity", (c) => ((c.status || {}).capacity || {}).storage || (((c.spec || {}).resources || {}).requests || {}).storage || ""],
      ["Class", (c) => (c.spec || {}).storageClassName || "", "hide-narrow"],
      ["Volume", (c) => (c.spec || {}).volumeName || "", "hide-narrow"],
      ["Age", (c) => age(c.metadata.creationTimestamp), "hide-narrow"],
    ], items),
  });
  const events = eventsPanel(ns);
  const vmSlot = h("div", {});
  const panels = [pods, services, claims, events];
  let vms = null, stopped = false;
  const setFilter = (t) => { for (const p of panels) p.setFilter(t); if (vms) vms.setFilter(t); };
  main.append(h("div", { class: "crumbs" }, h("a", { href: "#/namespaces" }, "Namespaces"), " / "),
    h("h1", {}, ns), filterBox("Filter this namespace", setFilter), about.section, vmSlot,
    pods.section, services.section, claims.section, events.section);
  preferredVersion(VM_GROUP).then((version) => {
    if (stopped) return;
    if (!version) {
      const p = panel("Virtual machines", "vms");
      p.body.append(h("p", { class: "empty" }, "The VM Operator API is not served here."));
      vmSlot.append(p.section);
      return;
    }
    vms = livePanel({
      title: "Virtual machines", id: "vms", resource: "virtualmachines", group: VM_GROUP, namespace: ns,
      path: `/apis/${VM_GROUP}/${version}/namespaces/${encodeURIComponent(ns)}/virtualmachines`,
      empty: "No virtual machines.",
      render: (items) => table([
        ["Name", (v) => link(["ns", ns, "vm", v.metadata.name], v.metadata.name)],
        ["Power", (v) => { const s = (v.status || {}).powerState || ""; return statusCell(s || "—", s === "PoweredOn"); }],
        ["Class", (v) => (v.spec || {}).className || "", "hide-narrow"],
        ["Image", (v) => (v.spec || {}).imageName || "", "hide-narrow"],
        ["IP", (v) => ((v.status || {}).network || {}).primaryIP4 || ""],
        ["Age", (v) => age(v.metadata.creationTimestamp)],
      ], items),
    });
    vmSlot.append(vms.section);
  }, (e) => vmSlot.append(h("p", { class: "error" }, `Cannot discover the VM Operator API: ${e.message}`)));
  return () => { stopped = true; for (const p of panels) p.stop(); if (vms) vms.stop(); };
}
