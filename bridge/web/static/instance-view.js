// One instance: its steps with the operator actions (retry / skip, terminate), and a timeline
// of its events, steps, deadlines and commands from the instance JSON.

import * as api from "./api.js";
import { askToken, confirmAction } from "./dialogs.js";
import { ago, chip, clock, duration, fill, flowHref, h, ms, tone } from "./dom.js";

const ENDED = new Set(["COMPLETED", "FAILED", "TIMED_OUT", "COMPENSATED", "TERMINATED"]);
// What the engine accepts (bridge/engine/apply.py, on_action); anything else it records as
// action.rejected, so the buttons say so up front.
const RETRYABLE = new Set(["ACTIVE", "TIMED_OUT", "FAILED"]);
const SKIPPABLE = new Set(["PENDING", "ACTIVE", "TIMED_OUT", "FAILED"]);

// -- timeline entries ----------------------------------------------------------------------

const step = (e) => (e.step ? ` ${e.step}` : "");
const DESCRIBE = {
  "instance.started": (e) => ["Instance started", "blue", ["version"]],
  event: (e) => [`Event ${e.event}`, "grey", ["event"]],
  "event.held": (e) => [`Event ${e.event} held until step${step(e)} is active`, "grey", ["event"]],
  "event.duplicate": (e) => [`Duplicate event ${e.event} ignored`, "grey", ["event"]],
  "event.late": (e) => [`Late event ${e.event}: the instance had ended`, "grey", ["event"]],
  "event.orphaned": (e) => [`Event ${e.event} orphaned`, "amber", ["event"]],
  "step.activated": (e) => [`Step${step(e)} activated`, "blue", []],
  "step.done": (e) => [`Step${step(e)} done${e.late ? " (late)" : ""}`, "green", ["late"]],
  "step.failed": (e) => [`Step${step(e)} failed`, "red", []],
  "step.timed_out": (e) => [`Step${step(e)} timed out${e.final ? " (final)" : ""}`, "red", ["final"]],
  "deadline.missed": (e) => [`Step${step(e)} missed its deadline; a retry is scheduled`, "amber", []],
  "step.retried": (e) => [`Step${step(e)} retried`, "purple", []],
  "step.skipped": (e) => [`Step${step(e)} skipped`, "grey", []],
  "step.compensated": (e) => [`Step${step(e)} compensated`, "amber", []],
  "command.sent": (e) => [`Command ${e.command} sent (${e.action}, attempt ${e.attempt})`, "purple", ["command", "action", "attempt"]],
  "command.would_send": (e) => [`Would send ${e.command} (${e.action}, attempt ${e.attempt})`, "purple", ["command", "action", "attempt"]],
  action: (e) => [`Operator asked: ${e.action}${step(e)}`, "amber", ["action"]],
  "action.rejected": (e) => [`Action ${e.action}${step(e)} rejected`, "red", ["action"]],
  "instance.completed": () => ["Instance completed", "green", []],
  "instance.failed": () => ["Instance failed", "red", []],
  "instance.timed_out": () => ["Instance timed out", "red", []],
  "instance.compensated": () => ["Instance compensated", "amber", []],
  "instance.terminated": () => ["Instance terminated", "grey", []],
  "instance.resumed": () => ["Instance resumed", "blue", []],
  deadline: (e) => [
    e.step ? `Step ${e.step} deadline${e.passed ? " passed" : ""}` : `Flow deadline${e.passed ? " passed" : ""}`,
    e.passed ? "amber" : "outline",
    ["passed"],
  ],
  retry: (e) => [`Retry of step ${e.step} ${e.passed ? "due" : "scheduled"}`, "outline", ["passed"]],
};

function describe(entry) {
  const known = DESCRIBE[entry.type];
  const [title, color, used] = known ? known(entry) : [String(entry.type), "grey", []];
  const hidden = new Set(["at", "type", "step", "upcoming", ...used]);
  const details = Object.entries(entry).filter(([k, v]) => !hidden.has(k) && v !== null && v !== "");
  return { title, color, details };
}

function show(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

/** History plus the deadlines the steps and the instance are waiting for, in time order. */
export function timelineEntries(inst, now = Date.now()) {
  const entries = (inst.history || []).map((e, i) => ({ e, t: ms(e.at) ?? 0, i }));
  let n = entries.length;
  const due = (at, entry) => {
    const t = ms(at);
    if (t !== null) entries.push({ e: { at, ...entry, passed: t <= now, upcoming: t > now }, t, i: n++ });
  };
  for (const [name, st] of Object.entries(inst.steps || {})) {
    if (st.due_at) due(st.due_at, { type: "deadline", step: name });
    if (st.retry_at) due(st.retry_at, { type: "retry", step: name });
  }
  if (inst.deadline_at && !ENDED.has(inst.status)) due(inst.deadline_at, { type: "deadline" });
  entries.sort((a, b) => a.t - b.t || a.i - b.i);
  return entries.map((x) => x.e);
}

function timelineList(inst, entries) {
  const t0 = ms(inst.started_at);
  return h(
    "ol",
    { class: "timeline", "data-testid": "timeline", "aria-label": "Timeline" },
    entries.map((entry) => {
      const { title, color, details } = describe(entry);
      const t = ms(entry.at);
      const offset = t0 !== null && t !== null ? `+${duration(t - t0)}` : "";
      return h(
        "li",
        {
          class: ["entry", `entry-${color}`, entry.upcoming && "upcoming"],
          "data-testid": "timeline-entry",
          "data-type": entry.type,
          "data-step": entry.step || null,
        },
        h("span", { class: "entry-dot", "aria-hidden": "true" }),
        h(
          "div",
          { class: "entry-time" },
          h("time", { datetime: entry.at, title: `${entry.at} (UTC)` }, clock(entry.at)),
          offset ? h("span", { class: "offset" }, offset) : null,
        ),
        h(
          "div",
          { class: "entry-body" },
          h("span", { class: "entry-title" }, title, entry.upcoming ? h("span", { class: "tag tone-amber" }, "upcoming") : null),
          details.length
            ? h(
                "dl",
                { class: "entry-details" },
                details.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, show(v)))),
              )
            : null,
        ),
      );
    }),
  );
}

/** Step lanes over the instance's time span: a bar per step, marks for commands and deadlines. */
function lanes(inst, order, now = Date.now()) {
  const history = inst.history || [];
  const times = [ms(inst.started_at), ...history.map((e) => ms(e.at))];
  for (const st of Object.values(inst.steps || {})) times.push(ms(st.due_at), ms(st.retry_at), ms(st.ended_at));
  if (!ENDED.has(inst.status)) times.push(now);
  else times.push(ms(inst.ended_at));
  const known = times.filter((t) => t !== null);
  if (!known.length) return null;
  const t0 = Math.min(...known);
  // Far-off deadlines (a flow deadline in 3 days) would squash what happened into a sliver:
  // the span reaches half the elapsed time past the last thing that happened, and later marks
  // sit at the right edge.
  const past = Math.max(...known.filter((t) => t <= now), t0);
  const t1 = Math.max(t0 + 1000, Math.min(Math.max(...known), past + Math.max(5000, (past - t0) / 2)));
  const share = (from, to) => `${((Math.min(to - from, t1 - t0) / (t1 - t0)) * 100).toFixed(2)}%`;
  const pct = (t) => share(t0, t);
  const mark = (t, cls, label) =>
    t === null
      ? null
      : h("span", {
          class: ["mark", cls, t > t1 && "beyond"],
          style: { left: pct(t) },
          title: `${label} at ${clock(new Date(t).toISOString())}`,
        });
  const lane = (name, content) =>
    h("div", { class: "lane" }, h("span", { class: "lane-name", title: name }, name), h("div", { class: "lane-track" }, content));
  const events = history.filter((e) => e.type === "event");
  return h(
    "div",
    { class: "lanes", "aria-hidden": "true", "data-testid": "lanes" },
    lane(
      "events",
      events.map((e) => mark(ms(e.at), "mark-event", `event ${e.event}`)),
    ),
    order.map((name) => {
      const st = inst.steps[name];
      const from = ms(st.activated_at);
      let bar = null;
      if (from !== null) {
        const to = Math.min(t1, ms(st.ended_at) ?? (ENDED.has(inst.status) ? ms(inst.ended_at) ?? from : now));
        bar = h("span", {
          class: ["bar", `tone-${tone(st.status)}`],
          style: { left: pct(from), width: `max(3px, ${share(from, Math.max(from, to))})` },
          title: `${name}: ${st.status}`,
        });
      }
      const mine = history.filter((e) => e.step === name);
      return lane(name, [
        bar,
        mine.filter((e) => e.type === "command.sent").map((e) => mark(ms(e.at), "mark-command", `${e.command} (${e.action})`)),
        mine.filter((e) => e.type === "step.timed_out" || e.type === "deadline.missed").map((e) => mark(ms(e.at), "mark-missed", "deadline missed")),
        mine.filter((e) => e.type === "action").map((e) => mark(ms(e.at), "mark-action", `operator ${e.action}`)),
        mark(ms(st.due_at), "mark-due", "deadline"),
        mark(ms(st.retry_at), "mark-retry", "retry"),
      ]);
    }),
    h(
      "div",
      { class: "lane axis" },
      h("span", { class: "lane-name" }, ""),
      h(
        "div",
        { class: "lane-track" },
        h("span", { class: "axis-start" }, clock(new Date(t0).toISOString())),
        h("span", { class: "axis-span" }, duration(t1 - t0)),
        h("span", { class: "axis-end" }, clock(new Date(t1).toISOString())),
      ),
    ),
  );
}

function attemptsText(done, sd) {
  if (!sd) return String(done);
  return done <= sd.attempts ? `${done} of ${sd.attempts}` : `${done} (${sd.attempts} planned)`;
}

// -- the view ------------------------------------------------------------------------------

export function instanceView(ctx, flowName, key) {
  const head = h("section", { class: "card", "data-testid": "instance-head" }, h("h1", {}, key));
  const steps = h("section", { class: "card", "aria-labelledby": "steps-title", "data-testid": "steps" });
  const lanesBox = h("div", { class: "lanes-holder" });
  const list = h("div");
  const timeline = h(
    "section",
    { class: "card", "aria-labelledby": "timeline-title" },
    h("h2", { id: "timeline-title" }, "Timeline"),
    lanesBox,
    list,
  );
  const el = h(
    "div",
    { class: "page" },
    h(
      "nav",
      { class: "breadcrumb", "aria-label": "Breadcrumb" },
      h("a", { href: "#/" }, "Flows"),
      " / ",
      h("a", { href: flowHref(flowName) }, flowName),
      " / ",
      h("span", { "aria-current": "page" }, key),
    ),
    head,
    steps,
    timeline,
  );
  let inst = null;
  let drawn = "";
  let listDrawn = "";
  let pending = false; // an action on its way: buttons stay disabled
  const timers = [];

  const definition = () => ctx.flowsKnown().find((f) => f.name === flowName);

  async function perform(action, stepName) {
    const def = definition();
    const stepDef = def && stepName ? def.steps.find((x) => x.name === stepName) : null;
    const st = stepName ? inst.steps[stepName] : null;
    const lines = [`Instance ${key} of flow ${flowName}, now ${inst.status}.`];
    if (action === "retry") {
      lines.push(
        stepDef && stepDef.command
          ? `Sends ${stepDef.command.name} again (attempt ${st.attempts + 1}) to ${stepDef.command.to} and restarts the step deadline.`
          : "The step becomes active again and its deadline restarts (it has no command to send).",
      );
    } else if (action === "skip") {
      lines.push("The step counts as skipped: the steps after it become active.");
    } else {
      lines.push("The instance ends as TERMINATED: no more commands, deadlines or compensations.");
    }
    const verb = { retry: "Retry", skip: "Skip", terminate: "Terminate" }[action];
    const answer = await confirmAction({
      title: stepName ? `${verb} step ${stepName}?` : `${verb} instance ${key}?`,
      lines,
      tone: action === "retry" ? "primary" : "danger",
      user: api.rememberedUser(),
    });
    if (!answer) return;
    api.rememberUser(answer.user);
    pending = true;
    drawn = "";
    render();
    try {
      const body = { action, reason: answer.reason };
      if (stepName) body.step = stepName;
      const resp = await api.act(flowName, key, body, { user: answer.user, askToken });
      ctx.clear("action");
      ctx.notify(
        `${verb}${stepName ? ` of step ${stepName}` : ""} accepted${resp.id ? ` (action ${resp.id})` : ""}` +
          `${resp.by ? `, recorded as asked by ${resp.by}` : ""}. The timeline shows it once the engine applied it.`,
      );
    } catch (err) {
      ctx.report("action", err);
    } finally {
      pending = false;
      drawn = "";
      ctx.refresh();
      timers.push(setTimeout(ctx.refresh, 500), setTimeout(ctx.refresh, 1200));
    }
  }

  function button(text, label, testid, enabled, why, onclick, cls) {
    return h(
      "button",
      {
        type: "button",
        class: ["button", cls],
        "aria-label": label,
        "data-testid": testid,
        disabled: !enabled || pending,
        title: enabled ? label : why,
        onclick,
      },
      text,
    );
  }

  // One wrapper per cell: on narrow windows a cell is a two-column grid (label, content).
  const td = (label, props, ...content) => h("td", { ...props, "data-label": label }, h("div", { class: "cell" }, ...content));

  function stepRows(order) {
    const def = definition();
    const open = inst.status === "RUNNING" || inst.status === "FAILED";
    const now = Date.now();
    return h(
      "table",
      { class: "steps" },
      h(
        "thead",
        {},
        h("tr", {}, ["Step", "Status", "Attempts", "Activated", "Ended", "Deadline", "Actions"].map((t) => h("th", { scope: "col" }, t))),
      ),
      h(
        "tbody",
        {},
        order.map((name) => {
          const st = inst.steps[name];
          const sd = def ? def.steps.find((x) => x.name === name) : null;
          const dueAt = st.due_at || st.retry_at;
          const overdue = st.due_at && ms(st.due_at) < now && st.status === "ACTIVE";
          const why = open ? `step ${name} is ${st.status}` : `instance is ${inst.status}`;
          return h(
            "tr",
            { "data-testid": `step-row-${name}`, "data-status": st.status },
            h("th", { scope: "row", "data-label": "Step" }, h("div", { class: "cell" }, name, sd && sd.mode ? h("span", { class: "muted mode" }, ` ${sd.mode}`) : null)),
            td("Status", {}, chip(st.status), st.late ? h("span", { class: "tag tone-amber" }, "late") : null),
            td("Attempts", {}, attemptsText(st.attempts, sd)),
            td("Activated", {}, st.activated_at ? h("time", { datetime: st.activated_at, title: st.activated_at }, clock(st.activated_at)) : "–"),
            td("Ended", {}, st.ended_at ? h("time", { datetime: st.ended_at, title: st.ended_at }, clock(st.ended_at)) : "–"),
            td(
              "Deadline",
              { class: overdue ? "overdue" : null },
              dueAt
                ? [
                    st.retry_at ? "retry " : overdue ? "overdue, was due " : "due ",
                    h("time", { datetime: dueAt, title: `${dueAt} (UTC)`, "data-relative": "" }, ago(dueAt, now)),
                  ]
                : "–",
            ),
            td(
              "Actions",
              { class: "actions" },
              button("Retry", `Retry step ${name}`, `retry-${name}`, open && RETRYABLE.has(st.status), why, () => perform("retry", name)),
              button("Skip", `Skip step ${name}`, `skip-${name}`, open && SKIPPABLE.has(st.status), why, () => perform("skip", name)),
            ),
          );
        }),
      ),
    );
  }

  function headContent() {
    const canTerminate = !ENDED.has(inst.status);
    const facts = [
      ["flow", `${flowName} v${inst.version}`],
      ["started", inst.started_at],
      ["ended", inst.ended_at],
      ["deadline", inst.deadline_at],
    ];
    return [
      h(
        "div",
        { class: "instance-title" },
        h("h1", {}, inst.key),
        chip(inst.status, { "data-testid": "instance-status" }),
        h(
          "div",
          { class: "head-actions" },
          button(
            "Terminate",
            `Terminate instance ${inst.key}`,
            "terminate",
            canTerminate,
            `instance is ${inst.status}`,
            () => perform("terminate", null),
            "danger",
          ),
        ),
      ),
      h(
        "dl",
        { class: "meta" },
        facts.map(([k, v]) =>
          h(
            "div",
            {},
            h("dt", {}, k),
            h("dd", {}, k === "flow" ? v : v ? h("time", { datetime: v, title: `${v} (UTC)` }, clock(v)) : "–"),
          ),
        ),
      ),
      inst.reason ? h("p", { class: "reason", "data-testid": "instance-reason" }, inst.reason) : null,
      inst.history_dropped ? h("p", { class: "muted" }, `${inst.history_dropped} older history entries were dropped.`) : null,
    ];
  }

  function render() {
    if (!inst) return;
    const order = Object.keys(inst.steps || {});
    const now = Date.now();
    const passed = Object.values(inst.steps || {}).map((st) => ms(st.due_at || st.retry_at) < now);
    const sig = JSON.stringify([inst, pending, !!definition(), passed]);
    if (sig !== drawn) {
      drawn = sig;
      fill(head, headContent());
      fill(steps, h("h2", { id: "steps-title" }, "Steps"), stepRows(order));
    }
    const entries = timelineEntries(inst);
    const listSig = JSON.stringify(entries);
    if (listSig !== listDrawn) {
      listDrawn = listSig;
      fill(list, timelineList(inst, entries));
    }
    fill(lanesBox, lanes(inst, order));
  }

  return {
    title: `${key} · ${flowName}`,
    el,
    async refresh() {
      if (!definition()) {
        try {
          ctx.setFlows((await api.flows()).flows || []);
          ctx.clear("flows");
        } catch (err) {
          ctx.report("flows", err);
        }
      }
      try {
        inst = await api.instance(flowName, key);
        ctx.clear("instance");
      } catch (err) {
        ctx.report("instance", err);
        if (err.status === 404) {
          inst = null;
          drawn = "";
          listDrawn = "";
          fill(
            head,
            h("h1", {}, key),
            h("p", { class: "warning" }, `No instance of ${flowName} has this key (yet): this page checks again every 2 s.`),
          );
          steps.hidden = timeline.hidden = true;
        }
        return;
      }
      steps.hidden = timeline.hidden = false;
      render();
    },
    destroy() {
      timers.forEach(clearTimeout);
      for (const source of ["instance", "action"]) ctx.clear(source);
    },
  };
}
