// Building DOM from data without ever parsing it as HTML: every string from the API reaches the
// page through textContent or setAttribute, so it is shown, never interpreted.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, props, children) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") el.textContent = String(value);
    else if (name === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "style") Object.assign(el.style, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("a", {href: "#/", class: "x"}, "text", otherNode). */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, same shape as h(). */
export function s(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

/** Replace the children of `el` with `nodes`. */
export function fill(el, ...nodes) {
  el.replaceChildren();
  append(el, nodes);
  return el;
}

// -- statuses ------------------------------------------------------------------------------

const TONES = {
  RUNNING: "blue",
  ACTIVE: "blue",
  COMPLETED: "green",
  DONE: "green",
  FAILED: "red",
  TIMED_OUT: "red",
  COMPENSATING: "amber",
  COMPENSATED: "amber",
  TERMINATED: "grey",
  PENDING: "grey",
  SKIPPED: "grey",
};

/** The colour family of an instance or step status: blue, green, red, amber or grey. */
export function tone(status) {
  return TONES[status] || "grey";
}

/** A status as a coloured chip; the status text itself is what is read out. */
export function chip(status, props = {}) {
  const text = status === null || status === undefined ? "?" : String(status);
  return h("span", { ...props, class: ["chip", `tone-${tone(text)}`, props.class] }, text);
}

// -- time ----------------------------------------------------------------------------------

export function ms(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** A UTC time: HH:MM:SS.mmm today, with the date on other days. */
export function clock(iso, now = Date.now()) {
  const t = ms(iso);
  if (t === null) return iso ? String(iso) : "–";
  const d = new Date(t);
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
  const day = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const today = new Date(now).toISOString().slice(0, 10);
  return day === today ? time : `${day} ${time}`;
}

/** A duration in the units a person reads: 450 ms, 12.5 s, 3 min 20 s, 2 h 5 min, 3 d 4 h. */
export function duration(millis) {
  const a = Math.abs(millis);
  if (a < 1000) return `${Math.round(a)} ms`;
  if (a < 60_000) return `${(a / 1000).toFixed(a < 10_000 ? 1 : 0)} s`;
  const parts = (big, bigUnit, small, smallUnit) =>
    small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`;
  if (a < 3_600_000) return parts(Math.floor(a / 60_000), "min", Math.floor((a % 60_000) / 1000), "s");
  if (a < 86_400_000) return parts(Math.floor(a / 3_600_000), "h", Math.floor((a % 3_600_000) / 60_000), "min");
  return parts(Math.floor(a / 86_400_000), "d", Math.floor((a % 86_400_000) / 3_600_000), "h");
}

/** "3 s ago" / "in 12 s", relative to now. */
export function ago(iso, now = Date.now()) {
  const t = ms(iso);
  if (t === null) return "–";
  const d = now - t;
  if (Math.abs(d) < 500) return "now";
  return d > 0 ? `${duration(d)} ago` : `in ${duration(d)}`;
}

/** A <time> element: the relative or clock text shown, the full ISO time on hover. */
export function when(iso, { relative = false, now = Date.now() } = {}) {
  if (!iso) return h("span", { class: "muted" }, "–");
  return h("time", { datetime: iso, title: `${iso} (UTC)` }, relative ? ago(iso, now) : clock(iso, now));
}

// -- routes --------------------------------------------------------------------------------

export const enc = encodeURIComponent;

export function flowHref(flow, params) {
  const query = params ? new URLSearchParams(params).toString() : "";
  return `#/flows/${enc(flow)}${query ? `?${query}` : ""}`;
}

export function instanceHref(flow, key) {
  return `#/flows/${enc(flow)}/instances/${enc(key)}`;
}

/** Cut a label to `max` characters, with an ellipsis. */
export function clip(text, max) {
  const str = String(text);
  return str.length > max ? `${str.slice(0, Math.max(1, max - 1))}…` : str;
}
