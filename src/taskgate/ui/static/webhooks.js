// Webhooks: the caller's subscriptions (a form to add one; enable, disable, rotate the secret,
// send a test event, delete) and one subscription's page with its deliveries, read again every
// few seconds while it is open (a delivery changes at most a few times a minute; no stream).
// A secret is shown once, after creation or rotation: the API never returns it again.
import { main, me, view, h, when, api, link, go, every, setMain } from "./core.js";

const EVENTS = ["task.succeeded", "task.failed", "task.cancelled", "task.expired", "task.*",
                "workflow.succeeded", "workflow.failed", "workflow.cancelled", "workflow.*"];
const REFRESH = 3;         // seconds between two reads of a subscription's page
const DELIVERIES = 100;    // the newest deliveries its page shows

const webhookPath = (id) => `webhooks/${encodeURIComponent(id)}`;

function stateOf(sub) {  // enabled, or disabled and why
  if (sub.enabled) return h("span", { class: "state state-enabled" }, "enabled");
  return h("span", {}, h("span", { class: "state state-disabled" }, "disabled"),
    sub.disabled_reason ? h("span", { class: "reason" }, `: ${sub.disabled_reason}`) : null);
}

const tasksOf = (sub) => (sub.tasks === null || sub.tasks === undefined ? h("span", { class: "muted" }, "every task") : sub.tasks.join(", "));

// Redraws what `within` holds; the link or button the keyboard was on there keeps its place.
function keepingFocus(within, redraw) {
  const controls = () => [...within.querySelectorAll("a, button")];
  const at = controls().indexOf(document.activeElement);
  redraw();
  if (at >= 0) { const now = controls(); now[Math.min(at, now.length - 1)]?.focus(); }
}

// A secret, shown this once, with what to do with it.
function showSecret(holder, made, rotated) {
  const value = h("input", { id: "secret", readonly: true, value: made.secret, size: 56, "aria-label": "Secret",
                             onfocus: () => value.select() });
  const copied = h("span", { class: "muted", "aria-live": "polite" });
  const copy = h("button", { type: "button", onclick: async () => {
      try { await navigator.clipboard.writeText(made.secret); copied.textContent = "Copied."; }
      catch { value.focus(); copied.textContent = "Selected: press Ctrl+C (or ⌘C) to copy it."; }
    } }, "Copy");
  const until = made.previous_secret_valid_until;
  holder.replaceChildren(h("section", { class: "secret", "aria-label": "New secret" },
    h("p", {}, h("strong", {}, "Copy it now: "), "this secret is shown only once. ",
      `Receivers verify each delivery's webhook-signature with it (Standard Webhooks). Secret of ${made.url}:`),
    h("div", { class: "actions" }, value, copy, copied,
      h("button", { type: "button", onclick: () => holder.replaceChildren() }, "I have copied it")),
    rotated && until ? h("p", { class: "muted" }, "Deliveries are signed with the previous secret too until ", when(until), ".") : null));
  value.focus();
}

// The buttons acting on one subscription; `changed(sub)` after a change, `deleted()` after delete,
// `tested()` after a test event (when shown on the subscription's page, which then lists it).
function controls(sub, { message, secret, changed, deleted, tested }) {
  const path = webhookPath(sub.id);
  const act = (label, run, attrs = {}) => h("button", { type: "button", ...attrs, onclick: async () => {
      message.textContent = "";
      try { await run(); } catch (error) { message.textContent = error.message; }
    } }, label);
  const test = act("Send test event", async () => {
    await api(`${path}/test`, { method: "POST" });
    if (tested) { message.textContent = "Test event queued: its delivery is listed below."; await tested(); }
    else message.replaceChildren("Test event queued: its delivery shows on ", link(path, "the subscription's page"), ".");
  });
  const toggle = act(sub.enabled ? "Disable" : "Enable",
    async () => changed(await api(path, { method: "PATCH", body: { enabled: !sub.enabled } })));
  const rotate = act("Rotate secret", async () => showSecret(secret, await api(`${path}/rotate-secret`, { method: "POST" }), true));
  const holder = h("span", { class: "confirm" });
  const ask = act("Delete", () => {
    holder.replaceChildren(h("span", {}, "Delete it? Deliveries not yet sent are dropped. "),
      act("Yes, delete", async () => { await api(path, { method: "DELETE" }); deleted(); }, { class: "danger" }),
      act("Keep it", () => { holder.replaceChildren(ask); ask.focus(); }));
    holder.querySelector("button").focus();
  }, { class: "danger" });
  holder.append(ask);
  return h("span", { class: "controls" }, test, " ", toggle, " ", rotate, " ", holder);
}

// --- adding one ----------------------------------------------------------------------------
function field(name, label, input) {
  const error = h("span", { class: "error", id: `webhook-${name}-error`, "aria-live": "polite" });
  input.setAttribute("aria-describedby", error.id);
  return { name, error, label: h("label", {}, label, input, error) };
}

function addForm(done) {
  const url = h("input", { name: "url", type: "url", size: 50, required: true, placeholder: "https://example.com/hooks/taskgate" });
  const boxes = EVENTS.map((event) => h("input", { type: "checkbox", name: "events", value: event, checked: event === "task.failed" }));
  const tasks = h("input", { name: "tasks", size: 40, placeholder: "every task" });
  const description = h("input", { name: "description", size: 50, maxlength: 500 });
  const everyone = me.admin ? h("input", { type: "checkbox", name: "all" }) : null;
  const eventError = h("span", { class: "error", id: "webhook-events-error", "aria-live": "polite" });
  const fields = [field("url", "URL *", url), field("tasks", "Only runs of these tasks (names, comma-separated)", tasks),
                  field("description", "Description", description)];
  fields.push({ name: "events", error: eventError });
  const problem = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "submit", novalidate: true, "aria-label": "Add a webhook", onsubmit: async (event) => {
      event.preventDefault();
      problem.textContent = "";
      for (const one of fields) one.error.textContent = "";
      const names = tasks.value.split(",").map((name) => name.trim()).filter(Boolean);
      const body = { url: url.value.trim(), events: boxes.filter((box) => box.checked).map((box) => box.value),
                     tasks: names.length ? names : null, description: description.value };
      if (everyone?.checked) body.all = true;
      try {
        const made = await api("webhooks", { method: "POST", body });
        form.reset();
        done(made);
      } catch (error) {
        const found = error.body?.error?.errors;  // each bad field: {loc: ["body", "url"], msg}
        if (!Array.isArray(found)) { problem.textContent = error.message; return; }
        const unplaced = [];
        for (const one of found) {
          const placed = one.loc[0] === "body" && fields.find((each) => each.name === one.loc[1]);
          if (placed) placed.error.textContent = one.msg;
          else unplaced.push(`${one.loc.slice(1).join(".") || one.loc[0]}: ${one.msg}`);
        }
        problem.textContent = unplaced.join("; ");
      }
    } },
    fields[0].label,
    h("fieldset", { class: "events", "aria-describedby": eventError.id }, h("legend", {}, "Events *"),
      boxes.map((box) => h("label", { class: "check" }, box, box.value)), eventError),
    fields[1].label, fields[2].label,
    everyone ? h("label", { class: "check" }, everyone, "Every owner's runs and workflows (admin)") : null,
    h("button", { type: "submit" }, "Add webhook"));
  return h("div", {}, form, problem);
}

// --- the list ------------------------------------------------------------------------------
export async function webhookList() {
  const message = h("p", { role: "status", class: "muted", id: "message" });
  const secret = h("div", { id: "secret-box" });
  const body = h("tbody");
  const head = ["URL", "Description", "Events", "Tasks", "State", "Failing since"];
  const owners = me.auth && me.admin;  // an admin key sees every owner's
  const table = h("div", { class: "table-wrap" }, h("table", { "aria-label": "Webhooks" },
    h("thead", {}, h("tr", {}, head.map((name) => h("th", {}, name)), owners ? h("th", { class: "optional" }, "Owner") : null,
      h("th", {}, "Actions"))), body));
  const mine = view.generation;
  async function fill() {
    const found = [];
    let cursor = "";
    do {  // every page: one owner has at most a hundred
      const page = await api("webhooks", { query: { limit: 500, cursor } });
      found.push(...page.webhooks);
      cursor = page.next_cursor;
    } while (cursor && mine === view.generation);
    if (mine !== view.generation) return;
    const hooks = { message, secret, changed: fill, deleted: () => { message.textContent = "Deleted."; return fill(); } };
    keepingFocus(body, () => body.replaceChildren(...found.map((sub) => h("tr", { "data-webhook": sub.id },
      h("td", { class: "url" }, link(webhookPath(sub.id), sub.url)), h("td", { class: "wrap" }, sub.description),
      h("td", { class: "wrap" }, sub.events.join(", ")), h("td", { class: "wrap" }, tasksOf(sub)), h("td", { class: "wrap" }, stateOf(sub)),
      h("td", {}, when(sub.failing_since) || "—"),
      owners ? h("td", { class: "optional" }, sub.all ? "every owner" : sub.owner ?? "") : null,
      h("td", { class: "acts" }, controls(sub, hooks))))));
    if (!found.length) body.append(h("tr", {}, h("td", { colspan: head.length + 2, class: "muted" }, "No webhooks yet: add one below.")));
  }
  const form = addForm(async (made) => {
    showSecret(secret, made, false);
    await fill();
  });
  setMain("Webhooks", h("p", { class: "muted" }, "Taskgate POSTs a signed event (Standard Webhooks) to each URL when a run " +
    "or a workflow it names ends, retrying for about a day."), message, secret, table, h("h2", {}, "Add a webhook"), form);
  await fill();
}

// --- one subscription ----------------------------------------------------------------------
function summary(sub) {
  const rows = [["URL", sub.url], ["Description", sub.description || "—"], ["Events", sub.events.join(", ")],
    ["Tasks", tasksOf(sub)], ["State", stateOf(sub)], ["Failing since", when(sub.failing_since) || "—"],
    ["Id", sub.id], ["Owner", sub.all ? "every owner" : sub.owner ?? "—"], ["Created", when(sub.created_at) || "—"]];
  return h("dl", { id: "webhook" }, rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function eventOf(delivery) {  // its msg id; a run's end (msg_<task id>_<state>) links to the run
  if (!delivery.type.startsWith("task.")) return delivery.msg_id;
  const taskId = delivery.msg_id.slice(4, delivery.msg_id.lastIndexOf("_"));
  return link(`tasks/${encodeURIComponent(taskId)}`, delivery.msg_id, { title: `Task ${taskId}` });
}

function deliveryRow(delivery, retry) {  // one of GET /webhooks/{id}/deliveries
  const status = delivery.last_status;
  return h("tr", { "data-delivery": delivery.id, "data-state": delivery.state },
    h("td", {}, delivery.type), h("td", { class: "id wrap" }, eventOf(delivery)),
    h("td", {}, h("span", { class: `state state-${delivery.state}` }, delivery.state)), h("td", {}, String(delivery.attempts)),
    h("td", {}, delivery.state === "pending" ? when(delivery.next_attempt_at) || "—" : "—"),
    h("td", { class: status === null || status >= 300 ? "error" : null }, status ?? "—"),
    h("td", {}, when(delivery.last_attempt_at) || "—"),
    h("td", { class: "error wrap" }, delivery.last_error ?? ""),
    h("td", {}, delivery.state === "failed" ? h("button", { type: "button", onclick: () => retry(delivery) }, "Retry") : ""));
}

export async function webhookDetail(webhookId) {
  const path = webhookPath(webhookId);
  const mine = view.generation;
  const message = h("p", { role: "status", class: "muted", id: "message" });
  const problem = h("p", { class: "error", role: "status" });
  const secret = h("div", { id: "secret-box" });
  const about = h("div");
  const actions = h("div", { class: "actions" });
  const body = h("tbody");
  const more = h("p", { class: "muted" });
  setMain(`Webhook ${webhookId}`, h("p", {}, link("webhooks", "← All webhooks")), actions, message, secret, problem, about,
    h("h2", {}, "Deliveries"), h("p", { class: "muted" }, `Newest first, read again every ${REFRESH} s.`),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Deliveries, newest first" },
      h("thead", {}, h("tr", {}, ["Event", "Message id", "State", "Attempts", "Next attempt", "Last response",
        "Last attempt", "Last error", ""].map((name) => h("th", {}, name)))), body)), more);
  let shown = null;
  const show = (sub) => {  // the summary and the buttons (redrawn only when the subscription changed)
    about.replaceChildren(summary(sub));
    document.title = `Webhook ${sub.url} · taskgate`;
    if (shown?.enabled === sub.enabled && actions.childElementCount) return;
    shown = sub;
    keepingFocus(actions, () => actions.replaceChildren(
      controls(sub, { message, secret, changed: show, deleted: () => go("webhooks"), tested: fill })));
  };
  const retry = async (delivery) => {
    try {
      await api(`${path}/deliveries/${encodeURIComponent(delivery.id)}/retry`, { method: "POST" });
      message.textContent = `Sending ${delivery.msg_id} again.`;
      await fill();
    } catch (error) { message.textContent = error.message; }
  };
  async function fill() {
    let sub, page;
    try {
      sub = await api(path);
    } catch (error) {
      if (mine !== view.generation) return;
      if (error.status !== 404) { problem.textContent = `Not refreshed: ${error.message}`; return; }
      gone = true;  // deleted meanwhile, or never there
      main.replaceChildren(h("h1", {}, "Webhook"), h("p", {}, link("webhooks", "← All webhooks")), h("p", { class: "error" }, error.message));
      return;
    }
    try {
      page = await api(`${path}/deliveries`, { query: { limit: DELIVERIES } });
    } catch (error) { page = null; problem.textContent = `Deliveries not read: ${error.message}`; }
    if (mine !== view.generation) return;
    show(sub);
    if (!page) return;
    problem.textContent = "";
    const found = page.deliveries;
    // a Retry button the keyboard is on keeps its focus across the redraw
    const focused = document.activeElement?.closest?.("tr[data-delivery]")?.dataset.delivery;
    body.replaceChildren(...found.map((delivery) => deliveryRow(delivery, retry)));
    if (focused) body.querySelector(`tr[data-delivery="${CSS.escape(focused)}"] button`)?.focus();
    if (!found.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No deliveries yet: a run or workflow it names ends, or Send test event.")));
    more.textContent = page.next_cursor ? `Showing the newest ${found.length}; older ones are kept by the API.` : "";
  }
  let gone = false;
  every(REFRESH, async () => { if (!gone) await fill(); });
}
