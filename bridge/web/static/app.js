// The dashboard shell: header (search, worker health), error banner, hash routes, live refresh.
//   #/                            every flow with its diagram
//   #/flows/NAME[?step=&status=&key=]  one flow: diagram, stuck and failed instances, a filtered list
//   #/flows/NAME/instances/KEY    one instance: steps, actions, timeline

import * as api from "./api.js";
import { ago, fill, h, instanceHref, flowHref, duration } from "./dom.js";
import { flowView, homeView } from "./flow-view.js";
import { instanceView } from "./instance-view.js";

const REFRESH_MS = 2000;
const HEALTH_MS = 5000;

const $ = (id) => document.getElementById(id);

// -- errors and notices --------------------------------------------------------------------

const errors = new Map(); // source -> message; a source's next success clears its message

function renderBanner() {
  const banner = $("banner");
  banner.hidden = errors.size === 0;
  document.body.classList.toggle("stale", errors.has("network"));
  fill(
    $("banner-messages"),
    [...errors.values()].map((m) => h("li", {}, m)),
  );
}

function report(source, err) {
  if (err && err.status === 0 && source !== "action") {
    // The worker is down or unreachable: one line for it, not one per request.
    errors.set("network", "The worker does not answer: the data shown may be stale.");
  } else {
    errors.set(source, err && err.message ? err.message : String(err));
  }
  renderBanner();
}

function clear(source) {
  const a = errors.delete(source);
  const b = errors.delete("network"); // anything answering means the worker is back
  if (a || b) renderBanner();
}

let noticeTimer = 0;
function notify(message) {
  const el = $("notice");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    el.hidden = true;
  }, 8000);
}

// -- flows, shared by the views and the search box ------------------------------------------

let knownFlows = [];

function setFlows(list) {
  knownFlows = list;
  const select = $("search-flow");
  const current = select.value || (route().flow ?? "");
  const names = list.map((f) => f.name);
  if (names.join("\n") !== [...select.options].map((o) => o.value).join("\n")) {
    fill(select, names.map((n) => h("option", { value: n }, n)));
  }
  if (names.includes(current)) select.value = current;
  $("search-flow-wrap").hidden = names.length < 2;
}

const flowsKnown = () => knownFlows;

// -- routes --------------------------------------------------------------------------------

function decode(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function route() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const parts = path.split("/").filter(Boolean).map(decode);
  if (parts.length === 0) return { name: "home", params };
  if (parts[0] === "flows" && parts.length === 2) return { name: "flow", flow: parts[1], params };
  if (parts[0] === "flows" && parts.length === 4 && parts[2] === "instances") {
    return { name: "instance", flow: parts[1], key: parts[3], params };
  }
  return { name: "missing", params };
}

let view = null;
let busy = null;
let retired = () => {};

/** What a view may do to the shell; a view that was left can no longer raise errors. */
function context() {
  let live = true;
  retired = () => {
    live = false;
  };
  return {
    report: (source, err) => live && report(source, err),
    clear,
    notify: (message) => live && notify(message),
    setFlows,
    flowsKnown,
    refresh: () => live && refreshNow(),
  };
}

function mount() {
  if (view && view.destroy) view.destroy();
  retired();
  $("notice").hidden = true;
  const ctx = context();
  const r = route();
  if (r.name === "home") view = homeView(ctx);
  else if (r.name === "flow") view = flowView(ctx, r.flow, r.params);
  else if (r.name === "instance") view = instanceView(ctx, r.flow, r.key);
  else {
    view = {
      title: "Not found",
      el: h("section", { class: "card" }, h("h1", {}, "Nothing here"), h("p", {}, h("a", { href: "#/" }, "Back to the flows"))),
    };
  }
  if (r.flow && $("search-flow").querySelector(`option[value="${CSS.escape(r.flow)}"]`)) {
    $("search-flow").value = r.flow;
  }
  document.title = `${view.title} · sagabridge`;
  fill($("view"), view.el);
  busy = null;
  refreshNow();
  window.scrollTo(0, 0);
}

async function refreshNow() {
  const current = view;
  if (!current || !current.refresh) return;
  if (busy) return busy;
  busy = current
    .refresh()
    .catch((err) => report("view", err))
    .finally(() => {
      if (view === current) busy = null;
    });
  return busy;
}

// -- search by key -------------------------------------------------------------------------

async function search(event) {
  event.preventDefault();
  const key = $("search-key").value.trim();
  const flow = $("search-flow").value || (knownFlows[0] && knownFlows[0].name);
  if (!key || !flow) return;
  try {
    await api.instance(flow, key);
    clear("search");
    location.hash = instanceHref(flow, key);
  } catch (err) {
    if (err.status === 404 && !(err.body && err.body.flows)) {
      clear("search"); // not an exact key: list the keys that start with it
      location.hash = flowHref(flow, { key });
    } else {
      report("search", err);
    }
  }
}

// -- worker health -------------------------------------------------------------------------

async function checkHealth() {
  const el = $("health");
  let state;
  let text;
  let title = "";
  try {
    const resp = await fetch("healthz", { cache: "no-store", headers: { Accept: "application/json" } });
    const body = await resp.json().catch(() => ({}));
    const parts = Array.isArray(body.partitions) ? body.partitions : [];
    const up = Number.isFinite(body.uptime_s) ? ` · up ${duration(body.uptime_s * 1000)}` : "";
    if (body.status === "ok" || body.status === "starting") {
      state = body.status;
      text = `${state === "ok" ? "healthy" : "starting"} · ${parts.length} partition${parts.length === 1 ? "" : "s"}${up}`;
      title = `Partitions: ${parts.join(", ") || "none"}\nFlows: ${(body.flows || []).join(", ")}`;
    } else {
      state = "down";
      text = `health check failed (${resp.status})`;
    }
  } catch {
    state = "down";
    text = "worker unreachable";
  }
  el.className = `health health-${state}`;
  el.title = title;
  fill(el, h("span", { class: "dot", "aria-hidden": "true" }), h("span", { "data-testid": "health-text" }, text));
  el.dataset.state = state;
}

// -- relative times tick on their own, so lists re-render only when their data changes -------

function tickTimes() {
  const now = Date.now();
  for (const el of document.querySelectorAll("time[data-relative]")) {
    el.textContent = ago(el.getAttribute("datetime"), now);
  }
}

function start() {
  $("search-form").addEventListener("submit", search);
  $("banner-dismiss").addEventListener("click", () => {
    errors.clear();
    renderBanner();
  });
  window.addEventListener("hashchange", mount);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshNow();
  });
  setInterval(() => {
    if (!document.hidden) refreshNow();
  }, REFRESH_MS);
  setInterval(tickTimes, 1000);
  checkHealth();
  setInterval(checkHealth, HEALTH_MS);
  api
    .flows()
    .then((body) => {
      setFlows(body.flows || []);
      clear("flows");
    })
    .catch((err) => report("flows", err));
  mount();
}

start();
