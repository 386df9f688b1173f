// "My namespaces": every namespace for whoever may list them (live), else the ones the
// user holds a role in, from the tenancy.atoll.dev projects API (RBAC's own answer).

import { canI, request, watchList } from "../api.js";
import { age, filterBox, h, link, matches, panel, replace, setLive, table } from "../dom.js";

function render(items) {
  return table([
    ["Name", (ns) => link(["ns", ns.metadata.name], ns.metadata.name)],
    ["Status", (ns) => (ns.status || {}).phase || ""],
    ["Age", (ns) => age(ns.metadata.creationTimestamp)],
  ], items);
}

export function namespacesView(main) {
  const { section, body, status } = panel("My namespaces", "namespaces");
  let items = [], filter = "", stop = () => {}, stopped = false;
  const draw = () => {
    const shown = items.filter((o) => matches(o, filter));
    replace(body, shown.length ? render(shown)
      : h("p", { class: "empty" }, items.length ? "Nothing matches the filter."
        : "You hold no role in any namespace yet: ask an administrator for a RoleBinding."));
  };
  const fromProjects = async () => {
    try {
      const list = await request("/apis/tenancy.atoll.dev/v1/projects");
      if (stopped) return;
      items = (list.items || []).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
      setLive(status, "as of " + new Date().toLocaleTimeString());
      draw();
    } catch (e) {
      if (!stopped) replace(body, h("p", { class: "error" }, `Cannot list your namespaces: ${e.message}`));
    }
  };
  replace(body, h("p", { class: "muted" }, "Loading…"));
  const refresh = h("button", { type: "button", class: "secondary", hidden: true, onclick: fromProjects }, "Refresh");
  main.append(h("h1", {}, "Namespaces"), filterBox("Filter namespaces", (t) => { filter = t; draw(); }),
    section, h("div", { class: "row" }, refresh));
  Promise.all([canI("list", "namespaces"), canI("watch", "namespaces")]).then(([list, watch]) => {
    if (stopped) return;
    if (list && watch) {
      stop = watchList("/api/v1/namespaces", {}, {
        onChange(next) { items = next; draw(); setLive(status, "live"); },
        onState(state) { setLive(status, state); },
        onError() { refresh.hidden = false; fromProjects(); },
      });
    } else {
      refresh.hidden = false;
      fromProjects();
    }
  }, () => { refresh.hidden = false; fromProjects(); });
  return () => { stopped = true; stop(); };
}
