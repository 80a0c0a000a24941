// taskgate's dashboard: plain JavaScript modules, no build step. This one logs in and out and
// shows the page the address names; every value from the API goes on the page as text.
import { BASE, main, me, view, hooks, h, api, go, leave, setMain } from "./core.js";
import { taskList, taskDetail } from "./tasks.js";
import { deadLetters, schedules, queues, submitPage } from "./pages.js";
import { workflowList, workflowDetail } from "./workflows.js";
import { webhookList, webhookDetail } from "./webhooks.js";

hooks.unauthorized = () => showLogin();
hooks.route = () => route();

document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[data-link]");
  if (!anchor || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(anchor.getAttribute("href"));
});
window.addEventListener("popstate", () => route());

// --- logging in ----------------------------------------------------------------------------
function showLogin(problem = "") {
  leave();
  const key = h("input", { type: "password", name: "key", autocomplete: "off", required: true, size: 40 });
  const error = h("p", { class: "error", role: "alert" }, problem);
  const form = h("form", { class: "filters", onsubmit: async (event) => {
      event.preventDefault();
      try {
        Object.assign(me, await api("ui/session", { method: "POST", body: { key: key.value } }));
        key.value = "";
        whoami(); route();
      } catch (failure) { error.textContent = failure.status === 401 ? "That key is invalid or revoked." : failure.message; }
    } }, h("label", {}, "API key", key), h("button", { type: "submit" }, "Log in"));
  setMain("Log in", h("p", { class: "muted" }, "Your API key is exchanged for a session; the page does not keep it."), form, error);
  key.focus();
}

function whoami() {
  document.getElementById("who").textContent = me.auth && me.owner ? `${me.owner}${me.admin ? " (admin)" : ""}` : "";
  document.getElementById("logout").hidden = !(me.auth && me.owner);
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("ui/session", { method: "DELETE" });
  } catch (error) {  // the session may still be open on the server: say so, stay logged in
    main.prepend(h("p", { class: "error", role: "alert" }, `Not logged out: ${error.message}`));
    return;
  }
  Object.assign(me, { auth: true, admin: false, csrf: null, owner: null, trace_url: null });
  whoami(); showLogin();
});

async function route() {
  leave();
  const mine = view.generation;
  const path = location.pathname.slice(BASE.pathname.length);
  try {
    if (me.auth && !me.owner) return showLogin();
    if (path.startsWith("tasks/")) return await taskDetail(decodeURIComponent(path.slice(6)));
    if (path === "workflows") return await workflowList();
    if (path.startsWith("workflows/")) return await workflowDetail(decodeURIComponent(path.slice(10)));
    if (path === "dead-letters") return await deadLetters();
    if (path === "schedules") return await schedules();
    if (path === "queues") return await queues();
    if (path === "webhooks") return await webhookList();
    if (path.startsWith("webhooks/")) return await webhookDetail(decodeURIComponent(path.slice(9)));
    if (path === "submit" || path.startsWith("submit/")) return await submitPage(decodeURIComponent(path.slice(7)));
    return await taskList();
  } catch (error) {
    if (error.status !== 401 && mine === view.generation) {
      main.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "error" }, error.message));
    }
  }
}

// the page comes with its session (GET /ui/session's answer); asked for when it does not, or
// when it names no one: a page opened from another site's link comes without the
// (SameSite=Strict) cookie
const given = document.querySelector("meta[name=taskgate-session]")?.content;
if (given) Object.assign(me, JSON.parse(given));
if (!given || (me.auth && !me.owner)) Object.assign(me, await api("ui/session").catch(() => ({})));
whoami();
route();
