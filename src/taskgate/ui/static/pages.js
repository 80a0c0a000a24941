// The other pages: dead letters, schedules, queues and workers, and the submit form.
import { main, h, when, api, link, go, every, setMain } from "./core.js";
import { throughputChart, waitChart, tile } from "./charts.js";

// --- dead letters --------------------------------------------------------------------------
export async function deadLetters() {
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
export async function schedules() {
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
    if (!page.schedules.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No schedules. Make one with POST /schedules, `taskgate schedules add`, or in code: @taskgate.task(schedule=taskgate.every(minutes=5)).")));
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

function limitCells(limits) {  // one task of GET /limits: what applies, and its keys in use together
  const rate = limits.effective.rate_limit ? `${limits.effective.rate_limit}${limits.effective.burst > 1 ? ` (burst ${limits.effective.burst})` : ""}` : "—";
  const sum = (name) => limits.keys.reduce((total, key) => total + key[name], 0);
  const next = limits.keys.map((key) => key.next_admission_at).filter(Boolean).sort()[0];
  return [h("td", {}, limits.task), h("td", {}, rate), h("td", {}, limits.effective.concurrency ?? "—"),
    h("td", {}, limits.source), h("td", {}, String(sum("running"))), h("td", {}, String(sum("waiting"))),
    h("td", { class: "optional" }, String(limits.keys.length + limits.more_keys)), h("td", {}, next ? when(next, true) : "—")];
}

export async function queues() {
  const body = h("tbody");
  const workerBody = h("tbody");
  const limitBody = h("tbody");
  const charts = h("section", { class: "summary", "aria-label": "Summary" });
  setMain("Queues and workers", charts,
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Queues" },
      h("thead", {}, h("tr", {}, ["Queue", "Waiting", "Live workers", "Lacking tasks"].map((name) => h("th", {}, name)))),
      body)),
    h("h2", {}, "Workers"),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Workers" },
      h("thead", {}, h("tr", {}, ["Worker", "Queues", "Concurrency", "Running", "Task types", "Last heartbeat"]
        .map((name) => h("th", {}, name)))), workerBody)),
    h("h2", {}, "Limits"),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Limits" },
      h("thead", {}, h("tr", {}, ["Task", "Rate limit", "Concurrency", "Source", "Running", "Waiting"].map((name) => h("th", {}, name)),
        h("th", { class: "optional" }, "Keys"), h("th", {}, "Next admission"))), limitBody)));
  const problem = h("p", { class: "error", role: "status" });
  main.insertBefore(problem, charts);
  const refuse = (error) => {
    if (error.status !== 403) { problem.textContent = `Not refreshed: ${error.message}`; return null; }
    charts.replaceChildren();
    body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "error" }, "This page needs an admin key.")));
    return null;
  };
  every(5, async () => {
    const [found, workers, summary, limits] = await Promise.all([api("queues"), api("workers"), api("summary"), api("limits")])
      .catch(refuse) ?? [];
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
    limitBody.replaceChildren(...limits.map((one) => h("tr", { "data-limits": one.task }, limitCells(one))));
    if (!limits.length) limitBody.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No task has limits. Declare them with @taskgate.task(rate_limit=..., concurrency=taskgate.Concurrency(...)), or set them with PUT /limits/{task}.")));
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

export async function submitPage(name) {
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
        const found = error.body?.error?.errors;  // each bad field: {loc: ["body", "x"], msg}
        if (!Array.isArray(found)) { problem.textContent = error.message; return; }
        const unplaced = [];
        for (const one of found) {
          const field = one.loc[0] === "body" && fields.find((each) => each.name === one.loc[1]);
          if (field) field.error.textContent = one.msg;
          else unplaced.push(`${one.loc.slice(1).join(".") || one.loc[0]}: ${one.msg}`);
        }
        problem.textContent = unplaced.join("; ");
      }
    } }, fields.map((field) => field.label), h("button", { type: "submit" }, "Submit"));
  setMain(`Submit ${name}`, chooser, h("p", { class: "muted" }, task.summary), form, problem);
}
