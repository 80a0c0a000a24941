// The dashboard's core: building the page (always as text: textContent and attributes, never
// HTML), calling the API, navigating, and what the page shown holds (timers, live streams).
export const BASE = new URL(document.baseURI);            // …/ui/
export const API = new URL("../", BASE);                  // where taskgate's router is mounted
export const STATES = ["queued", "started", "retrying", "succeeded", "failed", "cancelled", "expired"];
export const main = document.getElementById("main");
// who the page acts as (GET /ui/session's answer), changed in place
export const me = { auth: false, admin: true, csrf: null, owner: null, trace_url: null };
// the page shown: its number (a page still loading when another opens gives up) and how to
// close its live stream
export const view = { generation: 0, close: () => {} };
// set by app.js: what to do on a 401, and how to show the page at the current address
export const hooks = { unauthorized: () => {}, route: () => {} };

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// made once each: costly
const LOCAL_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
const LOCAL_MS = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit",
                                                      fractionalSecondDigits: 3 });

export function when(iso, precise = false) {  // local time (to the ms if `precise`), UTC on hover
  if (!iso) return "";
  const at = new Date(iso);
  return h("time", { datetime: iso, title: at.toISOString().replace(".000Z", "Z") + " (UTC)" },
           (precise ? LOCAL_MS : LOCAL_TIME).format(at));
}

export class Failure extends Error {
  constructor(status, body) { super(body?.error?.message || `HTTP ${status}`); this.status = status; this.body = body; }
}

export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(path, API);
  for (const [name, value] of Object.entries(query || {})) if (value) url.searchParams.set(name, value);
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && me.csrf) headers["X-CSRF-Token"] = me.csrf;
  const answer = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                    credentials: "same-origin" });
  const data = answer.status === 204 ? null : await answer.json().catch(() => null);
  if (answer.status === 401 && path !== "ui/session") { hooks.unauthorized(); throw new Failure(401, data); }
  if (!answer.ok) throw new Failure(answer.status, data);
  return data;
}

export function link(path, text, attrs = {}) {
  const url = new URL(path, BASE);
  return h("a", { href: url.pathname + url.search, "data-link": true, ...attrs }, text);
}

export function go(path, replace = false) {
  const url = new URL(path, BASE);
  history[replace ? "replaceState" : "pushState"]({}, "", url.pathname + url.search);
  hooks.route();
}

const leaving = [];  // what to stop when the page changes (timers)

export function leave() {  // the page shown is about to change
  view.generation += 1;
  for (const stop of leaving.splice(0)) stop();
}

export function every(seconds, run) {  // run now and every `seconds` while this page is shown
  const mine = view.generation;
  let timer = 0;
  const tick = async () => {
    try { await run(); } catch (error) { /* shown by the next successful refresh */ }
    if (mine === view.generation) timer = setTimeout(tick, seconds * 1000);
  };
  leaving.push(() => clearTimeout(timer));
  tick();
}

export function setMain(title, ...children) {
  view.close();
  view.close = () => {};
  document.title = `${title} · taskgate`;
  main.replaceChildren(h("h1", {}, title), ...children);
  main.focus({ preventScroll: true });
}

// why a queued run has not gone to its queue yet (GET /tasks/{id}'s waiting_for)
const WAITING = { rate: "its task's rate limit", slot: "a free concurrency slot", turn: "its turn among owners" };

export function stateCell(task) {
  const state = h("span", { class: `state state-${task.state}` }, task.state);
  if (task.state !== "queued" || !task.waiting_for) return state;
  return h("span", {}, state, " ", h("span", { class: "waiting", "data-waiting": task.waiting_for,
    title: `Waiting in taskgate for ${WAITING[task.waiting_for] ?? task.waiting_for}` }, `waiting: ${task.waiting_for}`));
}

export function progressOf(task) {
  const percent = task.progress && typeof task.progress.percent === "number" ? task.progress.percent : null;
  if (percent === null) return task.state === "succeeded" ? h("progress", { max: 100, value: 100 }) : "";
  return h("progress", { max: 100, value: percent, "aria-label": `${Math.round(percent)} %` }, `${Math.round(percent)} %`);
}

export function epochMs(iso) { const ms = Date.parse(iso ?? ""); return Number.isNaN(ms) ? 0 : ms; }

export function json(value) { return h("pre", {}, JSON.stringify(value, null, 2)); }
