// A flow as an SVG diagram, drawn from the engine's compiled tables (GET /api/flows): the start
// event, then the steps in layers by `after` (a step sits one layer right of its latest
// predecessor), then the end the `complete_when` steps lead to. Each step shows its live counts.

import { clip, flowHref, s } from "./dom.js";

const PAD = 16;
const GAP = 56; // between layers, room for the arrows
const CROSS_GAP = 18; // between nodes of one layer
const STEP = { w: 200, h: 100 };
const TERMINAL = { w: 170, h: 56 };
let drawings = 0; // unique marker ids when several diagrams share a page

/** Steps grouped into layers (arrays of names), ordered to keep arrows short. */
export function layers(flow) {
  const steps = new Map(flow.steps.map((st, i) => [st.name, { ...st, index: i }]));
  const depth = new Map();
  const visit = (name, path) => {
    if (depth.has(name)) return depth.get(name);
    if (path.has(name)) return 0; // a cycle: the engine refuses these, never loop on one
    path.add(name);
    const preds = (steps.get(name).after || []).filter((p) => steps.has(p));
    const d = preds.length ? 1 + Math.max(...preds.map((p) => visit(p, path))) : 1;
    path.delete(name);
    depth.set(name, d);
    return d;
  };
  for (const name of steps.keys()) visit(name, new Set());
  const count = Math.max(0, ...depth.values());
  const cols = Array.from({ length: count }, () => []);
  for (const name of steps.keys()) cols[Math.max(1, depth.get(name)) - 1].push(name);
  // Order each layer by the mean position of its predecessors (barycentre), then as declared.
  const slot = new Map();
  for (const col of cols) {
    const bary = (name) => {
      const at = (steps.get(name).after || []).filter((p) => slot.has(p)).map((p) => slot.get(p));
      return at.length ? at.reduce((a, b) => a + b, 0) / at.length : 0;
    };
    col.sort((a, b) => bary(a) - bary(b) || steps.get(a).index - steps.get(b).index);
    col.forEach((name, i) => slot.set(name, i - (col.length - 1) / 2));
  }
  return cols;
}

function stepCounts(flow, step) {
  const c = (flow.counts && flow.counts.steps && flow.counts.steps[step.name]) || {};
  const n = (k) => (Number.isFinite(c[k]) ? c[k] : 0);
  return {
    active: n("active"),
    overdue: n("overdue"),
    // An orchestrated step's timeout is final, a failure; an observed one's is not (it is
    // counted as overdue while its instance runs), so it stays out of this count.
    failed: n("failed") + (step.mode === "orchestrate" ? n("timed_out") : 0),
    failedOnly: n("failed"),
    timedOut: n("timed_out"),
    done: n("done"),
  };
}

function stateOf(c) {
  if (c.failed > 0) return "is-failed";
  if (c.overdue > 0) return "is-overdue";
  if (c.active > 0) return "is-active";
  return "is-idle";
}

function stepNode(flow, step, box) {
  const c = stepCounts(flow, step);
  const label =
    `Step ${step.name}: ${c.active} active, ${c.overdue} overdue, ${c.failed} failed ` +
    `(${c.failedOnly} failed, ${c.timedOut} timed out), ${c.done} done`;
  const sub = [step.mode, step.command && step.command.name].filter(Boolean).join(" · ");
  const pills = [
    ["active", c.active],
    ["overdue", c.overdue],
    ["failed", c.failed],
  ];
  const pw = (box.w - 24 - 8) / 3;
  return s(
    "a",
    {
      href: flowHref(flow.name, { step: step.name }),
      class: ["node", "step", stateOf(c), `mode-${step.mode === "orchestrate" ? "orchestrate" : "watch"}`],
      transform: `translate(${box.x} ${box.y})`,
      "aria-label": label,
      "data-testid": `step-node-${step.name}`,
      "data-active": c.active,
      "data-overdue": c.overdue,
      "data-failed": c.failed,
    },
    s("title", {}, label),
    s("rect", { class: "node-box", width: box.w, height: box.h, rx: 8 }),
    s("rect", { class: "node-stripe", width: 6, height: box.h - 16, x: 0, y: 8, rx: 3 }),
    s("text", { class: "node-name", x: 16, y: 24 }, clip(step.name, 17)),
    s("text", { class: "node-done", x: box.w - 10, y: 24, "text-anchor": "end" }, `${c.done} ✓`),
    s("text", { class: "node-sub", x: 16, y: 42 }, clip(sub, 30)),
    pills.map(([name, value], i) =>
      s(
        "g",
        {
          class: ["pill", `pill-${name}`, value === 0 && "zero"],
          transform: `translate(${12 + i * (pw + 4)} 52)`,
          "data-testid": `count-${name}`,
        },
        s("rect", { width: pw, height: 38, rx: 5 }),
        s("text", { class: "pill-value", x: pw / 2, y: 17, "text-anchor": "middle" }, String(value)),
        s("text", { class: "pill-label", x: pw / 2, y: 31, "text-anchor": "middle" }, name),
      ),
    ),
  );
}

function terminalNode(kind, title, sub, box, testid) {
  return s(
    "g",
    { class: ["node", "terminal", kind], transform: `translate(${box.x} ${box.y})`, "data-testid": testid },
    s("title", {}, `${title}: ${sub}`),
    s("rect", { class: "node-box", width: box.w, height: box.h, rx: box.h / 2 }),
    s("text", { class: "node-name", x: box.w / 2, y: 25, "text-anchor": "middle" }, clip(title, 18)),
    s("text", { class: "node-sub", x: box.w / 2, y: 42, "text-anchor": "middle" }, clip(sub, 26)),
  );
}

/**
 * The diagram of `flow` as an <svg>. `vertical` lays the layers top to bottom (narrow windows);
 * otherwise the start event is at the left and the layers go right.
 */
export function drawFlow(flow, { vertical = false } = {}) {
  const id = ++drawings;
  const cols = [["@start"], ...layers(flow), ["@end"]];
  const size = (name) => (name.startsWith("@") ? TERMINAL : STEP);
  // main axis: along the layers; cross axis: across the nodes of one layer
  const mainOf = (sz) => (vertical ? sz.h : sz.w);
  const crossOf = (sz) => (vertical ? sz.w : sz.h);
  const widest = Math.max(...cols.map((col) => col.length));
  const crossLen = widest * crossOf(STEP) + (widest - 1) * CROSS_GAP;
  const boxes = new Map();
  let main = PAD;
  for (const col of cols) {
    const depth = Math.max(...col.map((n) => mainOf(size(n))));
    col.forEach((name, i) => {
      const sz = size(name);
      const centre = PAD + crossLen / 2 + (i - (col.length - 1) / 2) * (crossOf(STEP) + CROSS_GAP);
      const m = main + (depth - mainOf(sz)) / 2;
      const c = centre - crossOf(sz) / 2;
      boxes.set(name, { ...sz, x: vertical ? c : m, y: vertical ? m : c });
    });
    main += depth + GAP;
  }
  const mainLen = main - GAP + PAD;
  const width = vertical ? crossLen + 2 * PAD : mainLen;
  const height = vertical ? mainLen : crossLen + 2 * PAD;

  const edges = [];
  const edge = (from, to, cls) => {
    const a = boxes.get(from);
    const b = boxes.get(to);
    let d;
    if (vertical) {
      const [x1, y1, x2, y2] = [a.x + a.w / 2, a.y + a.h, b.x + b.w / 2, b.y];
      const k = (y2 - y1) / 2;
      d = `M${x1},${y1} C${x1},${y1 + k} ${x2},${y2 - k} ${x2},${y2 - 2}`;
    } else {
      const [x1, y1, x2, y2] = [a.x + a.w, a.y + a.h / 2, b.x, b.y + b.h / 2];
      const k = (x2 - x1) / 2;
      d = `M${x1},${y1} C${x1 + k},${y1} ${x2 - k},${y2} ${x2 - 2},${y2}`;
    }
    edges.push(s("path", { class: ["edge", cls], d, "marker-end": `url(#arrow-${id})` }));
  };
  const names = new Set(flow.steps.map((st) => st.name));
  for (const st of flow.steps) {
    const preds = (st.after || []).filter((p) => names.has(p));
    if (!preds.length) edge("@start", st.name, "from-start");
    for (const p of preds) edge(p, st.name, "");
  }
  // Arrows to the end from the complete_when steps that no other complete_when step follows:
  // the rest are implied, and their arrows would cross the boxes after them.
  const finals = new Set((flow.complete_when && flow.complete_when.length ? flow.complete_when : [...names]).filter((n) => names.has(n)));
  const before = new Set();
  const mark = (n) => {
    for (const p of (flow.steps.find((st) => st.name === n) || {}).after || []) {
      if (!before.has(p)) {
        before.add(p);
        mark(p);
      }
    }
  };
  for (const n of finals) mark(n);
  for (const n of finals) if (!before.has(n)) edge(n, "@end", "to-end");

  const status = (flow.counts && flow.counts.status) || {};
  const total = (flow.counts && flow.counts.total) || 0;
  return s(
    "svg",
    {
      class: ["diagram", vertical ? "vertical" : "horizontal"],
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "group",
      "aria-label": `Diagram of flow ${flow.name}`,
      "data-testid": "flow-diagram",
      "data-flow": flow.name,
    },
    s(
      "defs",
      {},
      s(
        "marker",
        {
          id: `arrow-${id}`,
          viewBox: "0 0 10 10",
          refX: 8,
          refY: 5,
          markerWidth: 7,
          markerHeight: 7,
          orient: "auto-start-reverse",
        },
        s("path", { class: "arrowhead", d: "M0,0 L10,5 L0,10 z" }),
      ),
    ),
    edges,
    terminalNode("start", flow.start, `▶ start · ${total} instances`, boxes.get("@start"), "start-node"),
    flow.steps.map((st) => stepNode(flow, st, boxes.get(st.name))),
    terminalNode("end", "complete", `✓ ${status.COMPLETED || 0} completed`, boxes.get("@end"), "end-node"),
  );
}
