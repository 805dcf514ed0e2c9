// Small DOM helpers. Everything is built with createElement and textContent, never from
// HTML strings, so nothing the API returns can become markup.

/** An element: h("a", {href: "#/"}, "text", child, ...). Attributes starting with `on` are listeners. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/** Appends children to `el`, skipping null, undefined and false (Element.append would
 * write them out as text). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A table with a caption (for screen readers) and a row per item; `empty` when there are none. */
export function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty || "None.");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c[0])))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c, i) => (i === 0 ? h("th", { scope: "row" }, c[1](r)) : h("td", {}, c[1](r))))))),
    ),
  );
}

/** A definition list of [term, value] pairs. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter((p) => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === undefined || v === null || v === "" ? "—" : v)]));
}

export function badge(state) {
  return h("span", { class: "badge state-" + String(state).replace(/[^a-z-]/g, "") }, state);
}

export function time(t) {
  if (!t) return "—";
  const d = new Date(t);
  return h("time", { datetime: t, title: t }, d.toLocaleString());
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}

/** A message box for an error (role="alert" so screen readers read it out). */
export function errorBox(e) {
  const text = e && e.message ? e.message : String(e);
  return h("div", { class: "error", role: "alert" }, h("strong", {}, e && e.status === 403 ? "Refused: " : "Error: "), text, e && e.requestId ? h("span", { class: "muted" }, ` (request ${e.requestId})`) : null);
}

export function notice(text) {
  return h("div", { class: "notice", role: "status" }, text);
}

/** A labelled form field; `input` gets an id if it has none. */
let fieldSeq = 0;
export function field(label, input, hint) {
  if (!input.id) input.id = "f" + ++fieldSeq;
  let hintEl = null;
  if (hint) {
    hintEl = h("small", { id: input.id + "-hint", class: "hint" }, hint);
    input.setAttribute("aria-describedby", hintEl.id);
  }
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input, hintEl);
}

export function checkbox(label, input) {
  if (!input.id) input.id = "f" + ++fieldSeq;
  return h("div", { class: "field check" }, input, h("label", { for: input.id }, label));
}

/**
 * A form whose submit runs `action(form)`; the API's answer (error or success) is shown in
 * a live region next to the form, and the submit button is disabled while it runs.
 */
export function form(label, children, submitText, action) {
  const status = h("div", { class: "form-status", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary" }, submitText);
  const f = h("form", { "aria-label": label, novalidate: true }, children, h("div", { class: "actions" }, button), status);
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear(status);
    button.disabled = true;
    try {
      const msg = await action(f);
      if (msg) status.append(notice(msg));
    } catch (e) {
      status.append(errorBox(e));
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

/**
 * Asks to confirm a destructive action by typing the resource's name; resolves to true
 * only when the typed name matches and the user pressed the button. `extra` (optional)
 * is shown in the dialog, for options of the action.
 */
export function confirmByName(what, name, extra) {
  return new Promise((resolve) => {
    const input = h("input", { type: "text", autocomplete: "off", spellcheck: "false", name: "confirm-name" });
    const ok = h("button", { type: "submit", class: "danger", disabled: true }, "Delete");
    const cancel = h("button", { type: "button" }, "Cancel");
    const dialog = h(
      "dialog",
      { "aria-labelledby": "confirm-title", class: "confirm" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "confirm-title" }, `Delete ${what} ${name}?`),
        h("p", {}, "This cannot be undone. Type ", h("code", {}, name), " to confirm."),
        field(`Name of the ${what}`, input),
        extra || null,
        h("div", { class: "actions" }, ok, cancel),
      ),
    );
    input.addEventListener("input", () => {
      ok.disabled = input.value !== name;
    });
    let answered = false;
    const done = (v) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(v);
    };
    ok.addEventListener("click", (ev) => {
      ev.preventDefault();
      done(input.value === name);
    });
    cancel.addEventListener("click", () => done(false));
    dialog.addEventListener("close", () => done(false));
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/** Labels text like `a=b, c=d` into an object; throws with a message on a bad entry. */
export function parseLabels(text) {
  const out = {};
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i <= 0) throw new Error(`"${part}" is not key=value`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

export function labelsText(labels) {
  return Object.entries(labels || {})
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
}
