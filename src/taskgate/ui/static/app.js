// taskgate's dashboard: plain JavaScript, no build step. Every value from the API is put on the
// page as text (textContent), never as HTML.
const BASE = new URL(document.baseURI);            // …/ui/
const API = new URL("../", BASE);                  // where taskgate's router is mounted
const STATES = ["queued", "started", "retrying", "succeeded", "failed", "cancelled"];
const main = document.getElementById("main");
let session = { auth: false, admin: true, csrf: null, owner: null };
let closeLive = () => {};

function h(tag, attrs = {}, ...children) {
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

function when(iso, precise = false) {  // local time (to the ms if `precise`), UTC on hover
  if (!iso) return "";
  const at = new Date(iso);
  return h("time", { datetime: iso, title: at.toISOString().replace(".000Z", "Z") + " (UTC)" },
           (precise ? LOCAL_MS : LOCAL_TIME).format(at));
}

class Failure extends Error {
  constructor(status, body) { super(body?.error?.message || `HTTP ${status}`); this.status = status; this.body = body; }
}

async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(path, API);
  for (const [name, value] of Object.entries(query || {})) if (value) url.searchParams.set(name, value);
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const answer = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                    credentials: "same-origin" });
  const data = answer.status === 204 ? null : await answer.json().catch(() => null);
  if (answer.status === 401 && path !== "ui/session") { showLogin(); throw new Failure(401, data); }
  if (!answer.ok) throw new Failure(answer.status, data);
  return data;
}

function link(path, text, attrs = {}) {
  const url = new URL(path, BASE);
  return h("a", { href: url.pathname + url.search, "data-link": true, ...attrs }, text);
}

function go(path, replace = false) {
  const url = new URL(path, BASE);
  history[replace ? "replaceState" : "pushState"]({}, "", url.pathname + url.search);
  route();
}

document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[data-link]");
  if (!anchor || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(anchor.getAttribute("href"));
});
window.addEventListener("popstate", () => route());

let generation = 0;  // which page is shown: a page still loading when another opens gives up
const leaving = [];  // what to stop when the page changes (timers)

function leave() {  // the page shown is about to change
  generation += 1;
  for (const stop of leaving.splice(0)) stop();
}

function every(seconds, run) {  // run now and every `seconds` while this page is shown
  const mine = generation;
  let timer = 0;
  const tick = async () => {
    try { await run(); } catch (error) { /* shown by the next successful refresh */ }
    if (mine === generation) timer = setTimeout(tick, seconds * 1000);
  };
  leaving.push(() => clearTimeout(timer));
  tick();
}

// --- charts (SVG drawn here: no library) ----------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function minuteLabel(iso) { return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

// One bar per minute; `parts`: [[field, css class], ...] stacked; `describe(minute)` its tooltip.
function barChart(title, minutes, parts, describe) {
  const width = 300, height = 64, gap = 2, bar = width / minutes.length - gap;
  const totals = minutes.map((minute) => parts.reduce((sum, [field]) => sum + (minute[field] || 0), 0));
  const highest = Math.max(0, ...totals), top = highest || 1;
  const bars = minutes.map((minute, i) => {
    let y = height;
    const group = svg("g", {}, svg("title", {}, `${minuteLabel(minute.at)}: ${describe(minute)}`),
      svg("rect", { x: i * (bar + gap), y: 0, width: bar, height, class: "slot" }));
    for (const [field, css] of parts) {
      const tall = ((minute[field] || 0) / top) * (height - 2);
      if (!tall) continue;
      y -= tall;
      group.append(svg("rect", { x: i * (bar + gap), y, width: bar, height: tall, class: css }));
    }
    return group;
  });
  const last = minutes[minutes.length - 1];
  return h("figure", { class: "chart" },
    svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
                 "aria-label": `${title}, per minute${last ? `; now: ${describe(last)}` : ""}` }, ...bars,
        svg("rect", { x: 0, y: height - 1, width, height: 1, class: "axis" })),
    h("figcaption", {}, `${title} (highest ${Number(highest.toFixed(3))})`));
}

function throughputChart(minutes) {
  return barChart("Tasks ended per minute, last 15 min", minutes,
    [["succeeded", "bar-ok"], ["failed", "bar-bad"], ["cancelled", "bar-muted"]],
    (m) => `${m.succeeded} succeeded, ${m.failed} failed, ${m.cancelled} cancelled`);
}

function waitChart(minutes) {
  return barChart("Mean queue wait (s) of the tasks that ended, per minute", minutes, [["wait_avg", "bar-accent"]],
    (m) => (m.wait_avg === null ? "no task started" : `${m.wait_avg.toFixed(3)} s`));
}

function tile(label, value, css = "") {
  return h("div", { class: `tile ${css}` }, h("span", { class: "value" }, value === null ? "—" : String(value)),
           h("span", { class: "label" }, label));
}

// The summary strip: what waits and runs now, what ended in the last hour, throughput. Admins
// only when auth is on (it is the whole cluster's).
function summaryStrip() {  // returned hidden; `begin()` starts filling it
  const strip = h("section", { class: "summary", "aria-label": "Summary", hidden: true });
  strip.begin = () => every(5, async () => {
    let found;
    try { found = await api("summary"); } catch (error) { if (error.status === 403) return; throw error; }
    strip.hidden = false;
    strip.replaceChildren(tile("queued", found.queued), tile("delayed", found.delayed),
      tile("running", `${found.running} / ${found.concurrency}`), tile("failed, last hour", found.last_hour.failed,
        found.last_hour.failed ? "bad" : ""), tile("succeeded, last hour", found.last_hour.succeeded),
      throughputChart(found.minutes));
  });
  return strip;
}

function setMain(title, ...children) {
  closeLive();
  closeLive = () => {};
  document.title = `${title} · taskgate`;
  main.replaceChildren(h("h1", {}, title), ...children);
  main.focus({ preventScroll: true });
}

function stateCell(task) { return h("span", { class: `state state-${task.state}` }, task.state); }

function progressOf(task) {
  const percent = task.progress && typeof task.progress.percent === "number" ? task.progress.percent : null;
  if (percent === null) return task.state === "succeeded" ? h("progress", { max: 100, value: 100 }) : "";
  return h("progress", { max: 100, value: percent, "aria-label": `${Math.round(percent)} %` }, `${Math.round(percent)} %`);
}

// --- the task list -------------------------------------------------------------------------
const MAX_ROWS = 200;  // a live list keeps this many rows; older ones are a page away
const FILTERS = ["state", "name", "owner", "since", "until", "schedule_id", "cursor"];

function localInput(iso) {  // an ISO time as a datetime-local input's value, in the viewer's zone
  if (!iso) return "";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "";
  return new Date(at.getTime() - at.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function epochMs(iso) { const ms = Date.parse(iso ?? ""); return Number.isNaN(ms) ? 0 : ms; }

function taskRow(task, selected) {
  const box = h("input", { type: "checkbox", value: task.task_id, checked: selected.has(task.task_id),
                           "aria-label": `Select ${task.task_id}`,
                           onchange: () => (box.checked ? selected.add(task.task_id) : selected.delete(task.task_id)) });
  return h("tr", { "data-task": task.task_id, "data-created": epochMs(task.created_at), "data-seq": task.seq ?? 0 },
    h("td", {}, box),
    h("td", {}, stateCell(task)),
    h("td", {}, task.name),
    h("td", { class: "id" }, link(`tasks/${encodeURIComponent(task.task_id)}`, task.task_id)),
    session.admin ? h("td", { class: "optional" }, task.owner ?? "") : null,
    h("td", {}, when(task.created_at)),
    h("td", { class: "optional" }, progressOf(task)));
}

async function taskList() {
  const params = new URLSearchParams(location.search);
  const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || ""]));
  const stateSelect = h("select", { name: "state" }, h("option", { value: "" }, "any"),
    STATES.map((state) => h("option", { value: state, selected: state === filters.state }, state)));
  const inputs = {
    name: h("input", { name: "name", value: filters.name, placeholder: "task name", size: 12 }),
    owner: session.admin && session.auth ? h("input", { name: "owner", value: filters.owner, placeholder: "owner", size: 10 }) : null,
    since: h("input", { name: "since", type: "datetime-local", value: localInput(filters.since) }),
    until: h("input", { name: "until", type: "datetime-local", value: localInput(filters.until) }),
    schedule_id: h("input", { name: "schedule_id", value: filters.schedule_id, placeholder: "schedule id", size: 12 }),
  };
  const idInput = h("input", { name: "id", placeholder: "task id", size: 20, "aria-label": "Find a task by id" });
  const form = h("form", { class: "filters", role: "search", onsubmit: (event) => {
      event.preventDefault();
      if (idInput.value.trim()) return go(`tasks/${encodeURIComponent(idInput.value.trim())}`);
      const next = new URLSearchParams();
      if (stateSelect.value) next.set("state", stateSelect.value);
      for (const [name, input] of Object.entries(inputs)) {
        const value = input?.value.trim();
        if (!value) continue;
        next.set(name, input.type === "datetime-local" ? new Date(value).toISOString() : value);
      }
      go(`./${next.toString() ? "?" + next : ""}`);
    } },
    h("label", {}, "State", stateSelect), h("label", {}, "Task", inputs.name),
    inputs.owner ? h("label", {}, "Owner", inputs.owner) : null,
    h("label", {}, "Submitted from", inputs.since), h("label", {}, "to", inputs.until),
    h("label", {}, "Schedule", inputs.schedule_id), h("label", {}, "Id", idInput),
    h("button", { type: "submit" }, "Show"));
  const selected = new Set();
  const body = h("tbody");
  const message = h("p", { role: "status", class: "muted", id: "message" });
  const bulk = (action, verb, query = {}) => h("button", { type: "button", class: action === "cancel" ? "danger" : null,
    onclick: async () => {
      const ids = [...body.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);  // what is shown
      if (!ids.length) { message.textContent = "Select tasks first."; return; }
      try {
        const answer = await api(`tasks/${action}`, { method: "POST", body: { task_ids: ids }, query });
        const refused = answer.results.filter((item) => !item.ok);
        message.textContent = `${verb}: ${answer.results.length - refused.length} done` +
          (refused.length ? `, ${refused.length} refused (${[...new Set(refused.map((item) => item.error.message))].join("; ")})` : "");
        selected.clear();
        for (const box of body.querySelectorAll("input[type=checkbox]")) box.checked = false;
        everything.checked = false;
      } catch (error) { message.textContent = error.message; }
    } }, `${verb} selected`);
  const everything = h("input", { type: "checkbox", "aria-label": "Select all shown", onchange: () => {
    for (const box of body.querySelectorAll("input[type=checkbox]")) {
      box.checked = everything.checked;
      if (box.checked) selected.add(box.value); else selected.delete(box.value);
    }
  } });
  const table = h("div", { class: "table-wrap" }, h("table", { "aria-label": "Tasks, newest first" },
    h("thead", {}, h("tr", {}, h("th", {}, everything), h("th", {}, "State"), h("th", {}, "Task"), h("th", {}, "Id"),
      session.admin ? h("th", { class: "optional" }, "Owner") : null, h("th", {}, "Submitted"),
      h("th", { class: "optional" }, "Progress"))), body));
  const pager = h("div", { class: "pager" });
  const live = h("p", { class: "muted", id: "live", "aria-live": "polite" }, "");
  const actions = h("div", { class: "actions" }, bulk("cancel", "Cancel"), bulk("replay", "Replay"));
  const strip = session.admin ? summaryStrip() : null;
  setMain("Tasks", strip, form, actions, message, live, table, pager);
  const mine = generation;
  const rows = new Map();
  let queued = [];
  let frame = 0;
  let drawn = false;
  let older = null;  // the Older link, moved when the live list drops its oldest rows
  const shown = (task) => (!filters.state || task.state === filters.state)
    && (!filters.owner || (task.owner ?? "anonymous") === filters.owner)
    && (!filters.schedule_id || task.schedule_id === filters.schedule_id)
    && (!filters.since || epochMs(task.created_at) >= epochMs(filters.since))
    && (!filters.until || epochMs(task.created_at) < epochMs(filters.until));
  function follow() {  // the feed, open and live; changes wait in `queued` until the page is drawn
    return new Promise((ready) => {
      // no state filter on the feed: a task that leaves the state comes too, and its row goes
      const source = new EventSource(new URL(`events?${new URLSearchParams(filters.name ? { name: filters.name } : {})}`, API),
                                     { withCredentials: true });
      closeLive = () => source.close();
      if (mine !== generation) source.close();
      source.addEventListener("tasks", (event) => {
        queued.push(...JSON.parse(event.data));
        live.textContent = "Live";
        ready();
        if (drawn && !frame) frame = requestAnimationFrame(draw);
      });
      source.addEventListener("error", () => { live.textContent = "Reconnecting…"; ready(); });
    });
  }
  function draw() {  // one DOM update per frame, however many changes
    frame = 0;
    // oldest first, so that prepending leaves the newest on top
    const batch = queued.sort((a, b) => epochMs(a.created_at) - epochMs(b.created_at)); queued = [];
    for (const task of batch) {
      const old = rows.get(task.task_id);
      if (old && Number(old.dataset.seq) > (task.seq ?? 0)) continue;  // what is shown is later
      // (a schedule's run is published before it is marked as one: it shows once it starts)
      if (!shown(task)) { old?.remove(); rows.delete(task.task_id); selected.delete(task.task_id); continue; }
      const fresh = taskRow(task, selected);
      if (old) old.replaceWith(fresh);
      else if (place(fresh, epochMs(task.created_at))) body.querySelector("tr.empty")?.remove();
      else continue;
      rows.set(task.task_id, fresh);
    }
    while (rows.size > MAX_ROWS) {  // the oldest rows go; Older starts from the oldest kept
      const last = body.lastElementChild;
      rows.delete(last.dataset.task);
      selected.delete(last.dataset.task);
      last.remove();
      const created = Number(body.lastElementChild?.dataset.created);
      if (created) olderFrom((created / 1000).toFixed(3));
    }
  }
  function place(row, created) {  // in order of submission; false: older than every row shown
    const first = body.querySelector("tr[data-task]");
    if (!first || Number(first.dataset.created) <= created) { body.prepend(row); return true; }
    for (const other of body.querySelectorAll("tr[data-task]")) {
      if (Number(other.dataset.created) <= created) { other.before(row); return true; }
    }
    if (older) return false;  // it belongs to an older page
    body.append(row);
    return true;
  }
  function olderFrom(cursor) {
    const next = new URLSearchParams(params); next.set("cursor", cursor);
    const fresh = link(`./?${next}`, "Older");
    if (older) older.replaceWith(fresh); else pager.append(fresh);
    older = fresh;
  }

  const follows = !filters.cursor && !filters.until;  // a page that new tasks can join
  const query = { ...Object.fromEntries(FILTERS.map((name) => [name, filters[name]])), limit: 50 };
  // The feed and the first page are asked for at once. A page read before the feed was live may
  // miss a change made in between: once live, the first page is read again and merged (by seq,
  // so no row goes back to an older view).
  const live_ = follows ? follow() : null;
  if (!follows) live.textContent = filters.cursor ? "" : "Not live while the time range has an end.";
  const page = await api("tasks", { query });
  if (mine !== generation) return;
  for (const task of page.tasks) { const row = taskRow(task, selected); rows.set(task.task_id, row); body.append(row); }
  if (!page.tasks.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: 7, class: "muted" }, "No tasks.")));
  if (filters.cursor) {
    const newest = new URLSearchParams(params); newest.delete("cursor");
    pager.append(link(`./${newest.toString() ? "?" + newest : ""}`, "Newest"));
  }
  if (page.next_cursor) olderFrom(page.next_cursor);
  drawn = true;
  strip?.begin();  // after the rows: the list comes first
  if (queued.length) frame = requestAnimationFrame(draw);
  if (!live_) return;
  await live_;
  if (mine !== generation) return;
  let again;
  try { again = await api("tasks", { query }); } catch { return; }  // the feed goes on; a reload reads again
  if (mine !== generation) return;
  // a row of the first read that the second, over the same span, no longer holds has left the
  // filter meanwhile (unless the feed has changed it since)
  const held = new Set(again.tasks.map((task) => task.task_id));
  // (the span: down to the oldest task the second read holds; all of it when it is the whole list)
  const span = again.next_cursor ? (again.tasks.length ? epochMs(again.tasks[again.tasks.length - 1].created_at) : Infinity) : 0;
  for (const task of page.tasks) {
    const row = rows.get(task.task_id);
    if (!held.has(task.task_id) && row && Number(row.dataset.created) >= span && Number(row.dataset.seq) === (task.seq ?? 0)) {
      row.remove(); rows.delete(task.task_id); selected.delete(task.task_id);
    }
  }
  queued.push(...again.tasks);
  if (!frame) frame = requestAnimationFrame(draw);
}

// --- one task ------------------------------------------------------------------------------
function json(value) { return h("pre", {}, JSON.stringify(value, null, 2)); }

function detailList(task) {
  const rows = [
    ["State", stateCell(task)], ["Task", task.name], ["Id", task.task_id], ["Owner", task.owner ?? "—"],
    ["Progress", progressOf(task) || "—"], ["Attempts", String(task.attempts)], ["Worker", task.worker ?? "—"],
    ["Submitted", when(task.created_at) || "—"], ["Started", when(task.started_at) || "—"],
    ["Finished", when(task.finished_at) || "—"],
    ["Arguments", task.arguments ? json(task.arguments) : "—"],
    ["Result", task.state === "succeeded" ? json(task.result) : "—"],
    ["Error", task.error ? h("div", { class: "error" }, `${task.error.type}: ${task.error.message}`) : "—"],
  ];
  if (task.deliveries > 1) rows.push(["Deliveries", `${task.deliveries} (its worker died running it)`]);
  if (task.next_attempt_at) rows.push(["Next attempt", when(task.next_attempt_at)]);
  if (task.replay_of) rows.push(["Replays", link(`tasks/${encodeURIComponent(task.replay_of)}`, task.replay_of)]);
  if (task.schedule_id) {
    rows.push(["Schedule", h("span", {}, h("span", { class: "id" }, task.schedule_id), " (",
      link(`./?${new URLSearchParams({ schedule_id: task.schedule_id })}`, "its runs"), ", ", link("schedules", "schedules"), ")")]);
  }
  if (task.tick) rows.push(["Tick", when(task.tick)]);
  if (task.timeline?.length) rows.push(["Timeline", timeline(task.timeline)]);
  return h("dl", { id: "task" }, rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function timeline(entries) {  // the states it entered, oldest first
  return h("ol", { class: "timeline", "aria-label": "Timeline" }, entries.map((entry) => h("li", {},
    h("span", { class: `change state-${entry.state}` }, entry.state), " ", when(entry.at, true),
    entry.attempt ? h("span", { class: "muted" }, ` attempt ${entry.attempt}`) : null,
    entry.worker ? h("span", { class: "muted" }, ` on ${entry.worker}`) : null)));
}

async function taskDetail(taskId) {
  const message = h("p", { role: "status", class: "muted" });
  const holder = h("div");
  const act = (label, run, danger = false) => h("button", { type: "button", class: danger ? "danger" : null,
    onclick: async () => { try { await run(); } catch (error) { message.textContent = error.message; } } }, label);
  const actions = h("div", { class: "actions" },
    act("Cancel", () => api(`tasks/${encodeURIComponent(taskId)}/cancel`, { method: "POST" }).then(show)),
    act("Terminate", () => api(`tasks/${encodeURIComponent(taskId)}/cancel`, { method: "POST", query: { terminate: "true" } }).then(show), true),
    act("Replay", async () => { const made = await api(`tasks/${encodeURIComponent(taskId)}/replay`, { method: "POST" }); go(`tasks/${encodeURIComponent(made.task_id)}`); }),
    act("Delete", async () => { await api(`tasks/${encodeURIComponent(taskId)}`, { method: "DELETE" }); go("./"); }, true));
  function show(task) { holder.replaceChildren(detailList(task)); message.textContent = ""; }
  setMain(`Task ${taskId}`, h("p", {}, link("./", "← All tasks")), actions, message, holder);
  try {
    show(await api(`tasks/${encodeURIComponent(taskId)}`));
  } catch (error) {
    if (error.status === 404) { holder.replaceChildren(h("p", { class: "error" }, error.message)); actions.remove(); return; }
    throw error;
  }
  const source = new EventSource(new URL(`tasks/${encodeURIComponent(taskId)}/events`, API), { withCredentials: true });
  for (const kind of ["state", "progress"]) source.addEventListener(kind, (event) => show(JSON.parse(event.data)));
  source.addEventListener("error", () => source.close());  // it ends with the task: nothing to follow
  closeLive = () => source.close();
}

// --- dead letters --------------------------------------------------------------------------
async function deadLetters() {
  const message = h("p", { role: "status", class: "muted", id: "message" });
  const body = h("tbody");
  const chosen = () => [...body.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);
  const report = (action, results) => {
    const failed = results.filter((item) => !item.ok);
    message.textContent = `${action}: ${results.length - failed.length} done` +
      (failed.length ? `, ${failed.length} refused (${failed.map((item) => item.error.message).join("; ")})` : "");
  };
  const bulk = (action, verb) => h("button", { type: "button", onclick: async () => {
      const ids = chosen();
      if (!ids.length) { message.textContent = "Select dead letters first."; return; }
      try { const answer = await api(`dead-letters/${action}`, { method: "POST", body: { task_ids: ids } });
            report(verb, answer.results); await fill(); }
      catch (error) { message.textContent = error.message; }
    } }, `${verb} selected`);
  async function fill() {
    const page = await api("dead-letters", { query: { limit: 100 } });
    body.replaceChildren(...page.dead_letters.map((letter) => h("tr", { "data-task": letter.task_id },
      h("td", {}, h("input", { type: "checkbox", value: letter.task_id, "aria-label": `Select ${letter.task_id}` })),
      h("td", { class: "id" }, link(`tasks/${encodeURIComponent(letter.task_id)}`, letter.task_id)),
      h("td", {}, letter.name), h("td", {}, letter.reason), h("td", {}, String(letter.attempts)),
      h("td", {}, when(letter.dead_at)),
      h("td", { class: "error optional" }, letter.error ? `${letter.error.type}: ${letter.error.message}` : ""))));
    if (!page.dead_letters.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No dead letters.")));
  }
  setMain("Dead letters", h("div", { class: "actions" }, bulk("requeue", "Requeue"), bulk("drop", "Drop")), message,
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Dead letters, newest first" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "Id"), h("th", {}, "Task"), h("th", {}, "Why"),
        h("th", {}, "Attempts"), h("th", {}, "Dead since"), h("th", { class: "optional" }, "Last error"))), body)));
  await fill();
}

// --- schedules -----------------------------------------------------------------------------
async function schedules() {
  const message = h("p", { role: "status", class: "muted", id: "message" });
  const body = h("tbody");
  const act = (label, run) => h("button", { type: "button", onclick: async () => {
      try { await run(); await fill(); } catch (error) { message.textContent = error.message; } } }, label);
  async function fill() {
    const page = await api("schedules", { query: { limit: 500 } });
    body.replaceChildren(...page.schedules.map((one) => {
      const id = encodeURIComponent(one.schedule_id);
      return h("tr", { "data-schedule": one.schedule_id },
        h("td", {}, one.name ?? ""), h("td", {}, one.task ?? ""),
        h("td", {}, one.cron ? `cron ${one.cron} (${one.timezone})` : `every ${one.every} s`),
        h("td", { class: "state" }, one.enabled ? "active" : "paused"),
        h("td", {}, when(one.next_run_at) || "—"), h("td", { class: "optional" }, when(one.last_run_at) || "—"),
        h("td", { class: "optional" }, one.last_task_id ? link(`tasks/${encodeURIComponent(one.last_task_id)}`, "last run") : "",
          " ", link(`./?${new URLSearchParams({ schedule_id: one.schedule_id })}`, "runs")),
        h("td", { class: "error" }, one.problem ?? ""),
        h("td", {}, one.enabled ? act("Pause", () => api(`schedules/${id}/pause`, { method: "POST" }))
                                : act("Resume", () => api(`schedules/${id}/resume`, { method: "POST" })),
          " ", act("Run now", async () => {
            const run = await api(`schedules/${id}/run`, { method: "POST" });
            message.replaceChildren("Queued ", link(`tasks/${encodeURIComponent(run.task_id)}`, run.task_id));
          })));
    }));
    if (!page.schedules.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No schedules.")));
  }
  setMain("Schedules", message, h("div", { class: "table-wrap" }, h("table", { "aria-label": "Schedules" },
    h("thead", {}, h("tr", {}, ["Name", "Task", "Timing", "State", "Next run"].map((name) => h("th", {}, name)),
      h("th", { class: "optional" }, "Last run"), h("th", { class: "optional" }, ""), h("th", {}, "Problem"),
      h("th", {}, "Actions"))), body)));
  await fill();
}

// --- queues --------------------------------------------------------------------------------
function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  return h("time", { datetime: iso, title: new Date(iso).toISOString() + " (UTC)" }, `${seconds} s ago`);
}

async function queues() {
  const body = h("tbody");
  const workerBody = h("tbody");
  const charts = h("section", { class: "summary", "aria-label": "Summary" });
  setMain("Queues and workers", charts,
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Queues" },
      h("thead", {}, h("tr", {}, ["Queue", "Waiting", "Live workers", "Lacking tasks"].map((name) => h("th", {}, name)))),
      body)),
    h("h2", {}, "Workers"),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Workers" },
      h("thead", {}, h("tr", {}, ["Worker", "Queues", "Concurrency", "Running", "Tasks", "Last heartbeat"]
        .map((name) => h("th", {}, name)))), workerBody)));
  const problem = h("p", { class: "error", role: "status" });
  main.insertBefore(problem, charts);
  const refuse = (error) => {
    if (error.status !== 403) { problem.textContent = `Not refreshed: ${error.message}`; return null; }
    charts.replaceChildren();
    body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "error" }, "This page needs an admin key.")));
    return null;
  };
  every(5, async () => {
    const [found, workers, summary] = await Promise.all([api("queues"), api("workers"), api("summary")]).catch(refuse) ?? [];
    if (!found) return;
    problem.textContent = "";
    charts.replaceChildren(tile("delayed", summary.delayed), tile("running", `${summary.running} / ${summary.concurrency}`),
      tile("dead letters", summary.dead_letters), throughputChart(summary.minutes), waitChart(summary.minutes));
    body.replaceChildren(...found.map((queue) => h("tr", { "data-queue": queue.name },
      h("td", {}, queue.name), h("td", {}, queue.depth === null ? "—" : String(queue.depth)),
      h("td", {}, queue.workers.length ? queue.workers.join(", ") : h("span", { class: "error" }, "none")),
      h("td", { class: "error" }, Object.entries(queue.lacking).map(([worker, names]) => `${worker}: ${names.join(", ")}`).join("; ")))));
    workerBody.replaceChildren(...workers.map((worker) => h("tr", { "data-worker": worker.name },
      h("td", {}, worker.name), h("td", {}, worker.queues.join(", ")), h("td", {}, String(worker.concurrency)),
      h("td", {}, String(worker.active)), h("td", {}, String(worker.tasks)), h("td", {}, ago(worker.last_heartbeat)))));
    if (!workers.length) workerBody.append(h("tr", {}, h("td", { colspan: 6, class: "error" }, "No live worker.")));
  });
}

// --- submitting a task ---------------------------------------------------------------------
function fieldFor(name, schema, required) {
  const type = schema.type ?? (schema.anyOf ? "any" : "string");
  const id = `field-${name}`;
  let input;
  if (type === "boolean") input = h("input", { type: "checkbox", id, name, checked: schema.default === true });
  else if (schema.enum) input = h("select", { id, name }, required ? null : h("option", { value: "" }, ""),
    schema.enum.map((value) => h("option", { value, selected: value === schema.default }, value)));
  else if (type === "integer" || type === "number" || type === "string") {
    input = h("input", { id, name, inputmode: type === "string" ? null : "decimal", size: 30,
                         value: schema.default ?? "", required: required || null });
  } else input = h("textarea", { id, name, rows: 3, cols: 40, placeholder: "JSON" },
                   schema.default === undefined ? "" : JSON.stringify(schema.default));
  const error = h("span", { class: "error", id: `${id}-error`, "aria-live": "polite" });
  input.setAttribute("aria-describedby", error.id);
  const read = () => {
    if (type === "boolean") return input.checked;
    const text = input.value;
    if (text === "") return undefined;
    if (type === "integer" || type === "number") return text.trim() !== "" && !Number.isNaN(Number(text)) ? Number(text) : text;
    if (type === "string" || schema.enum) return text;
    try { return JSON.parse(text); } catch { return text; }  // the API says what is wrong with it
  };
  const label = h("label", { for: id }, `${schema.title ?? name}${required ? " *" : ""}`, input, error);
  return { name, label, read, error };
}

async function submitPage(name) {
  const catalogue = await api("tasks/catalogue");
  const chooser = h("nav", { "aria-label": "Tasks" }, catalogue.flatMap((task) => [link(`submit/${encodeURIComponent(task.name)}`, task.name), " "]));
  const task = catalogue.find((entry) => entry.name === name);
  if (!task) return setMain("Submit a task", h("p", {}, "Choose a task:"), chooser);
  const schema = task.arguments;
  const required = new Set(schema.required ?? []);
  const fields = Object.entries(schema.properties ?? {}).map(([field, spec]) => fieldFor(field, spec, required.has(field)));
  const problem = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "submit", onsubmit: async (event) => {
      event.preventDefault();
      problem.textContent = "";
      for (const field of fields) field.error.textContent = "";
      const body = {};
      for (const field of fields) { const value = field.read(); if (value !== undefined) body[field.name] = value; }
      try {
        const made = await api(`tasks/${encodeURIComponent(name)}`, { method: "POST", body });
        go(`tasks/${encodeURIComponent(made.task_id)}`);
      } catch (error) {
        const unplaced = [];
        for (const part of (error.message || "").split("; ")) {  // "body field 'x': what is wrong"
          const match = /^body field '([^'.]+)[^']*': (.*)$/.exec(part);
          const field = match && fields.find((one) => one.name === match[1]);
          if (field) field.error.textContent = match[2]; else unplaced.push(part);
        }
        problem.textContent = unplaced.join("; ");
      }
    } }, fields.map((field) => field.label), h("button", { type: "submit" }, "Submit"));
  setMain(`Submit ${name}`, chooser, h("p", { class: "muted" }, task.summary), form, problem);
}

// --- logging in ----------------------------------------------------------------------------
function showLogin(problem = "") {
  leave();
  const key = h("input", { type: "password", name: "key", autocomplete: "off", required: true, size: 40 });
  const error = h("p", { class: "error", role: "alert" }, problem);
  const form = h("form", { class: "filters", onsubmit: async (event) => {
      event.preventDefault();
      try {
        session = await api("ui/session", { method: "POST", body: { key: key.value } });
        key.value = "";
        whoami(); route();
      } catch (failure) { error.textContent = failure.status === 401 ? "That key is invalid or revoked." : failure.message; }
    } }, h("label", {}, "API key", key), h("button", { type: "submit" }, "Log in"));
  setMain("Log in", h("p", { class: "muted" }, "Your API key is exchanged for a session; the page does not keep it."), form, error);
  key.focus();
}

function whoami() {
  document.getElementById("who").textContent = session.auth && session.owner ? `${session.owner}${session.admin ? " (admin)" : ""}` : "";
  document.getElementById("logout").hidden = !(session.auth && session.owner);
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("ui/session", { method: "DELETE" });
  } catch (error) {  // the session may still be open on the server: say so, stay logged in
    main.prepend(h("p", { class: "error", role: "alert" }, `Not logged out: ${error.message}`));
    return;
  }
  session = { auth: true, admin: false, csrf: null, owner: null };
  whoami(); showLogin();
});

async function route() {
  leave();
  const mine = generation;
  const path = location.pathname.slice(BASE.pathname.length);
  try {
    if (session.auth && !session.owner) return showLogin();
    if (path.startsWith("tasks/")) return await taskDetail(decodeURIComponent(path.slice(6)));
    if (path === "dead-letters") return await deadLetters();
    if (path === "schedules") return await schedules();
    if (path === "queues") return await queues();
    if (path === "submit" || path.startsWith("submit/")) return await submitPage(decodeURIComponent(path.slice(7)));
    return await taskList();
  } catch (error) {
    if (error.status !== 401 && mine === generation) {
      main.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "error" }, error.message));
    }
  }
}

// the page comes with its session (GET /ui/session's answer); asked for when it does not
const given = document.querySelector("meta[name=taskgate-session]")?.content;
session = given ? JSON.parse(given) : null;
// a page opened from another site's link comes without the (SameSite=Strict) cookie: ask again
if (!session || (session.auth && !session.owner)) {
  session = await api("ui/session").catch(() => session ?? { auth: false, admin: true, csrf: null, owner: null });
}
whoami();
route();
