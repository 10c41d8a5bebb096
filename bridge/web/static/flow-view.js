// The flows page (every flow's diagram) and one flow's page (diagram, stuck and failed
// instances, a filtered list). Sections re-render only when their data changed, so focus and
// scroll stay put between the 2-second refreshes.

import * as api from "./api.js";
import { drawFlow } from "./diagram.js";
import { ago, chip, duration, fill, flowHref, h, instanceHref } from "./dom.js";

const STATUS_ORDER = ["RUNNING", "COMPENSATING", "FAILED", "TIMED_OUT", "COMPENSATED", "TERMINATED", "COMPLETED"];
const NARROW = 640; // below this width the diagram runs top to bottom
const PAGE = 50;

/** A diagram that redraws when its data changes or the window crosses the narrow width. */
function diagramBox() {
  const el = h("div", { class: "diagram-holder" });
  let flow = null;
  let drawn = "";
  const draw = () => {
    if (!flow) return;
    const vertical = el.clientWidth > 0 && el.clientWidth < NARROW;
    const sig = JSON.stringify([vertical, flow.start, flow.steps, flow.complete_when, flow.counts]);
    if (sig === drawn) return;
    drawn = sig;
    fill(el, drawFlow(flow, { vertical }));
  };
  // Redrawing changes the holder's height: do it next frame, not inside the observer's callback.
  const watcher = new ResizeObserver(() => requestAnimationFrame(draw));
  watcher.observe(el);
  return {
    el,
    update(f) {
      flow = f;
      draw();
    },
    destroy: () => watcher.disconnect(),
  };
}

function statusCounts(flow) {
  const counts = (flow.counts && flow.counts.status) || {};
  const names = [...STATUS_ORDER, ...Object.keys(counts).filter((s) => !STATUS_ORDER.includes(s))];
  const present = names.filter((s) => counts[s] > 0);
  if (!present.length) return h("p", { class: "muted" }, "No instances yet.");
  return h(
    "ul",
    { class: "status-counts", "aria-label": "Instances by status", "data-testid": "status-counts" },
    present.map((s) =>
      h(
        "li",
        {},
        h(
          "a",
          { href: flowHref(flow.name, { status: s }), title: `List the ${s} instances` },
          chip(s, { "data-testid": `status-count-${s}` }),
          h("span", { class: "count-value" }, String(counts[s])),
        ),
      ),
    ),
  );
}

function flowMeta(flow) {
  const items = [
    ["key", flow.key],
    ["mode", flow.mode],
    ["on failure", flow.on_failure],
    ["deadline", Number.isFinite(flow.deadline_ms) ? duration(flow.deadline_ms) : "none"],
    ["versions", (flow.versions || [flow.version]).join(", ")],
    ["instances", String((flow.counts && flow.counts.total) || 0)],
  ];
  return h(
    "dl",
    { class: "meta" },
    items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v === null || v === undefined ? "–" : String(v)))),
  );
}

function legend() {
  const item = (cls, text) => h("li", {}, h("span", { class: ["swatch", cls], "aria-hidden": "true" }), text);
  return h(
    "ul",
    { class: "legend", "aria-label": "Legend" },
    item("is-active", "has active instances"),
    item("is-overdue", "has overdue instances"),
    item("is-failed", "has failed or timed-out instances"),
    item("is-idle", "idle"),
    item("mode-watch", "dashed: observe / shadow (watches only)"),
  );
}

function flowCard(flow, diagram, { heading = "h2", link = true } = {}) {
  const title = link ? h("a", { href: flowHref(flow.name) }, flow.name) : flow.name;
  return h(
    "div",
    { class: "flow-head" },
    h(
      "div",
      { class: "flow-title" },
      h(heading, {}, title),
      h("span", { class: "version", title: "latest version" }, `v${flow.version}`),
    ),
    flowMeta(flow),
    statusCounts(flow),
    diagram,
  );
}

// -- instance lists ------------------------------------------------------------------------

function stepTags(item) {
  const overdue = new Set(item.overdue || []);
  const names = [...new Set([...(item.active || []), ...overdue])];
  if (!names.length) return h("span", { class: "muted" }, "–");
  return names.map((n) =>
    h(
      "span",
      { class: ["tag", overdue.has(n) ? "tone-amber" : "tone-blue"], title: overdue.has(n) ? "overdue" : "active" },
      n,
      overdue.has(n) ? h("span", { class: "tag-note" }, " overdue") : null,
    ),
  );
}

function failedTags(item) {
  // A step timed out but not final is overdue (shown with the current steps), not failed.
  const overdue = new Set(item.overdue || []);
  const failed = (item.failed || []).filter((n) => !overdue.has(n));
  if (!failed.length) return h("span", { class: "muted" }, "–");
  return failed.map((n) => h("span", { class: "tag tone-red" }, n));
}

function cell(label, ...content) {
  return h("td", { "data-label": label }, h("div", { class: "cell" }, ...content));
}

export function instanceTable(items, empty) {
  if (!items.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    { class: "instances" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Key", "Status", "Current steps", "Failed steps", "Started", "Updated", "Reason"].map((t) =>
          h("th", { scope: "col" }, t),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      items.map((it) =>
        h(
          "tr",
          { "data-testid": "instance-row", "data-key": it.key },
          cell("Key", h("a", { href: instanceHref(it.flow, it.key), class: "key" }, it.key)),
          cell("Status", chip(it.status)),
          cell("Current steps", stepTags(it)),
          cell("Failed steps", failedTags(it)),
          cell("Started", when(it.started_at)),
          cell("Updated", when(it.updated_at)),
          cell("Reason", it.reason ? h("span", { class: "reason" }, it.reason) : h("span", { class: "muted" }, "–")),
        ),
      ),
    ),
  );
}

function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "–");
  return h("time", { datetime: iso, title: `${iso} (UTC)`, "data-relative": "" }, ago(iso));
}

let sections = 0;

/** A card with a titled instance list that pages by raising its limit. */
function listSection({ testid, title, hint, empty, onMore }) {
  const id = `list-${++sections}`;
  const count = h("span", { class: "count", "data-testid": "count" });
  const body = h("div", { class: "list-body" });
  const more = h("button", { type: "button", class: "button", hidden: true, onclick: onMore }, "Show more");
  const heading = h("h2", { id }, title, " ", count);
  const el = h(
    "section",
    { class: "card", "aria-labelledby": id, "data-testid": testid },
    h("div", { class: "section-head" }, heading, hint ? h("p", { class: "muted" }, hint) : null),
    body,
    more,
  );
  let drawn = "";
  return {
    el,
    update(resp) {
      const items = Array.isArray(resp.items) ? resp.items : [];
      const sig = JSON.stringify(resp);
      if (sig === drawn) return;
      drawn = sig;
      count.textContent = `${items.length}${resp.next_cursor ? "+" : ""}`;
      more.hidden = !resp.next_cursor;
      fill(
        body,
        resp.partial ? h("p", { class: "warning" }, "Some workers did not answer: this list may be incomplete.") : null,
        instanceTable(items, empty),
      );
    },
  };
}

// -- views ---------------------------------------------------------------------------------

export function homeView(ctx) {
  const cards = h("div", { class: "flow-cards", "data-testid": "flow-cards" });
  const boxes = new Map();
  const el = h("div", { class: "page" }, h("h1", { class: "page-title" }, "Flows"), cards);
  let drawn = "";
  return {
    title: "Flows",
    el,
    async refresh() {
      let body;
      try {
        body = await api.flows();
        ctx.clear("flows");
      } catch (err) {
        ctx.report("flows", err);
        return;
      }
      const flows = body.flows || [];
      ctx.setFlows(flows);
      const sig = JSON.stringify([body.partial, flows.map((f) => [f.name, f.version, f.counts && f.counts.status])]);
      if (sig !== drawn || boxes.size !== flows.length) {
        drawn = sig;
        for (const b of boxes.values()) b.destroy();
        boxes.clear();
        fill(
          cards,
          body.partial ? h("p", { class: "warning" }, "Some workers did not answer: counts may be incomplete.") : null,
          flows.length ? null : h("p", { class: "empty" }, "This worker has no flows loaded."),
          flows.map((f) => {
            const box = diagramBox();
            boxes.set(f.name, box);
            return h("section", { class: "card", "data-testid": "flow-card", "data-flow": f.name }, flowCard(f, box.el));
          }),
        );
      }
      for (const f of flows) boxes.get(f.name).update(f);
    },
    destroy() {
      for (const b of boxes.values()) b.destroy();
    },
  };
}

export function flowView(ctx, name, params) {
  const filter = {
    step: params.get("step") || "",
    status: params.get("status") || "",
    key_prefix: params.get("key") || "",
  };
  const filtered = Object.values(filter).some(Boolean);
  const limits = { stuck: PAGE, failed: PAGE, filtered: PAGE };
  const more = (which) => () => {
    limits[which] = Math.min(1000, limits[which] + PAGE);
    ctx.refresh();
  };
  const diagram = diagramBox();
  const head = h("section", { class: "card", "data-testid": "flow-head" });
  const describe = [
    filter.key_prefix && `keys starting with “${filter.key_prefix}”`,
    filter.status && `status ${filter.status}`,
    filter.step && `at step ${filter.step}`,
  ].filter(Boolean);
  const results = filtered
    ? listSection({
        testid: "filtered-list",
        title: `Instances: ${describe.join(", ")}`,
        empty: filter.key_prefix ? `No instance key starts with “${filter.key_prefix}”.` : "No instance matches.",
        onMore: more("filtered"),
      })
    : null;
  const stuck = listSection({
    testid: "stuck-list",
    title: "Stuck: overdue",
    hint: "An active step past its deadline, a step timed out and not final, or past the flow deadline.",
    empty: "Nothing is overdue.",
    onMore: more("stuck"),
  });
  const failed = listSection({
    testid: "failed-list",
    title: "Failed and compensating",
    hint: "FAILED, TIMED_OUT, COMPENSATING and COMPENSATED instances.",
    empty: "No failed instance.",
    onMore: more("failed"),
  });
  const el = h(
    "div",
    { class: "page" },
    h(
      "nav",
      { class: "breadcrumb", "aria-label": "Breadcrumb" },
      h("a", { href: "#/" }, "Flows"),
      " / ",
      h("span", { "aria-current": "page" }, name),
    ),
    head,
    results
      ? h(
          "div",
          { class: "filtered" },
          results.el,
          h("p", { class: "clear-filter" }, h("a", { href: flowHref(name) }, "Clear the filter")),
        )
      : null,
    h("div", { class: "lists" }, stuck.el, failed.el),
  );
  let headDrawn = "";
  let unknown = false;

  async function loadFlow() {
    try {
      const body = await api.flows();
      ctx.clear("flows");
      ctx.setFlows(body.flows || []);
      const flow = (body.flows || []).find((f) => f.name === name);
      if (!flow) {
        unknown = true;
        const names = (body.flows || []).map((f) => f.name).join(", ") || "none";
        fill(head, h("h1", {}, name), h("p", { class: "warning" }, `No flow named “${name}” on this worker (flows: ${names}).`));
        return;
      }
      unknown = false;
      const sig = JSON.stringify([flow.name, flow.version, flow.versions, flow.counts && flow.counts.status, flow.counts && flow.counts.total, body.partial]);
      if (sig !== headDrawn) {
        headDrawn = sig;
        fill(
          head,
          body.partial ? h("p", { class: "warning" }, "Some workers did not answer: counts may be incomplete.") : null,
          flowCard(flow, diagram.el, { heading: "h1", link: false }),
          legend(),
          eventsList(flow),
        );
      }
      diagram.update(flow);
    } catch (err) {
      ctx.report("flows", err);
    }
  }

  async function loadList(source, section, query) {
    if (unknown) return;
    try {
      section.update(await api.search(name, query));
      ctx.clear(source);
    } catch (err) {
      ctx.report(source, err);
    }
  }

  return {
    title: name,
    el,
    async refresh() {
      await loadFlow();
      await Promise.all([
        loadList("stuck", stuck, { overdue: "true", limit: limits.stuck }),
        loadList("failed", failed, { status: "FAILED,TIMED_OUT,COMPENSATING,COMPENSATED", limit: limits.failed }),
        results ? loadList("filtered", results, { ...filter, limit: limits.filtered }) : null,
      ]);
    },
    destroy() {
      diagram.destroy();
      for (const source of ["stuck", "failed", "filtered"]) ctx.clear(source);
    },
  };
}

function eventsList(flow) {
  const events = flow.events || [];
  if (!events.length) return null;
  return h(
    "details",
    { class: "events" },
    h("summary", {}, `Events and sources (${events.length})`),
    h(
      "ul",
      {},
      events.map((e) =>
        h("li", {}, h("span", { class: "event-name" }, e.name), " ", h("code", {}, e.source || "")),
      ),
    ),
  );
}
