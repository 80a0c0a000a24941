// Workflows: the list (filtered, paged, refreshed) and one workflow's page (its graph, followed
// live, its nodes and their runs, cancel and retry).
import { API, me, view, h, when, api, link, go, every, setMain, json } from "./core.js";
import { drawGraph, isMap, stateWords, itemsWords } from "./graph.js";

const WORKFLOW_STATES = ["running", "succeeded", "failed", "cancelled"];
const RUNS_LISTED = 20;  // a map node's runs linked in the nodes' table; the rest are counted

const workflowPath = (id) => `workflows/${encodeURIComponent(id)}`;
const stateOf = (state) => h("span", { class: `state state-${state}` }, state);

// --- the list ------------------------------------------------------------------------------
function workflowRow(one) {
  const ended = one.nodes - one.left;
  return h("tr", { "data-workflow": one.workflow_id },
    h("td", {}, stateOf(one.state)), h("td", {}, one.name),
    h("td", { class: "id" }, link(workflowPath(one.workflow_id), one.workflow_id)),
    h("td", {}, `${ended} of ${one.nodes} ended`),
    h("td", { class: one.failed ? "error" : null }, String(one.failed)),
    me.admin ? h("td", { class: "optional" }, one.owner ?? "") : null,
    h("td", {}, when(one.created_at)), h("td", { class: "optional" }, when(one.finished_at) || "—"));
}

export async function workflowList() {
  const params = new URLSearchParams(location.search);
  const filters = { state: params.get("state") || "", name: params.get("name") || "", cursor: params.get("cursor") || "" };
  const stateSelect = h("select", { name: "state" }, h("option", { value: "" }, "any"),
    WORKFLOW_STATES.map((state) => h("option", { value: state, selected: state === filters.state }, state)));
  const nameInput = h("input", { name: "name", value: filters.name, placeholder: "workflow name", size: 16 });
  const form = h("form", { class: "filters", role: "search", onsubmit: (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      if (stateSelect.value) next.set("state", stateSelect.value);
      if (nameInput.value.trim()) next.set("name", nameInput.value.trim());
      go(`workflows${next.toString() ? "?" + next : ""}`);
    } },
    h("label", {}, "State", stateSelect), h("label", {}, "Name", nameInput), h("button", { type: "submit" }, "Show"));
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const problem = h("p", { class: "error", role: "status" });
  setMain("Workflows", form, problem, h("div", { class: "table-wrap" }, h("table", { "aria-label": "Workflows, newest first" },
    h("thead", {}, h("tr", {}, ["State", "Name", "Id", "Nodes", "Failed"].map((name) => h("th", {}, name)),
      me.admin ? h("th", { class: "optional" }, "Owner") : null, h("th", {}, "Submitted"),
      h("th", { class: "optional" }, "Finished"))), body)), pager);
  const mine = view.generation;
  const query = { ...filters, limit: 50 };
  async function fill() {
    let page;
    try { page = await api("workflows", { query }); } catch (error) { problem.textContent = `Not read: ${error.message}`; return; }
    if (mine !== view.generation) return;
    problem.textContent = "";
    const found = page.workflows;
    body.replaceChildren(...found.map(workflowRow));
    if (!found.length) {
      body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, filters.state || filters.name
        ? "No workflows match." : "No workflows. Submit one with POST /workflows, or taskgate.Workflow in Python.")));
    }
    const links = [];
    if (filters.cursor) { const newest = new URLSearchParams(params); newest.delete("cursor"); links.push(link(`workflows${newest.toString() ? "?" + newest : ""}`, "Newest")); }
    if (page.next_cursor) { const older = new URLSearchParams(params); older.set("cursor", page.next_cursor); links.push(link(`workflows?${older}`, "Older")); }
    pager.replaceChildren(...links);
  }
  if (filters.cursor) await fill();  // an older page stays as it was read
  else every(5, fill);  // the newest page: workflows submitted meanwhile join it
}

// --- one workflow --------------------------------------------------------------------------
function summary(shown) {
  const nodes = Object.values(shown.nodes);
  const ended = nodes.filter((node) => !["waiting", "released"].includes(node.state)).length;
  const rows = [
    ["State", stateOf(shown.state)], ["Name", shown.name], ["Id", shown.workflow_id], ["Owner", shown.owner ?? "—"],
    ["Nodes", `${ended} of ${nodes.length} ended`], ["On failure", shown.on_failure],
    ["Submitted", when(shown.created_at) || "—"], ["Finished", when(shown.finished_at) || "—"],
  ];
  if (shown.state === "succeeded") rows.push(["Result", json(shown.result)]);
  return h("dl", { id: "workflow" }, rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function runsOf(node) {  // links to a node's run, or to a map node's runs
  if (!isMap(node)) return link(`tasks/${encodeURIComponent(node.task_id)}`, node.task_id);
  if (!node.items) return node.error ? h("span", { class: "error" }, node.error) : h("span", { class: "muted" }, "not fanned out yet");
  const shown = Math.min(node.items.total, RUNS_LISTED);
  const runs = Array.from({ length: shown }, (_, i) => link(`tasks/${encodeURIComponent(`${node.task_id}-${i}`)}`, String(i)));
  return h("span", { class: "runs" }, itemsWords(node.items), node.items.total ? ": " : "",
    runs.flatMap((run, i) => (i ? [" ", run] : [run])),
    node.items.total > shown ? ` … ${node.items.total - shown} more (${node.task_id}-<i>)` : "");
}

function nodeRows(shown) {
  return Object.entries(shown.nodes).map(([name, node]) => h("tr", { "data-node": name },
    h("td", {}, name), h("td", {}, node.task),
    h("td", {}, h("span", { class: `state node-state-${node.state}` }, stateWords(node))),
    h("td", {}, node.parents.length ? node.parents.join(", ") : "—"),
    h("td", { class: "optional" }, when(node.started_at) || "—"), h("td", { class: "optional" }, when(node.finished_at) || "—"),
    h("td", {}, runsOf(node))));
}

export async function workflowDetail(workflowId) {
  const mine = view.generation;
  let latest = null, graph = null, frame = 0;
  const message = h("p", { role: "status", class: "muted", id: "message" });
  const live = h("p", { class: "muted", id: "live", "aria-live": "polite" });
  const about = h("div");
  const picture = h("div", { class: "graph-wrap" });
  const body = h("tbody");
  const cancel = h("button", { type: "button", class: "danger", hidden: true, onclick: async () => {
      try { show(await api(`${workflowPath(workflowId)}/cancel`, { method: "POST" })); message.textContent = "Cancel asked."; }
      catch (error) { message.textContent = error.message; }
    } }, "Cancel workflow");
  const retry = h("button", { type: "button", hidden: true, onclick: async () => {
      try {
        await api(`${workflowPath(workflowId)}/retry`, { method: "POST" });
        const again = await api(workflowPath(workflowId));
        latest = null;  // it runs again: its ended view is no longer its last
        show(again);
        message.textContent = "Its nodes that did not succeed run again.";
        if (!again.finished_at) follow(workflowId, mine, show, live);
      } catch (error) { message.textContent = error.message; }
    } }, "Retry failed nodes");
  const table = h("div", { class: "table-wrap" }, h("table", { "aria-label": "Nodes" },
    h("thead", {}, h("tr", {}, ["Node", "Task", "State", "After"].map((name) => h("th", {}, name)),
      h("th", { class: "optional" }, "Started"), h("th", { class: "optional" }, "Finished"), h("th", {}, "Runs"))), body));
  setMain(`Workflow ${workflowId}`, h("p", {}, link("workflows", "← All workflows")), h("div", { class: "actions" }, cancel, retry),
    message, live, about, picture, h("h2", {}, "Nodes"), table);
  function show(next) {  // a later view; drawn at the next frame (one redraw however many came)
    if (latest?.finished_at && !next.finished_at) return;  // an ended workflow's view is its last
    latest = next;
    if (!frame) frame = requestAnimationFrame(draw);
  }
  function draw() {
    frame = 0;
    if (mine !== view.generation) return;
    document.title = `Workflow ${latest.name} · taskgate`;
    about.replaceChildren(summary(latest));
    if (graph) graph.paint(latest);
    else { graph = drawGraph(latest); picture.replaceChildren(graph); }
    body.replaceChildren(...nodeRows(latest));
    cancel.hidden = latest.state !== "running";
    retry.hidden = !["failed", "cancelled"].includes(latest.state);
  }
  try {
    show(await api(workflowPath(workflowId)));
  } catch (error) {
    if (error.status === 404) { about.replaceChildren(h("p", { class: "error" }, error.message)); table.remove(); return; }
    throw error;
  }
  if (mine !== view.generation || latest.finished_at) return;  // nothing more will change
  follow(workflowId, mine, show, live);
}

// Follows the workflow's events (each one its whole view); when the stream ends (after the
// workflow's end, or cut), the workflow is read once more, so the page shows how it stands.
function follow(workflowId, mine, show, live) {
  view.close();  // (a stream followed before a retry)
  const source = new EventSource(new URL(`${workflowPath(workflowId)}/events`, API), { withCredentials: true });
  let events = 0;
  let last = null;
  view.close = () => source.close();
  source.addEventListener("workflow", (event) => {
    events += 1;
    last = JSON.parse(event.data);
    live.textContent = last.finished_at ? "" : "Live";
    show(last);
  });
  source.addEventListener("error", async () => {
    // the browser reconnects a stream cut short (resuming after the last event it got); one
    // that ended with the workflow, or that the server refused, is over
    const over = source.readyState === EventSource.CLOSED || last?.finished_at;
    if (over) source.close();
    live.textContent = over ? "" : "Reconnecting…";
    const before = events;
    let read;
    try { read = await api(workflowPath(workflowId)); } catch { return; }
    if (mine !== view.generation || events !== before) return;  // an event since is as new
    show(read);
    if (read.finished_at) { source.close(); live.textContent = ""; }
  });
}
