// The REST API as the console calls it. Every call carries the user's bearer token (kept
// in sessionStorage, so it ends with the tab) and the chosen project; the console has no
// path of its own around the API, so RBAC and the audit log see everything it does.

const TOKEN_KEY = "sovdb.token";
const PROJECT_KEY = "sovdb.project";

/** An answer other than 2xx, with the API's error code and message. */
export class ApiError extends Error {
  constructor(status, body, text) {
    const message = body && body.message ? body.message : (text || `the server answered ${status}`);
    super(message);
    this.status = status;
    this.code = body && body.code ? body.code : "http_" + status;
    this.requestId = body && body.request_id ? body.request_id : null;
  }
}

let unauthorized = () => {};

/** What to do when the API answers 401 (the token expired or was revoked). */
export function onUnauthorized(f) {
  unauthorized = f;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function project() {
  return sessionStorage.getItem(PROJECT_KEY) || "default";
}

export function setProject(p) {
  sessionStorage.setItem(PROJECT_KEY, p);
}

function headers(extra) {
  const h = { "x-sovdb-project": project(), ...extra };
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

/** One API call; resolves to the parsed JSON body (null for 204), rejects with ApiError. */
export async function call(method, path, body) {
  const init = { method, headers: headers({ Accept: "application/json" }), cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch("/api/v1" + path, init);
  const text = r.status === 204 ? "" : await r.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!r.ok) {
    const e = new ApiError(r.status, data, text);
    if (r.status === 401 && path !== "/login") unauthorized(e);
    throw e;
  }
  return data;
}

export const get = (p) => call("GET", p);
export const post = (p, b) => call("POST", p, b === undefined ? {} : b);
export const put = (p, b) => call("PUT", p, b);
export const del = (p) => call("DELETE", p);

/** Every item of a paged list, following `next_page_token`. */
export async function all(path) {
  const items = [];
  let next = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(next ? `${path}${sep}page_token=${encodeURIComponent(next)}` : path);
    items.push(...page.items);
    next = page.next_page_token || null;
  } while (next);
  return items;
}

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function isFinal(op) {
  return FINAL.has(op.state);
}

/**
 * Reads one server-sent-events answer of `path` with fetch() (EventSource can't send an
 * Authorization header, and the token never goes into a URL), calling `onEvent(name,
 * data)` for each event. Resolves when the server ends the stream or the network cuts it
 * (the caller decides whether to reopen), or when `signal` aborts; rejects with ApiError
 * when the API refuses, and with what `onEvent` throws.
 */
export async function readEvents(path, onEvent, signal) {
  let r;
  try {
    r = await fetch("/api/v1" + path, {
      headers: headers({ Accept: "text/event-stream" }),
      cache: "no-store",
      credentials: "omit",
      signal,
    });
  } catch (e) {
    return; // the network, or the abort
  }
  if (!r.ok) {
    const text = await r.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
    const e = new ApiError(r.status, data, text);
    if (r.status === 401) unauthorized(e);
    throw e;
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        // Comment lines alone (keep-alives) make a block without data.
        if (data.length) onEvent(event, data.join("\n"));
      }
    }
  } catch (e) {
    if ((signal && signal.aborted) || e instanceof TypeError) return;
    throw e;
  } finally {
    reader.cancel().catch(() => {});
  }
}

const pause = (ms) => new Promise((res) => setTimeout(res, ms));

/**
 * Follows an operation through `GET /operations/{id}/events` (server-sent events) until
 * it ends, calling `onUpdate` with each new state. A stream cut short (a server restart)
 * is reopened.
 */
export async function watchOperation(id, onUpdate, signal) {
  let last = null;
  for (;;) {
    await readEvents(
      `/operations/${encodeURIComponent(id)}/events`,
      (event, data) => {
        if (event === "operation") {
          last = JSON.parse(data);
          onUpdate(last);
        } else if (event === "error") {
          throw new Error(data);
        }
      },
      signal,
    );
    if (last && isFinal(last)) return last;
    if (signal && signal.aborted) return last;
    await pause(1000);
  }
}

/**
 * Follows the timeline (`GET /events?follow=true`, server-sent events), calling `onEvent`
 * with each new event, from `since` (an RFC 3339 time; default now) until `signal`
 * aborts. A stream cut short is reopened from the newest event seen; an event seen twice
 * (the reopened stream looks back a little) is passed on once.
 */
export async function followEvents(query, since, onEvent, signal) {
  const seen = new Set();
  let from = since;
  while (!(signal && signal.aborted)) {
    const q = new URLSearchParams(query);
    q.set("follow", "true");
    if (from) q.set("since", from);
    await readEvents(
      `/events?${q}`,
      (event, data) => {
        if (event !== "event") return;
        const e = JSON.parse(data);
        if (seen.has(e.id)) return;
        seen.add(e.id);
        if (!from || Date.parse(e.at) > Date.parse(from)) from = e.at;
        onEvent(e);
      },
      signal,
    );
    if (signal && signal.aborted) return;
    await pause(1000);
  }
}
