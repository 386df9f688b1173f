// The Kubernetes API, as the signed-in user: a bearer token kept in sessionStorage (never
// in a URL or a cookie) or, without one, the browser's TLS client certificate.

const TOKEN_KEY = "atoll.token";
const MODE_KEY = "atoll.auth";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY) || "",
  mode: () => sessionStorage.getItem(MODE_KEY) || "",
  remember(mode, token) {
    sessionStorage.setItem(MODE_KEY, mode);
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  forget() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(MODE_KEY);
    accessMemo.clear();
  },
};

export class ApiError extends Error {
  constructor(status, message, reason) {
    super(message || `the server answered ${status}`);
    this.status = status;
    this.reason = reason || "";
  }
}

function authHeaders(token) {
  const t = token === undefined ? session.token() : token;
  return t ? { Authorization: "Bearer " + t } : {};
}

async function failure(resp) {
  let message = "", reason = "";
  try {
    const body = await resp.json();
    message = body.message || "";
    reason = body.reason || "";
  } catch (e) { /* not a Status */ }
  return new ApiError(resp.status, message || `${resp.status} ${resp.statusText}`, reason);
}

// fetch, tried again after a network failure (the browser drops requests in flight when the
// machine's interfaces change); every call made here is idempotent.
async function fetchRetrying(path, init) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetch(path, init);
    } catch (e) {
      if (attempt >= 3 || (init.signal && init.signal.aborted)) throw e;
      await new Promise((resolve) => setTimeout(resolve, 200 * (attempt + 1)));
    }
  }
}

export async function request(path, { method = "GET", body, contentType, signal, token, accept } = {}) {
  const headers = { Accept: accept || "application/json", ...authHeaders(token) };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType || "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  const resp = await fetchRetrying(path, { method, headers, body: payload, signal, cache: "no-store" });
  if (!resp.ok) throw await failure(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get("Content-Type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

// Who the credentials belong to: SelfSubjectReview where served, else an access review
// (which proves the credentials work without naming the user).
export async function whoami(token) {
  try {
    const review = await request("/apis/authentication.k8s.io/v1/selfsubjectreviews", {
      method: "POST", token,
      body: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" } });
    const info = (review.status || {}).userInfo || {};
    return { name: info.username || "", groups: info.groups || [] };
  } catch (e) {
    if (!(e instanceof ApiError) || (e.status !== 404 && e.status !== 403)) throw e;
  }
  await review("get", "namespaces", "", "", token);
  return { name: "", groups: [] };
}

async function review(verb, resource, group, namespace, token) {
  const answer = await request("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
    method: "POST", token,
    body: { apiVersion: "authorization.k8s.io/v1", kind: "SelfSubjectAccessReview",
            spec: { resourceAttributes: { verb, resource, group, namespace } } } });
  return Boolean((answer.status || {}).allowed);
}

const accessMemo = new Map();

// Whether the user may `verb` `resource` (asked once per session and key).
export function canI(verb, resource, group = "", namespace = "") {
  const key = [verb, resource, group, namespace].join("|");
  if (!accessMemo.has(key)) {
    accessMemo.set(key, review(verb, resource, group, namespace).catch((e) => {
      accessMemo.delete(key);
      throw e;
    }));
  }
  return accessMemo.get(key);
}

let groups = null;

// The preferred version of an API group, from discovery ("" if the group is not served).
export function preferredVersion(group) {
  if (!groups) {
    groups = request("/apis").then((doc) => new Map(((doc || {}).groups || []).map(
      (g) => [g.name, ((g.preferredVersion || {}).version) || ""])));
    groups.catch(() => { groups = null; });
  }
  return groups.then((map) => map.get(group) || "");
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== "") q.append(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// list + watch of a collection: `onChange(items)` gets the current objects after the list
// and after every event; a dropped stream resumes from the last resourceVersion, a 410
// (too old) or an ERROR event lists again. Returns stop().
export function watchList(path, params, { onChange, onState, onError }) {
  const objects = new Map();
  const key = (o) => `${o.metadata.namespace || ""}/${o.metadata.name}`;
  let stopped = false, controller = null, rv = "", delay = 500, timer = null;
  const emit = () => onChange([...objects.values()].sort((a, b) => key(a).localeCompare(key(b))));

  async function list() {
    const body = await request(path + query(params), { signal: controller.signal });
    objects.clear();
    for (const item of body.items || []) objects.set(key(item), item);
    rv = (body.metadata || {}).resourceVersion || "";
    emit();
  }

  async function stream() {
    const url = path + query({ ...params, watch: "1", resourceVersion: rv, allowWatchBookmarks: "true" });
    const resp = await fetch(url, { headers: { Accept: "application/json", ...authHeaders() },
                                    signal: controller.signal, cache: "no-store" });
    if (!resp.ok) throw await failure(resp);
    onState("live");
    delay = 500;
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        const obj = event.object || {};
        if (event.type === "ERROR") {
          rv = "";  // 410 Gone or another failure: start over with a list
          throw new ApiError(obj.code || 500, obj.message || "watch error", obj.reason);
        }
        rv = (obj.metadata || {}).resourceVersion || rv;
        if (event.type === "BOOKMARK") continue;
        if (event.type === "DELETED") objects.delete(key(obj));
        else objects.set(key(obj), obj);
        emit();
      }
    }
  }

  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        if (!rv) await list();
        await stream();
        onState("reconnecting");
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 404)) {
          onError(e);
          return;
        }
        if (e instanceof ApiError && e.status === 410) rv = "";
        onState("reconnecting");
      }
      await new Promise((resolve) => { timer = setTimeout(resolve, delay); });
      delay = Math.min(delay * 2, 10000);
    }
  }

  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (controller) controller.abort();
  };
}

// A websocket to the API with the token as the Kubernetes bearer subprotocol.
export function openSocket(path, protocols) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const offered = [...protocols];
  const token = session.token();
  if (token) {
    const bytes = new TextEncoder().encode(token);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    offered.push("base64url.bearer.authorization.k8s.io." +
      btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""));
  }
  const ws = new WebSocket(`${scheme}//${location.host}${path}`, offered);
  ws.binaryType = "arraybuffer";
  return ws;
}

// A streamed text body (pod logs with follow): `onText` gets each decoded chunk.
export async function streamText(path, { signal, onText }) {
  const resp = await fetch(path, { headers: { Accept: "*/*", ...authHeaders() }, signal, cache: "no-store" });
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(decoder.decode(value, { stream: true }));
  }
}
