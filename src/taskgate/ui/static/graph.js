// A workflow's graph drawn as SVG, no library: a layered layout (a node's column is its depth,
// the longest path from a node without parents), edges as curves from each parent to its child.
// Drawn once per workflow (its nodes and edges never change); `paint` then updates each node's
// state in place, so a link the keyboard is on keeps its focus. Every name is inserted as text.
import { BASE } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 190, HEIGHT = 58, COLUMN_GAP = 56, ROW_GAP = 18, PAD = 8, NAME_CHARS = 24;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) if (child !== null) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// Columns of node names: a node's column is one more than its deepest parent's; in a column,
// nodes sit near their parents (the mean of the parents' rows), then in topological order.
export function layout(nodes) {
  const names = Object.keys(nodes);
  const parentsOf = (name) => (nodes[name].parents ?? []).filter((parent) => parent in nodes);
  const children = new Map(names.map((name) => [name, []]));
  const pending = new Map();
  for (const name of names) {
    const parents = parentsOf(name);
    pending.set(name, parents.length);
    for (const parent of parents) children.get(parent).push(name);
  }
  const order = names.filter((name) => pending.get(name) === 0);
  for (let i = 0; i < order.length; i += 1) {
    for (const child of children.get(order[i])) {
      pending.set(child, pending.get(child) - 1);
      if (pending.get(child) === 0) order.push(child);
    }
  }
  const ordered = new Set(order);
  for (const name of names) if (!ordered.has(name)) order.push(name);  // (in a cycle: never valid)
  const depth = new Map();
  for (const name of order) depth.set(name, Math.max(-1, ...parentsOf(name).map((parent) => depth.get(parent) ?? -1)) + 1);
  const columns = [];
  for (const name of order) (columns[depth.get(name)] ??= []).push(name);
  const tallest = Math.max(1, ...columns.map((column) => column.length));
  const place = new Map();
  columns.forEach((column, x) => {
    const rank = new Map(column.map((name, i) => [name, i]));
    const near = (name) => {
      const rows = parentsOf(name).map((parent) => place.get(parent)?.row).filter((row) => row !== undefined);
      return rows.length ? rows.reduce((sum, row) => sum + row, 0) / rows.length : rank.get(name);
    };
    column.sort((a, b) => near(a) - near(b) || rank.get(a) - rank.get(b));
    const offset = (tallest - column.length) / 2;  // shorter columns centred
    column.forEach((name, i) => place.set(name, { column: x, row: i + offset }));
  });
  return { columns, place, width: columns.length, height: tallest, parentsOf };
}

const at = ({ column, row }) => ({ x: PAD + column * (WIDTH + COLUMN_GAP), y: PAD + row * (HEIGHT + ROW_GAP) });

function edge(from, to) {  // from a parent's right side to its child's left side, with an arrowhead
  const start = at(from), end = at(to);
  const x1 = start.x + WIDTH, y1 = start.y + HEIGHT / 2, x2 = end.x - 4, y2 = end.y + HEIGHT / 2;
  const bend = Math.max(20, (x2 - x1) / 2);
  return [svg("path", { class: "edge", d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}` }),
          svg("path", { class: "edge-head", d: `M${x2 - 6},${y2 - 4} L${x2 + 1},${y2} L${x2 - 6},${y2 + 4} Z` })];
}

export function short(text, most = NAME_CHARS) { return text.length > most ? `${text.slice(0, most - 1)}…` : text; }

// What a node's state reads as: a released node says how its run goes.
export function stateWords(node) {
  if (node.state === "released" && node.items) return "released: running its runs";
  if (node.state === "released" && node.run_state) return `released: ${node.run_state}`;
  return node.state;
}

export function itemsWords(items) {
  return `${items.total} runs: ${items.succeeded} succeeded, ${items.left} left`;
}

// A map node (the view says so) has no run of its own: its runs are `<task_id>-<i>`.
export const isMap = (node) => node.map === true;

// The page a node links to: its run's (a map node's: its first run's, once it fanned out).
export function runPath(node) {
  if (!isMap(node)) return `tasks/${encodeURIComponent(node.task_id)}`;
  return node.items?.total ? `tasks/${encodeURIComponent(`${node.task_id}-0`)}` : null;
}

// The graph's SVG for a workflow view; `paint(view)` shows a later view of the same workflow.
export function drawGraph(view) {
  const shape = layout(view.nodes);
  const edges = svg("g", { class: "edges" });
  const boxes = svg("g", { class: "nodes" });
  const drawn = new Map();
  for (const column of shape.columns) {
    for (const name of column) {
      for (const parent of shape.parentsOf(name)) {
        const [line, head] = edge(shape.place.get(parent), shape.place.get(name));
        line.dataset.from = parent; line.dataset.to = name;
        edges.append(line, head);
      }
      const { x, y } = at(shape.place.get(name));
      const title = svg("title");
      const status = svg("text", { x: x + 10, y: y + 36, class: "node-state" });
      const counts = svg("text", { x: x + 10, y: y + 51, class: "node-items" });
      const box = svg("a", { class: "node", "data-node": name },
        title, isMap(view.nodes[name]) ? svg("rect", { x: x + 4, y: y + 4, width: WIDTH, height: HEIGHT, rx: 6, class: "node-behind" }) : null,
        svg("rect", { x, y, width: WIDTH, height: HEIGHT, rx: 6, class: "node-box" }),
        svg("text", { x: x + 10, y: y + 18, class: "node-name" }, short(name)), status, counts);
      boxes.append(box);
      drawn.set(name, { box, title, status, counts });
    }
  }
  const width = 2 * PAD + shape.width * WIDTH + (shape.width - 1) * COLUMN_GAP + 4;
  const height = 2 * PAD + shape.height * HEIGHT + (shape.height - 1) * ROW_GAP + 4;
  const graph = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "graph",
                             "aria-label": `The workflow's ${Object.keys(view.nodes).length} nodes, each linking to its run` },
                    edges, boxes);
  graph.paint = (next) => {
    for (const [name, node] of Object.entries(next.nodes)) {
      const parts = drawn.get(name);
      if (!parts) continue;
      const words = stateWords(node);
      parts.box.setAttribute("class", `node node-${node.state}${isMap(node) ? " node-map" : ""}`);
      parts.box.dataset.state = node.state;
      parts.status.textContent = short(`${node.task} · ${words}`, 30);
      parts.counts.textContent = node.items ? itemsWords(node.items) : node.error ? short(node.error, 30) : "";
      parts.title.textContent = `${name}: ${node.task}, ${words}${node.items ? `; ${itemsWords(node.items)}` : ""}`
        + (node.error ? `; ${node.error}` : "");
      parts.box.setAttribute("aria-label", parts.title.textContent);
      const path = runPath(node);
      if (path) {
        const url = new URL(path, BASE);
        parts.box.setAttribute("href", url.pathname);
        parts.box.setAttribute("data-link", "");
      } else {
        parts.box.removeAttribute("href");
        parts.box.removeAttribute("data-link");
      }
    }
    for (const line of edges.querySelectorAll("path.edge")) {
      line.classList.toggle("edge-done", next.nodes[line.dataset.from]?.state === "succeeded");
    }
  };
  graph.paint(view);
  return graph;
}
