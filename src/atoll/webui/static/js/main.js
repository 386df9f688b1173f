// The console's entry point: signing in and out, the header, and hash routes
// (#/namespaces, #/hosts, #/ns/NAME, #/ns/NAME/vm/VM, #/ns/NAME/pod/POD).

import { ApiError, session, whoami } from "./api.js";
import { h, replace } from "./dom.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let user = null;
let cleanup = () => {};

function signInPage(message) {
  cleanup();
  cleanup = () => {};
  nav.hidden = true;
  const token = h("input", { type: "password", id: "token", name: "token", autocomplete: "off",
                            required: true, "aria-describedby": "token-help" });
  const form = h("form", { class: "signin", "aria-labelledby": "signin-h" },
    h("h1", { id: "signin-h" }, "Sign in to Atoll"),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    h("label", { for: "token" }, "Bearer token"),
    token,
    h("p", { id: "token-help", class: "muted" },
      "A ServiceAccount token (kubectl create token NAME) or a token from the server's token file. " +
      "It is kept for this browser tab only."),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = token.value.trim();
    if (value) signIn("token", value);
  });
  const cert = h("p", {}, "Have a client certificate in this browser? ",
    h("button", { type: "button", class: "secondary", onclick: () => signIn("cert", "") },
      "Use my client certificate"));
  replace(main, form, cert);
  token.focus();
}

async function signIn(mode, token) {
  replace(main, h("p", { class: "muted", role: "status" }, "Signing in…"));
  try {
    user = await whoami(token);
  } catch (e) {
    const why = e instanceof ApiError && e.status === 401
      ? (mode === "cert" ? "No client certificate the server accepts was offered."
                         : "The server did not accept this token.")
      : `Signing in failed: ${e.message}`;
    session.forget();
    signInPage(why);
    return;
  }
  session.remember(mode, token);
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/namespaces";
  showNav();
  route();
}

function signOut() {
  session.forget();
  user = null;
  history.replaceState(null, "", "#/");
  signInPage("");
}

function showNav() {
  const who = user.name ? `signed in as ${user.name}` : "signed in";
  replace(nav,
    h("a", { href: "#/namespaces" }, "Namespaces"),
    h("a", { href: "#/hosts" }, "Hosts"),
    h("span", { class: "who" }, who),
    h("button", { type: "button", onclick: signOut }, "Sign out"));
  nav.hidden = false;
}

// Views load when first shown; a load that failed on the network is tried again under
// another URL (a failed module stays failed under its own).
const ROUTES = [
  [/^#\/namespaces$/, "namespaces.js", "namespacesView"],
  [/^#\/hosts$/, "hosts.js", "hostsView"],
  [/^#\/ns\/([^/]+)$/, "namespace.js", "namespaceView"],
  [/^#\/ns\/([^/]+)\/vm\/([^/]+)$/, "vm.js", "vmView"],
  [/^#\/ns\/([^/]+)\/pod\/([^/]+)$/, "pod.js", "podView"],
];

async function loadView(file, name) {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await import(`./views/${file}${attempt ? "?retry=" + attempt : ""}`))[name];
    } catch (e) {
      if (attempt >= 3) throw e;
      await new Promise((resolve) => setTimeout(resolve, 300 * (attempt + 1)));
    }
  }
}

let routing = 0;

async function route() {
  if (!user) return;
  cleanup();
  cleanup = () => {};
  const hash = location.hash || "#/namespaces";
  const turn = ++routing;
  for (const [pattern, file, name] of ROUTES) {
    const m = hash.match(pattern);
    if (m) {
      let args, view;
      try {
        args = m.slice(1).map(decodeURIComponent);
      } catch (e) {
        break;
      }
      try {
        view = await loadView(file, name);
      } catch (e) {
        if (turn === routing) replace(main, h("p", { class: "error", role: "alert" }, `This page did not load: ${e.message}`));
        return;
      }
      if (turn !== routing || !user) return;
      replace(main);
      cleanup = view(main, ...args) || (() => {});
      main.focus({ preventScroll: true });
      return;
    }
  }
  replace(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/namespaces" }, "Your namespaces")));
}

window.addEventListener("hashchange", route);

// A token from earlier in this tab, or a client certificate chosen then, signs in again.
if (session.mode() === "token" && session.token()) signIn("token", session.token());
else if (session.mode() === "cert") signIn("cert", "");
else signInPage("");
