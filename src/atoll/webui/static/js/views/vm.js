// One VirtualMachine: power state, class, image, addresses, conditions, events, YAML;
// power on/off (a merge patch of spec.powerState) and the serial console in the page.

import { preferredVersion, request } from "../api.js";
import { age, h, panel, replace, table } from "../dom.js";
import { toYaml } from "../yaml.js";
import { eventsPanel, livePanel, statusCell } from "./common.js";
import { VM_GROUP } from "./namespace.js";
import { openTerminal } from "../terminal.js";

function addresses(vm) {
  const net = (vm.status || {}).network || {};
  const out = new Set(net.primaryIP4 ? [net.primaryIP4] : []);
  for (const i of net.interfaces || []) {
    for (const a of ((i.ip || {}).addresses || [])) if (a.address) out.add(String(a.address).split("/")[0]);
  }
  return [...out].join(", ") || "none yet";
}

function conditions(vm) {
  const list = (vm.status || {}).conditions || [];
  if (!list.length) return h("p", { class: "empty" }, "No conditions reported yet.");
  return table([
    ["Type", (c) => c.type],
    ["Status", (c) => statusCell(c.status, c.status === "True")],
    ["Reason", (c) => c.reason || ""],
    ["Message", (c) => c.message || ""],
    ["Since", (c) => age(c.lastTransitionTime), "hide-narrow"],
  ], list);
}

export function vmView(main, ns, name) {
  let stopped = false, overview = null, events = null, closeConsole = () => {};
  const crumbs = h("div", { class: "crumbs" }, h("a", { href: "#/namespaces" }, "Namespaces"), " / ",
    h("a", { href: "#/ns/" + encodeURIComponent(ns) }, ns), " / virtual machines /");
  const slot = h("div", {});
  main.append(crumbs, h("h1", {}, name), slot);
  preferredVersion(VM_GROUP).then((version) => {
    if (stopped) return;
    if (!version) { slot.append(h("p", { class: "error" }, "The VM Operator API is not served here.")); return; }
    const path = `/apis/${VM_GROUP}/${version}/namespaces/${encodeURIComponent(ns)}/virtualmachines`;
    const message = h("p", { role: "status", class: "muted" });
    const powerOn = h("button", { type: "button", onclick: () => power("PoweredOn") }, "Power on");
    const powerOff = h("button", { type: "button", class: "secondary", onclick: () => power("PoweredOff") }, "Power off");
    async function power(state) {
      message.textContent = `Asking for ${state}…`;
      try {
        await request(`${path}/${encodeURIComponent(name)}`, { method: "PATCH",
          contentType: "application/merge-patch+json", body: { spec: { powerState: state } } });
        message.textContent = `spec.powerState is now ${state}.`;
      } catch (e) {
        message.textContent = `Cannot change the power state: ${e.message}`;
      }
    }
    const conds = panel("Conditions", "conditions");
    const yaml = panel("YAML", "yaml");
    const pre = h("pre", { tabindex: "0", "aria-label": "YAML of the virtual machine" });
    yaml.body.append(pre);
    overview = livePanel({
      title: "Overview", id: "overview", resource: "virtualmachines", group: VM_GROUP, namespace: ns,
      path, params: { fieldSelector: `metadata.name=${name}` },
      empty: "This virtual machine does not exist (or no longer).",
      render: ([vm]) => {
        const spec = vm.spec || {}, st = vm.status || {};
        powerOn.disabled = spec.powerState === "PoweredOn";
        powerOff.disabled = spec.powerState === "PoweredOff";
        replace(conds.body, conditions(vm));
        pre.textContent = toYaml(vm);
        return h("dl", { class: "facts" },
          h("dt", {}, "Power state"), h("dd", {}, statusCell(st.powerState || "unknown", st.powerState === "PoweredOn"),
            spec.powerState && spec.powerState !== st.powerState ? ` (asked: ${spec.powerState})` : ""),
          h("dt", {}, "Class"), h("dd", {}, spec.className || ""),
          h("dt", {}, "Image"), h("dd", {}, spec.imageName || ""),
          h("dt", {}, "Addresses"), h("dd", {}, addresses(vm)),
          h("dt", {}, "Host"), h("dd", {}, st.nodeName || st.host || "not placed"),
          h("dt", {}, "Created"), h("dd", {}, `${age(vm.metadata.creationTimestamp)} ago`));
      },
    });
    overview.section.append(h("div", { class: "row" }, powerOn, powerOff), message);
    const consolePanel = panel("Serial console", "console");
    const consoleState = h("span", { class: "muted", role: "status" });
    const consoleBox = h("div", {});
    const open = h("button", { type: "button", onclick: async () => {
      closeConsole();
      open.disabled = true;
      closeConsole = await openTerminal(consoleBox, `${path}/${encodeURIComponent(name)}/console`,
        { channels: false, onState: (s) => { consoleState.textContent = s; } });
      open.disabled = false;
    } }, "Open console");
    const close = h("button", { type: "button", class: "secondary", onclick: () => {
      closeConsole(); closeConsole = () => {}; replace(consoleBox); consoleState.textContent = "closed";
    } }, "Close console");
    consolePanel.body.append(h("div", { class: "row" }, open, close, consoleState), consoleBox);
    events = eventsPanel(ns, "VirtualMachine", name);
    slot.append(overview.section, conds.section, consolePanel.section, events.section, yaml.section);
  }, (e) => slot.append(h("p", { class: "error" }, e.message)));
  return () => {
    stopped = true;
    closeConsole();
    if (overview) overview.stop();
    if (events) events.stop();
  };
}
