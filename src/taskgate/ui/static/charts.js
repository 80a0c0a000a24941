// Charts and the summary strip, drawn as SVG here: no library.
import { h, api, every } from "./core.js";

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
                 "aria-label": `${title}${last ? `; now: ${describe(last)}` : ""}` }, ...bars,
        svg("rect", { x: 0, y: height - 1, width, height: 1, class: "axis" })),
    h("figcaption", {}, `${title} (highest ${Number(highest.toFixed(3))})`));
}

export function throughputChart(minutes) {
  return barChart("Tasks ended per minute, last 15 min", minutes,
    [["succeeded", "bar-ok"], ["failed", "bar-bad"], ["cancelled", "bar-muted"], ["expired", "bar-expired"]],
    (m) => `${m.succeeded} succeeded, ${m.failed} failed, ${m.cancelled} cancelled, ${m.expired} expired`);
}

export function waitChart(minutes) {
  return barChart("Mean queue wait (s) of the tasks that ended, per minute", minutes, [["wait_avg", "bar-accent"]],
    (m) => (m.wait_avg === null ? "no task started" : `${m.wait_avg.toFixed(3)} s`));
}

export function tile(label, value, css = "") {
  return h("div", { class: `tile ${css}` }, h("span", { class: "value" }, value === null ? "—" : String(value)),
           h("span", { class: "label" }, label));
}

// The summary strip: what waits and runs now, what ended in the last hour, throughput. Admins
// only when auth is on (it is the whole cluster's).
export function summaryStrip() {  // returned hidden; `begin()` starts filling it
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
