// The worker's JSON API (docs/api.md). Paths are relative to the page, so the dashboard also
// works behind a proxy that mounts the worker under a prefix.

import { enc } from "./dom.js";

const TOKEN_KEY = "sagabridge.token";
const USER_KEY = "sagabridge.user";

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** GET or POST JSON; an answer that is not 2xx becomes an ApiError with the API's `error` text. */
export async function request(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `${method} /${path}: the worker does not answer (${err.message})`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const said = data && typeof data.error === "string" ? data.error : resp.statusText || "no details";
    throw new ApiError(resp.status, `${method} /${path}: ${said} (${resp.status})`, data);
  }
  if (data === null || typeof data !== "object") {
    throw new ApiError(resp.status, `${method} /${path}: the answer is not a JSON object`);
  }
  return data;
}

export const health = () => request("healthz");
export const flows = () => request("api/flows");
export const instance = (flow, key) => request(`api/flows/${enc(flow)}/instances/${enc(key)}`);

/** A search: params as in docs/api.md (status, step, overdue, key_prefix, limit, cursor). */
export function search(flow, params) {
  const query = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""),
  );
  return request(`api/flows/${enc(flow)}/instances?${query}`);
}

// sessionStorage / localStorage can be unavailable (privacy modes): then nothing is remembered.
function stored(area, key) {
  try {
    return area.getItem(key) || "";
  } catch {
    return "";
  }
}

function store(area, key, value) {
  try {
    if (value) area.setItem(key, value);
    else area.removeItem(key);
  } catch {
    /* not kept: asked again next time */
  }
}

export const rememberedUser = () => stored(localStorage, USER_KEY);
export const rememberUser = (name) => store(localStorage, USER_KEY, name);

/**
 * POST an operator action. A 401 asks for a bearer token (askToken resolves to the token, or
 * null when the operator cancels), keeps it for this tab, and sends the action again.
 */
export async function act(flow, key, body, { user = "", askToken }) {
  const path = `api/flows/${enc(flow)}/instances/${enc(key)}/actions`;
  for (let refused = 0; ; refused++) {
    const token = stored(sessionStorage, TOKEN_KEY);
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (user) headers["X-Sagabridge-User"] = user;
    try {
      return await request(path, { method: "POST", body, headers });
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401 || refused >= 3) throw err;
      store(sessionStorage, TOKEN_KEY, "");
      const fresh = await askToken(token ? "The worker refused that token." : "");
      if (!fresh) throw err;
      store(sessionStorage, TOKEN_KEY, fresh);
    }
  }
}
