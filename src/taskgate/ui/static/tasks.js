// The task list (live, filtered, paged, with bulk actions) and one task's page.
import { API, STATES, me, view, h, when, api, link, go, every, setMain, stateCell, progressOf, epochMs, json } from "./core.js";
import { summaryStrip } from "./charts.js";

// --- the task list -------------------------------------------------------------------------
const MAX_ROWS = 200;  // a live list keeps this many rows; older ones are a page away
const FILTERS = ["state", "name", "owner", "since", "until", "schedule_id", "cursor"];

function localInput(iso) {  // an ISO time as a datetime-local input's value, in the viewer's zone
  if (!iso) return "";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "";
  return new Date(at.getTime() - at.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

// A row redrawn under the keyboard keeps its focus (the checkbox or the link focused in it):
// a key pressed next acts on the same task, not on the page.
function replaceKeepingFocus(old, fresh) {
  const focused = old.contains(document.activeElement) ? document.activeElement : null;
  old.replaceWith(fresh);
  if (focused) fresh.querySelector(focused.matches("input") ? "input" : "a")?.focus();
}

function taskRow(task, selected) {
  const box = h("input", { type: "checkbox", value: task.task_id, checked: selected.has(task.task_id),
                           "aria-label": `Select ${task.task_id}`,
                           onchange: () => (box.checked ? selected.add(task.task_id) : selected.delete(task.task_id)) });
  return h("tr", { "data-task": task.task_id, "data-created": epochMs(task.created_at), "data-seq": task.seq ?? 0 },
    h("td", {}, box),
    h("td", {}, stateCell(task)),
    h("td", {}, task.name),
    h("td", { class: "id" }, link(`tasks/${encodeURIComponent(task.task_id)}`, task.task_id)),
    me.admin ? h("td", { class: "optional" }, task.owner ?? "") : null,
    h("td", {}, when(task.created_at)),
    h("td", { class: "optional" }, progressOf(task)));
}

export async function taskList() {
  const params = new URLSearchParams(location.search);
  const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || ""]));
  const stateSelect = h("select", { name: "state" }, h("option", { value: "" }, "any"),
    STATES.map((state) => h("option", { value: state, selected: state === filters.state }, state)));
  const inputs = {
    name: h("input", { name: "name", value: filters.name, placeholder: "task name", size: 12 }),
    owner: me.admin && me.auth ? h("input", { name: "owner", value: filters.owner, placeholder: "owner", size: 10 }) : null,
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
      me.admin ? h("th", { class: "optional" }, "Owner") : null, h("th", {}, "Submitted"),
      h("th", { class: "optional" }, "Progress"))), body));
  const pager = h("div", { class: "pager" });
  const live = h("p", { class: "muted", id: "live", "aria-live": "polite" }, "");
  const actions = h("div", { class: "actions" }, bulk("cancel", "Cancel"), bulk("replay", "Replay"));
  const strip = me.admin ? summaryStrip() : null;
  setMain("Tasks", strip, form, actions, message, live, table, pager);
  const mine = view.generation;
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
      view.close = () => source.close();
      if (mine !== view.generation) source.close();
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
      if (old) replaceKeepingFocus(old, fresh);
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
  if (mine !== view.generation) return;
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
  if (mine !== view.generation) return;
  let again;
  try { again = await api("tasks", { query }); } catch { return; }  // the feed goes on; a reload reads again
  if (mine !== view.generation) return;
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
  if (task.trace_id) rows.push(["Trace", traceOf(task.trace_id)]);
  if (task.deliveries > 1) rows.push(["Deliveries", `${task.deliveries} (its worker died running it)`]);
  if (task.next_attempt_at) rows.push(["Next attempt", when(task.next_attempt_at)]);
  if (task.expires_at) rows.push(["Expires", when(task.expires_at)]);
  if (task.cancel_requested_at) rows.push(["Cancel asked", cancelAsked(task)]);
  if (task.replay_of) rows.push(["Replays", link(`tasks/${encodeURIComponent(task.replay_of)}`, task.replay_of)]);
  if (task.schedule_id) {
    rows.push(["Schedule", h("span", {}, h("span", { class: "id" }, task.schedule_id), " (",
      link(`./?${new URLSearchParams({ schedule_id: task.schedule_id })}`, "its runs"), ", ", link("schedules", "schedules"), ")")]);
  }
  if (task.workflow_id) {
    rows.push(["Workflow", h("span", {}, link(`workflows/${encodeURIComponent(task.workflow_id)}`, task.workflow_id),
      task.node ? ` node ${task.node}${task.item !== null && task.item !== undefined ? `, item ${task.item}` : ""}` : "")]);
  }
  if (task.skipped) rows.push(["Skipped", task.skipped]);
  if (task.tick) rows.push(["Tick", when(task.tick)]);
  if (task.timeline?.length) rows.push(["Timeline", timeline(task.timeline)]);
  return h("dl", { id: "task" }, rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function traceOf(traceId) {  // its OpenTelemetry trace id, linked through TASKGATE_TRACE_URL when set
  if (!me.trace_url) return h("span", { class: "id", id: "trace" }, traceId);
  return h("a", { href: me.trace_url.replaceAll("{trace_id}", encodeURIComponent(traceId)), id: "trace",
                  class: "id", rel: "noreferrer" }, traceId);
}

function cancelAsked(task) {  // when cancel was asked, and what came of it
  const outcome = task.state === "cancelled" ? null : ["succeeded", "failed"].includes(task.state)
    ? " — it did not check for cancel and ran to its end" : " — it stops when it next checks; Terminate stops it now";
  return h("span", { id: "cancel-asked" }, when(task.cancel_requested_at, true), outcome && h("span", { class: "muted" }, outcome));
}

function timeline(entries) {  // the states it entered, oldest first
  return h("ol", { class: "timeline", "aria-label": "Timeline" }, entries.map((entry) => h("li", {},
    h("span", { class: `change state-${entry.state}` }, entry.state), " ", when(entry.at, true),
    entry.attempt ? h("span", { class: "muted" }, ` attempt ${entry.attempt}`) : null,
    entry.worker ? h("span", { class: "muted" }, ` on ${entry.worker}`) : null)));
}

export async function taskDetail(taskId) {
  const message = h("p", { role: "status", class: "muted" });
  const holder = h("div");
  const act = (label, run, danger = false) => h("button", { type: "button", class: danger ? "danger" : null,
    onclick: async () => { try { await run(); } catch (error) { message.textContent = error.message; } } }, label);
  const cancel = act("Cancel", () => api(`tasks/${encodeURIComponent(taskId)}/cancel`, { method: "POST" }).then(show));
  const terminate = act("Terminate", () => api(`tasks/${encodeURIComponent(taskId)}/cancel`, { method: "POST", query: { terminate: "true" } }).then(show), true);
  const actions = h("div", { class: "actions" }, cancel, terminate,
    act("Replay", async () => { const made = await api(`tasks/${encodeURIComponent(taskId)}/replay`, { method: "POST" }); go(`tasks/${encodeURIComponent(made.task_id)}`); }),
    act("Delete", async () => { await api(`tasks/${encodeURIComponent(taskId)}`, { method: "DELETE" }); go("./"); }, true));
  function show(task) {
    holder.replaceChildren(detailList(task));
    message.textContent = "";
    const ended = ["succeeded", "failed", "cancelled", "expired"].includes(task.state);
    for (const button of [cancel, terminate]) {  // an ended task has nothing left to cancel
      button.disabled = ended;
      button.title = ended ? `It ended ${task.state}: nothing to cancel` : "";
    }
  }
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
  view.close = () => source.close();
}
