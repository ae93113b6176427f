// The dashboard: plain browser JavaScript on the public API (/v1), no build step.
// Pages are hash routes, so every page has a link of its own:
//   #/tasks?status=failed&kind=K   #/tasks/<id>   #/queues   #/workers
// The API key is kept in sessionStorage (this tab only); #key=<key> in the
// address is taken and removed from the address bar at once.
"use strict";

const KEY_ITEM = "tasks-core-key";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const REFRESH_MS = 2000;
const view = document.getElementById("view");
let refreshTimer = null;

function takeKeyFromAddress() {
  const match = location.hash.match(/^#key=([^&]+)/);
  if (!match) return;
  sessionStorage.setItem(KEY_ITEM, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search + "#/tasks");
}

function apiKey() { return sessionStorage.getItem(KEY_ITEM); }

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const answer = await fetch(url, { headers: { Authorization: `Bearer ${apiKey()}` } });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    throw new ApiError(answer.status, body.code || "http_error", body.message || answer.statusText);
  }
  return body;
}

// Elements from text only: nothing the API returns is ever parsed as HTML.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

const status = (s) => el("span", { class: `status ${s}`, text: s });
const when = (at) => (at ? at.replace("T", " ").slice(0, 19) : "–");
const taskLink = (id, text) => el("a", { href: `#/tasks/${id}`, "data-task-id": id, text: text || id });
const json = (value) => el("pre", { text: JSON.stringify(value, null, 2) });

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: headers.length, class: "muted", text: "Nothing here yet." }))]));
}

function show(...nodes) { view.replaceChildren(...nodes); }

function refreshEvery(load) {
  clearTimeout(refreshTimer);
  const tick = async () => {
    const again = await load();
    if (again !== false) refreshTimer = setTimeout(tick, REFRESH_MS);
  };
  tick();
}

function keyForm(message) {
  const input = el("input", { type: "password", name: "key", placeholder: "API key", autocomplete: "off" });
  show(el("form", {
    class: "keyform",
    onsubmit: (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_ITEM, input.value.trim());
      route();
    },
  },
  el("h1", { text: "Your API key" }),
  el("p", { class: "muted", text: "Kept in this tab only (sessionStorage). `tasks-core dev` prints a link that fills it in." }),
  message ? el("p", { class: "error", text: message }) : null,
  input,
  el("button", { type: "submit", text: "Open" })));
}

// ---- Tasks -------------------------------------------------------------

function tasksPage(query) {
  const filters = Object.fromEntries(query);
  const cursor = filters.cursor;
  const form = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) chosen.set(name, value);
    location.hash = `#/tasks?${chosen}`;
  } },
  el("select", { name: "status" }, ["", "created", "queued", "running", "waiting", "completed", "failed", "cancelled"]
    .map((s) => { const o = el("option", { value: s, text: s || "any status" }); if (s === (filters.status || "")) o.selected = true; return o; })),
  ["kind", "executorId", "appId"].map((name) => el("input", { name, placeholder: name, value: filters[name] || "" })),
  el("button", { type: "submit", text: "Filter" }));
  const body = el("div", {});
  show(el("h1", { text: "Tasks" }), form, body);
  refreshEvery(async () => {
    try {
      const page = await api("/v1/tasks", { ...filters, limit: 50 });
      const rows = page.items.map((t) => el("tr", {},
        el("td", { class: "id" }, taskLink(t.id)), el("td", { text: t.kind }), el("td", {}, status(t.status)),
        el("td", { text: t.title || "" }), el("td", { text: when(t.createdAt) }), el("td", { text: when(t.endedAt) })));
      const pager = el("div", { class: "pager" },
        cursor ? el("a", { href: `#/tasks?${withCursor(query, null)}`, text: "← Newest" }) : null,
        page.nextCursor ? el("a", { href: `#/tasks?${withCursor(query, page.nextCursor)}`, "data-next": "", text: "Older →" }) : null);
      body.replaceChildren(table(["ID", "Kind", "Status", "Title", "Created", "Ended"], rows), pager);
    } catch (error) { return failed(error); }
    return !cursor; // the newest page refreshes itself; older pages hold still
  });
}

function withCursor(query, cursor) {
  const next = new URLSearchParams(query);
  if (cursor) next.set("cursor", cursor); else next.delete("cursor");
  return next.toString();
}

// ---- One task --------------------------------------------------------------

function taskPage(id) {
  show(el("h1", { text: "Task" }), el("p", { class: "muted", text: "Loading…" }));
  refreshEvery(async () => {
    let task, events;
    try {
      [task, events] = await Promise.all([api(`/v1/tasks/${encodeURIComponent(id)}`, { depth: 3 }), api(`/v1/tasks/${encodeURIComponent(id)}/events`)]);
    } catch (error) { return failed(error); }
    show(
      el("h1", {}, `${task.kind} `, status(task.status)),
      fields(task),
      task.kind === "Flow" ? flowProgress(task) : null,
      el("h2", { text: "Output" }), json(task.output),
      task.errors && task.errors.length ? [el("h2", { text: "Errors" }), json(task.errors)] : null,
      el("h2", { text: `Children (${task.children.length}${task.truncated ? "+" : ""})` }),
      task.children.length ? el("ul", { class: "tree", id: "children" }, task.children.map(treeItem)) : el("p", { class: "muted", text: "None." }),
      el("h2", { text: "Events" }),
      table(["At", "Type", "Change", "By"], events.items.map((e) => el("tr", { "data-event": e.type },
        el("td", { text: e.at.replace("T", " ").slice(0, 23) }), el("td", { text: e.type }),
        el("td", {}, e.toStatus ? [e.fromStatus ? `${e.fromStatus} → ` : "", status(e.toStatus)] : ""),
        el("td", { text: e.actor })))));
    return !TERMINAL.has(task.status);
  });
}

function fields(task) {
  const names = ["id", "title", "targetId", "executorId", "appId", "parentId", "stateId", "attempt", "maxAttempts", "createdAt", "startedAt", "endedAt"];
  return el("dl", { class: "fields" }, names.flatMap((name) => {
    const value = task[name];
    const shown = name === "parentId" && value ? taskLink(value) : (value === null || value === undefined ? "–" : String(value));
    return [el("dt", { text: name }), el("dd", {}, shown)];
  }));
}

function flowProgress(task) {
  const steps = (task.params && Array.isArray(task.params.steps)) ? task.params.steps.length : 0;
  const total = Math.max(steps, task.children.length);
  const count = (s) => task.children.filter((c) => c.status === s).length;
  const done = count("completed") + count("failed") + count("cancelled");
  return el("div", { id: "progress" },
    el("h2", { text: "Progress" }),
    el("div", { class: "progress" }, el("div", { style: `width: ${total ? (100 * done) / total : 100}%` })),
    el("p", { class: "muted", text: `${done} of ${total} steps done · ${count("running")} running · ${count("failed")} failed` }));
}

function treeItem(task) {
  return el("li", {}, status(task.status), " ", taskLink(task.id, `${task.kind} ${task.title || task.id}`),
    task.children && task.children.length ? el("ul", { class: "tree" }, task.children.map(treeItem)) : null);
}

// ---- Queues and workers ----------------------------------------------------

// A page that is one table of an API list, refreshed.
function listPage(title, path, headers, row) {
  const body = el("div", {});
  show(el("h1", { text: title }), body);
  refreshEvery(async () => {
    try {
      const list = await api(path);
      body.replaceChildren(table(headers, list.items.map((item) => el("tr", {}, row(item)))));
    } catch (error) { return failed(error); }
  });
}

const queuesPage = () => listPage("Queues", "/v1/queues",
  ["Queue", "Kind", "Executor", "Waiting", "Running", "Oldest waiting (s)", "Depth", "Workers"],
  (q) => [el("td", { class: "id", text: q.name }), el("td", { text: q.kind }),
    el("td", { text: q.executorId || "–" }), el("td", { text: q.waiting }), el("td", { text: q.running }),
    el("td", { text: q.oldestWaitingSeconds === null ? "–" : Math.round(q.oldestWaitingSeconds) }),
    el("td", { text: q.depth }), el("td", { class: q.workers ? "" : "error", text: q.workers })]);

const workersPage = () => listPage("Workers", "/v1/workers",
  ["Name", "Alive", "Queues", "Kinds", "Running / concurrency", "Started", "Last heartbeat"],
  (w) => [el("td", { class: "id", text: w.name }), el("td", { text: w.alive ? "yes" : "no" }),
    el("td", { text: w.queues.join(", ") }), el("td", { text: w.kinds.join(", ") }),
    el("td", { text: `${w.running} / ${w.concurrency}` }), el("td", { text: when(w.startedAt) }),
    el("td", { text: when(w.lastHeartbeatAt) })]);

// ---- Routing -----------------------------------------------------------

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    sessionStorage.removeItem(KEY_ITEM);
    keyForm(`That key was refused: ${error.message}`);
  } else {
    view.prepend(el("p", { class: "error", role: "alert", text: `${error.code || "error"}: ${error.message}` }));
  }
  return false;
}

function route() {
  clearTimeout(refreshTimer);
  takeKeyFromAddress();
  document.getElementById("forget").hidden = !apiKey();
  if (!apiKey()) return keyForm();
  const [path, search] = (location.hash.slice(1) || "/tasks").split("?");
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.nav === parts[0]);
  if (parts[0] === "tasks" && parts[1]) return taskPage(decodeURIComponent(parts[1]));
  if (parts[0] === "queues") return queuesPage();
  if (parts[0] === "workers") return workersPage();
  return tasksPage(new URLSearchParams(search || ""));
}

document.getElementById("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_ITEM); route(); });
window.addEventListener("hashchange", route);
route();
