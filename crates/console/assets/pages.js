// The console's pages. Each takes the <main> element and {args, signal, session}, reads
// what it shows from the API and builds the page. Change buttons are shown only to roles
// that may use them; the API decides anyway, and its refusal is shown if one comes.

import * as api from "./api.js";
import { metricsPanel } from "./charts.js";
import { h, add, clear, table, facts, badge, time, bytes, errorBox, notice, field, checkbox, form, confirmByName, parseLabels, labelsText } from "./ui.js";

const enc = encodeURIComponent;

function heading(text, ...actions) {
  return h("div", { class: "page-head" }, h("h1", {}, text), actions.length ? h("div", { class: "actions" }, actions) : null);
}

function section(title, ...children) {
  const id = "s-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), children);
}

function link(href, text) {
  return h("a", { href }, text);
}

function button(text, onclick, cls, attrs) {
  return h("button", { type: "button", class: cls || "", onclick, ...(attrs || {}) }, text);
}

/** A placeholder filled when `load` resolves, or with the error it failed with. */
function later(load) {
  const box = h("div", { class: "loading", "aria-busy": "true" }, "Loading…");
  load()
    .then((content) => {
      box.removeAttribute("aria-busy");
      box.className = "";
      clear(box).append(content);
    })
    .catch((e) => {
      box.removeAttribute("aria-busy");
      box.className = "";
      clear(box).append(errorBox(e));
    });
  return box;
}

// ---------------------------------------------------------------- operations, live

/** The steps of an operation as a list, updated live while it runs. */
export function operationProgress(op, signal, onEnd) {
  const summary = h("p", { class: "op-summary", "aria-live": "polite" });
  const list = h("ol", { class: "steps" });
  const error = h("div");
  const render = (o) => {
    const done = o.steps.filter((s) => s.state === "succeeded").length;
    clear(summary).append(badge(o.state), ` ${o.kind} on ${o.target}: ${done} of ${o.steps.length} steps done`);
    clear(list);
    for (const s of o.steps) {
      list.append(
        h(
          "li",
          { class: "step step-" + s.state, "data-step": s.name },
          h("span", { class: "step-name" }, s.name),
          " ",
          badge(s.state),
          s.attempts > 1 ? h("span", { class: "muted" }, ` attempt ${s.attempts}`) : null,
          s.progress ? h("div", { class: "step-progress muted" }, s.progress.message) : null,
          s.error ? h("div", { class: "step-error" }, s.error.message) : null,
        ),
      );
    }
    clear(error);
    if (o.error && api.isFinal(o)) error.append(errorBox(new Error(o.error.message)));
  };
  render(op);
  const box = h("div", { class: "op-progress", "data-operation": op.id, "data-state": op.state }, summary, list, error);
  if (!api.isFinal(op)) {
    api
      .watchOperation(
        op.id,
        (o) => {
          box.setAttribute("data-state", o.state);
          render(o);
        },
        signal,
      )
      .then((o) => o && api.isFinal(o) && onEnd && onEnd(o))
      .catch((e) => error.append(errorBox(e)));
  } else if (onEnd) {
    onEnd(op);
  }
  return box;
}

/** Starts an operation with `start()` and shows its live progress in `into`. */
async function runOperation(into, start, signal, onEnd) {
  const op = await start();
  clear(into).append(
    h("p", {}, "Operation ", link(`#/operations/${op.id}`, op.id), " started."),
    operationProgress(op, signal, onEnd),
  );
  into.scrollIntoView({ block: "nearest" });
}

export async function operations(main, { signal }) {
  main.append(heading("Operations"));
  const ops = (await api.get("/operations?limit=200")).items;
  main.append(operationTable(ops));
}

function operationTable(ops, empty) {
  return table(
    "Operations",
    [
      ["Operation", (o) => link(`#/operations/${o.id}`, o.kind)],
      ["Target", (o) => o.target],
      ["State", (o) => badge(o.state)],
      ["By", (o) => o.created_by],
      ["Started", (o) => time(o.created_at)],
      ["Finished", (o) => time(o.finished_at)],
    ],
    ops,
    empty || "No operations.",
  );
}

export async function operationDetail(main, { args: [id], signal, session }) {
  const op = await api.get(`/operations/${enc(id)}`);
  const status = h("div", { "aria-live": "polite" });
  const cancel =
    session.can("operator") && !api.isFinal(op)
      ? button(
          "Cancel operation",
          async () => {
            clear(status);
            try {
              await api.post(`/operations/${enc(id)}/cancel`);
              status.append(notice("Cancel requested: it takes effect at the next step boundary."));
            } catch (e) {
              status.append(errorBox(e));
            }
          },
          "danger",
        )
      : null;
  const target = op.target.startsWith("cluster/") ? link(`#/clusters/${enc(op.target.slice(8))}`, op.target) : op.target;
  main.append(
    heading(`Operation ${op.kind}`, cancel),
    status,
    facts([
      ["ID", h("code", {}, op.id)],
      ["Target", target],
      ["Project", op.project],
      ["Started by", op.created_by],
      ["Created", time(op.created_at)],
      ["Finished", time(op.finished_at)],
    ]),
    section("Steps", operationProgress(op, signal, () => cancel && cancel.remove())),
  );
}

// ---------------------------------------------------------------- overview

export async function overview(main, { session }) {
  main.append(heading("Overview"));
  const [clusters, ops, open] = await Promise.all([api.all("/clusters"), api.get("/operations?limit=10"), api.all("/alerts?open=true")]);
  const counts = {};
  for (const c of clusters) counts[c.state] = (counts[c.state] || 0) + 1;
  const states = ["ready", "creating", "degraded", "failed", "deleting"];
  const firing = open.filter((a) => a.state === "firing");
  const pending = open.length - firing.length;
  main.append(
    h(
      "div",
      { class: "overview-top" },
      section(
        "Clusters by state",
        h(
          "ul",
          { class: "tiles" },
          states.map((s) => h("li", { class: "tile state-" + s }, h("span", { class: "count" }, String(counts[s] || 0)), h("span", {}, s))),
        ),
        h("p", {}, link("#/clusters", `All ${clusters.length} clusters`), session.can("developer") ? [" · ", link("#/clusters/new", "Create a cluster")] : null),
      ),
      section(
        "Firing alerts",
        h(
          "ul",
          { class: "tiles" },
          h("li", { class: "tile state-firing", id: "firing-count" }, h("span", { class: "count" }, String(firing.length)), h("span", {}, "firing")),
          h("li", { class: "tile state-pending" }, h("span", { class: "count" }, String(pending)), h("span", {}, "pending")),
        ),
        firing.length
          ? h(
              "ul",
              { class: "alert-list" },
              firing.map((a) =>
                h(
                  "li",
                  {},
                  badge(a.severity),
                  " ",
                  link("#/alerts", `${a.rule} on ${a.subject}`),
                  a.silenced ? h("span", { class: "muted" }, " (silenced)") : null,
                  h("span", { class: "muted" }, " since "),
                  time(a.started_at || a.pending_since),
                ),
              ),
            )
          : h("p", { class: "empty" }, "Nothing is firing."),
        h("p", {}, link("#/alerts", "Alerts, rules and channels")),
      ),
    ),
    section("Recent operations", operationTable(ops.items), h("p", {}, link("#/operations", "All operations"))),
  );
}

// ---------------------------------------------------------------- clusters

export async function clusters(main, { session }) {
  main.append(heading("Clusters", session.can("developer") ? h("a", { href: "#/clusters/new", class: "button primary" }, "Create a cluster") : null));
  const items = await api.all("/clusters");
  main.append(
    table(
      "Clusters",
      [
        ["Name", (c) => link(`#/clusters/${enc(c.name)}`, c.name)],
        ["State", (c) => badge(c.state)],
        ["Engine", (c) => `${c.engine} ${c.version}`],
        ["Location", (c) => c.location],
        ["Created", (c) => time(c.created_at)],
      ],
      items,
      "No clusters in this project yet.",
    ),
  );
}

function input(attrs) {
  return h("input", { type: "text", ...attrs });
}

function select(name, options, selected) {
  return h(
    "select",
    { name },
    options.map(([value, text]) => h("option", { value, selected: value === selected }, text)),
  );
}

function paramsText(text) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const i = line.indexOf("=");
    if (i <= 0) throw new Error(`parameter "${line}" is not name=value`);
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

export async function clusterCreate(main, { session, signal }) {
  main.append(heading("Create a cluster"));
  if (!session.can("developer")) {
    main.append(notice("Your role in this project can't create clusters (developer or more is needed)."));
    return;
  }
  const [locations, repos] = await Promise.all([api.all("/locations"), api.all("/repos").catch(() => [])]);
  const name = input({ name: "name", required: true, autocomplete: "off", pattern: "[a-z0-9-]+" });
  const loc = select("location", [["", "default location"], ...locations.map((l) => [l.name, `${l.name} (${l.provider}, ${l.region})`])], "");
  const replicas = h("input", { type: "number", name: "replicas", min: 1, max: 9, value: 1 });
  const sync = h("input", { type: "checkbox", name: "sync" });
  const spread = select("spread", [["", "no rule"], ["host", "every member on its own host"], ["zone", "every member in its own zone"]], "");
  const labels = input({ name: "require_labels", placeholder: "jurisdiction=EU, tier=nvme" });
  const db = input({ name: "db", placeholder: "app" });
  const user = input({ name: "user", placeholder: "app" });
  const params = h("textarea", { name: "params", rows: 3, placeholder: "work_mem=8MB" });
  const pooler = h("input", { type: "checkbox", name: "pooler" });
  const repo = select("backup_repo", [["", "the location's default repository, if any"], ...repos.map((r) => [r.name, `${r.name} (${r.type}, ${r.location})`])], "");
  const progress = h("div", { class: "progress-area" });
  main.append(
    form(
      "Create a cluster",
      [
        field("Name", name, "A DNS label: lower-case letters, digits and hyphens."),
        h(
          "fieldset",
          {},
          h("legend", {}, "Topology"),
          field("Members", replicas, "One primary and the rest standbys."),
          checkbox("Synchronous replication (no acknowledged commit lost on failover)", sync),
          checkbox("Connection pooler (PgBouncer)", pooler),
        ),
        h(
          "fieldset",
          {},
          h("legend", {}, "Placement"),
          field("Location", loc),
          field("Spread", spread),
          field("Required host labels", labels, "key=value pairs, separated by commas."),
        ),
        h("fieldset", {}, h("legend", {}, "Database"), field("Database name", db), field("User", user), field("Parameters", params, "One name=value per line.")),
        field("Backup repository", repo),
      ],
      "Create cluster",
      async () => {
        const body = { name: name.value.trim(), engine: "postgres", replicas: Number(replicas.value), sync: sync.checked, pooler: pooler.checked };
        if (loc.value) body.location = loc.value;
        if (spread.value) body.spread = spread.value;
        const l = parseLabels(labels.value);
        if (Object.keys(l).length) body.require_labels = l;
        if (db.value.trim()) body.db = db.value.trim();
        if (user.value.trim()) body.user = user.value.trim();
        const p = paramsText(params.value);
        if (Object.keys(p).length) body.params = p;
        if (repo.value) body.backup_repo = repo.value;
        await runOperation(progress, () => api.post("/clusters", body), signal, (o) => {
          if (o.state === "succeeded") progress.append(h("p", {}, link(`#/clusters/${enc(body.name)}`, `Open cluster ${body.name}`)));
        });
        return null;
      },
    ),
    progress,
  );
  name.focus();
}

export async function clusterDetail(main, { args: [name], signal, session }) {
  const c = await api.get(`/clusters/${enc(name)}`);
  const cl = c; // the cluster's own fields are flattened into the detail
  const path = `/clusters/${enc(name)}`;
  const live = h("div", { class: "progress-area", "aria-live": "polite" });
  const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  // Runs an operation with its progress at the top of the page; once it succeeded, what
  // `next()` offers (by default: this page again, to see the change).
  const run = (start, next) =>
    runOperation(live, start, signal, (o) => {
      if (o.state === "succeeded") live.append(h("p", {}, next ? next() : button("Refresh the cluster", reload, "", { id: "refresh" })));
    }).catch((e) => clear(live).append(errorBox(e)));
  const actions = [];
  const replicaChoices = (members) => [["", "the best replica (Patroni chooses)"], ...members.filter((m) => m.role !== "primary").map((m) => [m.name, m.name])];
  const to = select("to", replicaChoices(c.members), "");
  to.id = "switchover-to";
  // When the roles change (a switchover), the replicas offered follow; a choice made
  // that is still a replica stays chosen.
  const switchoverChoices = (members) => {
    if (document.activeElement === to) return;
    const chosen = to.value;
    clear(to).append(...replicaChoices(members).map(([value, text]) => h("option", { value, selected: value === chosen }, text)));
  };
  if (session.can("operator") && c.members.length > 1) {
    actions.push(
      h(
        "div",
        { class: "inline" },
        h("label", { for: "switchover-to" }, "New primary"),
        to,
        button("Switch over", () => run(() => api.post(`${path}/switchover`, to.value ? { to: to.value } : {})), "", { id: "switchover" }),
        // A failover promotes without the primary's consent: for when it is gone.
        button("Fail over", () => run(() => api.post(`${path}/failover`, to.value ? { to: to.value } : {})), "", { id: "failover" }),
      ),
    );
  }
  if (session.can("operator")) actions.push(button("Restart", () => run(() => api.post(`${path}/restart`, {})), "", { id: "restart" }));
  if (session.can("developer"))
    actions.push(
      button(
        "Delete cluster",
        async () => {
          const withBackups = h("input", { type: "checkbox", name: "delete-backups" });
          const extra = session.can("operator") ? checkbox("Also delete its backups (else they are kept, and it can be restored by name)", withBackups) : null;
          if (await confirmByName("cluster", name, extra))
            run(
              () => api.del(withBackups.checked ? `${path}?delete_backups=true` : path),
              () => link("#/clusters", "Back to the clusters"),
            );
        },
        "danger",
        { id: "delete-cluster" },
      ),
    );
  // What changes by itself is drawn into boxes of its own, so a refresh redraws them
  // and nothing else: a form being filled in keeps its values and the focus.
  const statusLine = h("p", { id: "cluster-state" });
  const membersBox = h("div", { id: "members" });
  const opsBox = h("div", { id: "cluster-operations" });
  const eventsBox = h("div", { id: "cluster-events" });
  const drawStatus = (x) =>
    add(clear(statusLine), badge(x.state), ` ${x.engine} ${x.version} in ${x.location}`, x.status_message ? h("span", { class: "muted" }, ` — ${x.status_message}`) : null);
  const drawMembers = (members) =>
    clear(membersBox).append(
      table(
        "Members",
        [
          ["Member", (m) => m.name],
          ["Role", (m) => h("span", { class: "role", "data-member": m.name }, m.role || "unknown")],
          ["State", (m) => m.state],
          ["Sync", (m) => (m.sync ? "yes" : "no")],
          ["Lag", (m) => (m.role === "primary" ? "—" : bytes(m.lag_bytes))],
          ["Timeline", (m) => m.timeline ?? "—"],
          ["Host", (m) => link(`#/hosts/${enc(m.host)}`, m.host)],
          ["Address", (m) => m.address],
        ],
        members,
        "No members yet.",
      ),
    );
  const loadOps = async () => (await api.get("/operations?limit=200")).items.filter((o) => o.target === `cluster/${name}`);
  const drawOps = (ops) => clear(opsBox).append(operationTable(ops));
  let events = [];
  let eventsLoaded = false;
  const drawEvents = () =>
    clear(eventsBox).append(table("Events", [["When", (e) => time(e.at)], ["Kind", (e) => e.kind], ["Message", (e) => e.message]], events.slice(-50).reverse(), "No events."));
  drawStatus(c);
  drawMembers(c.members);
  add(
    main,
    heading(`Cluster ${cl.name}`),
    statusLine,
    actions.length ? h("div", { class: "actions toolbar", role: "group", "aria-label": "Cluster actions" }, actions) : null,
    live,
    section("Topology", membersBox),
    section("Connect", endpoints(c, path, session)),
    section(
      "Settings",
      facts([
        ["Members wanted", String(c.replicas)],
        ["Synchronous", c.sync ? "yes" : "no"],
        ["Pooler", c.pooler ? "yes" : "no"],
        ["Database", c.database],
        ["User", c.user],
        ["Allow-list", c.allow.join(", ")],
      ]),
      h("h3", {}, "Parameters"),
      table("Parameters", [["Name", (p) => p[0]], ["Value", (p) => p[1]]], Object.entries(c.params), "Defaults only."),
    ),
    session.can("operator") ? section("Change", changes(c, path, run)) : null,
    section("Backups", later(() => backups(name, path, session, run))),
    section("Operations", later(async () => (drawOps(await loadOps()), opsBox))),
    section(
      "Events",
      later(async () => {
        events = await api.all(`/events?cluster=${enc(name)}&limit=1000`);
        eventsLoaded = true;
        drawEvents();
        return eventsBox;
      }),
    ),
    section("Metrics", metricsPanel(name, signal)),
  );
  keepFresh(main, signal, [
    {
      key: "cluster",
      boxes: [statusLine, membersBox],
      first: JSON.stringify(c),
      read: () => api.get(path),
      draw: (x) => {
        drawStatus(x);
        drawMembers(x.members);
        switchoverChoices(x.members);
      },
    },
    { key: "operations", boxes: [opsBox], read: loadOps, draw: drawOps },
    {
      key: "events",
      boxes: [eventsBox],
      // Only what is newer than the newest event shown.
      read: async () => {
        if (!eventsLoaded) return null;
        const q = events.length ? `&after=${enc(events[events.length - 1].id)}` : "";
        const fresh = (await api.get(`/events?cluster=${enc(name)}&limit=1000${q}`)).items;
        return fresh.length ? fresh : null;
      },
      draw: (fresh) => {
        events.push(...fresh);
        drawEvents();
      },
    },
  ]);
}

/**
 * Reads what a page shows again every 5 s while the page is shown and the tab visible,
 * and stops when the page is left (`signal`). Each source reads (`read()`; null: nothing
 * new) and redraws its boxes (`draw(answer)`) only when the answer differs from the last
 * one (`first`: what the page was drawn with), and never while the keyboard focus is in
 * one of its boxes, so nothing is taken from under the user. A failed read is tried
 * again next round; a 404 (the thing is gone) ends the refreshing.
 */
function keepFresh(main, signal, sources) {
  const last = new Map(sources.map((x) => [x.key, x.first]));
  let timer = null;
  const round = async () => {
    if (signal.aborted || !main.isConnected) return;
    if (document.visibilityState === "visible") {
      for (const x of sources) {
        if (x.boxes.some((b) => b.contains(document.activeElement))) continue;
        let answer;
        try {
          answer = await x.read();
        } catch (e) {
          if (e && e.status === 404) return;
          continue;
        }
        if (signal.aborted || !main.isConnected) return;
        if (answer === null || answer === undefined) continue;
        const print = JSON.stringify(answer);
        if (print === last.get(x.key)) continue;
        last.set(x.key, print);
        x.draw(answer);
      }
    }
    timer = setTimeout(round, 5000);
  };
  signal.addEventListener("abort", () => clearTimeout(timer));
  timer = setTimeout(round, 5000);
}

/** Day-2 changes of an operator: members, parameters, the network allow-list. */
function changes(c, path, run) {
  const members = h("input", { type: "number", name: "replicas", min: 1, max: 9, value: c.replicas });
  const setParams = h("textarea", { name: "set-params", rows: 2, placeholder: "work_mem=16MB" });
  const reset = input({ name: "reset-params", placeholder: "work_mem, random_page_cost" });
  const allow = input({ name: "allow", placeholder: "10.0.0.0/8" });
  const deny = input({ name: "deny", placeholder: "192.168.1.0/24" });
  const list = (text) =>
    text
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean);
  return [
    form("Scale", [field("Number of members", members, "Standbys are added or removed one at a time.")], "Scale", async () => {
      await run(() => api.post(`${path}/scale`, { replicas: Number(members.value) }));
      return null;
    }),
    form(
      "Change parameters",
      [field("Set parameters", setParams, "One name=value per line; members restart only where a parameter needs it."), field("Reset parameters", reset, "Names, separated by commas.")],
      "Change parameters",
      async () => {
        await run(() => api.post(`${path}/params`, { params: paramsText(setParams.value), reset: list(reset.value) }));
        return null;
      },
    ),
    form(
      "Change the allow-list",
      [field("Allow networks", allow, "CIDRs, separated by commas."), field("Remove networks", deny, "CIDRs as listed, separated by commas.")],
      "Change the allow-list",
      async () => {
        await run(() => api.post(`${path}/allow-list`, { allow: list(allow.value), deny: list(deny.value) }));
        return null;
      },
    ),
  ];
}

function endpoints(c, path, session) {
  const e = c.endpoints;
  const out = h("div");
  out.append(
    facts([
      ["Read-write", e.read_write.join(", ")],
      ["Read-only", e.read_only.join(", ")],
      e.pooler.length ? ["Pooler", e.pooler.join(", ")] : null,
    ]),
  );
  if (session.can("developer") && c.members.length) {
    const box = h("div", { "aria-live": "polite" });
    out.append(
      button(
        "Show connection details",
        async (ev) => {
          ev.target.disabled = true;
          try {
            const conn = await api.get(`${path}/connection`);
            const ca = new Blob([conn.ca_pem], { type: "application/x-pem-file" });
            const caName = `${c.name}-ca.crt`;
            clear(box).append(
              h("p", {}, "Reading the password is recorded in the audit log. Save the CA, then connect:"),
              h("pre", { class: "snippet", id: "connect-snippet" }, `psql "${conn.uri}&sslrootcert=${caName}"`),
              h("p", {}, h("a", { href: URL.createObjectURL(ca), download: caName }, `Download the CA certificate (${caName})`)),
            );
          } catch (err) {
            clear(box).append(errorBox(err));
          } finally {
            ev.target.disabled = false;
          }
        },
        "",
        { id: "show-connection" },
      ),
      box,
    );
  }
  return out;
}

/** The backup policy: schedules (cron, UTC), retention, drills; set by operators. */
async function policy(path, session, run) {
  const out = h("div");
  let p;
  try {
    p = await api.get(`${path}/backup-policy`);
  } catch (e) {
    out.append(errorBox(e));
    return out;
  }
  out.append(
    facts([
      ["Backups", p.schedule ? h("code", {}, p.schedule) : "not scheduled"],
      ["Full backups", p.full_schedule ? h("code", {}, p.full_schedule) : "—"],
      ["Full backups kept", String(p.retention_full_kept)],
      ["Restore drills", p.verify_schedule ? h("code", {}, p.verify_schedule) : "not scheduled"],
      ["Next backup", time(p.next_backup)],
      ["Next full backup", time(p.next_full)],
      ["Next drill", time(p.next_verify)],
    ]),
  );
  if (!session.can("operator")) return out;
  const schedule = input({ name: "schedule", value: p.schedule || "", placeholder: "0 * * * *" });
  const full = input({ name: "full_schedule", value: p.full_schedule || "", placeholder: "0 3 * * 0" });
  const keep = h("input", { type: "number", name: "retention_full", min: 1, value: p.retention_full ?? "" });
  const verify = input({ name: "verify_schedule", value: p.verify_schedule || "", placeholder: "0 5 * * 6" });
  out.append(
    form(
      "Set the backup policy",
      [
        field("Backup schedule", schedule, "Cron, five fields, UTC; empty: none."),
        field("Full backup schedule", full),
        field("Full backups to keep", keep),
        field("Restore drill schedule", verify),
      ],
      "Set the policy",
      async () => {
        const body = {};
        for (const [k, el] of [["schedule", schedule], ["full_schedule", full], ["verify_schedule", verify]]) if (el.value.trim()) body[k] = el.value.trim();
        if (keep.value) body.retention_full = Number(keep.value);
        await api.put(`${path}/backup-policy`, body);
        return "Backup policy set.";
      },
    ),
    h(
      "div",
      { class: "actions" },
      button("Run a restore drill now", () => run(() => api.post(`${path}/verify`, {})), "", { id: "verify" }),
    ),
  );
  return out;
}

async function backups(name, path, session, run) {
  const out = h("div");
  let list;
  try {
    list = await api.get(`${path}/backups`);
  } catch (e) {
    out.append(errorBox(e));
    list = [];
  }
  out.append(
    table(
      "Backups",
      [
        ["Backup", (b) => h("code", {}, b.id)],
        ["Type", (b) => b.type],
        ["Started", (b) => time(b.started_at)],
        ["Finished", (b) => time(b.stopped_at)],
        ["Size", (b) => bytes(b.size)],
        ["In repository", (b) => bytes(b.repo_size)],
        ["Repository", (b) => b.repository],
      ],
      list,
      "No backups.",
    ),
  );
  out.append(h("h3", {}, "Policy"), await policy(path, session, run));
  if (!session.can("operator")) return out;
  const kind = select("kind", [["", "incremental (full when there is none yet)"], ["full", "full"], ["diff", "differential"], ["incr", "incremental"]], "");
  out.append(
    form("Take a backup", [field("Type", kind)], "Take a backup", async () => {
      await run(() => api.post(`${path}/backups`, kind.value ? { type: kind.value } : {}));
      return null;
    }),
  );
  const asName = input({ name: "restore-name", autocomplete: "off", required: true });
  const toTime = input({ name: "to_time", placeholder: "2026-01-31T12:00:00Z" });
  out.append(
    h("h3", {}, "Restore into a new cluster"),
    form(
      "Restore into a new cluster",
      [field("New cluster's name", asName), field("To a time (RFC 3339; empty: the latest state)", toTime)],
      "Restore",
      async () => {
        const body = { as: asName.value.trim() };
        if (toTime.value.trim()) body.to_time = toTime.value.trim();
        await run(
          () => api.post(`${path}/restore`, body),
          () => link(`#/clusters/${enc(body.as)}`, `Open cluster ${body.as}`),
        );
        return null;
      },
    ),
  );
  return out;
}

// ---------------------------------------------------------------- locations and hosts

export async function locations(main, { session, signal }) {
  main.append(heading("Locations and hosts"));
  const locs = await api.all("/locations");
  main.append(
    section(
      "Locations",
      table(
        "Locations",
        [
          ["Name", (l) => l.name],
          ["Provider", (l) => l.provider],
          ["Region", (l) => l.region],
          ["Zone", (l) => l.zone || "—"],
          ["Labels", (l) => labelsText(l.labels) || "—"],
        ],
        locs,
      ),
    ),
  );
  if (!session.admin) {
    main.append(section("Hosts", notice("Hosts are shown to administrators.")));
    return;
  }
  main.append(section("Create or delete a location", locationForms(locs)));
  const hosts = await api.all("/hosts");
  main.append(
    section(
      "Hosts",
      table(
        "Hosts",
        [
          ["Name", (x) => link(`#/hosts/${enc(x.name)}`, x.name)],
          ["Status", (x) => badge(x.status)],
          ["Location", (x) => x.location],
          ["Zone", (x) => x.zone || "—"],
          ["Labels", (x) => labelsText(x.labels) || "—"],
          ["CPUs", (x) => (x.facts ? x.facts.cpus : "—")],
          ["Memory", (x) => (x.facts ? bytes(x.facts.memory_bytes) : "—")],
          ["Last seen", (x) => time(x.last_seen_at)],
        ],
        hosts,
      ),
    ),
  );
  const name = input({ name: "host-name", autocomplete: "off" });
  const loc = select("location", locs.map((l) => [l.name, l.name]), locs.length ? locs[0].name : "");
  const address = input({ name: "address", autocomplete: "off" });
  const sshUser = input({ name: "ssh_user", placeholder: "root" });
  const sshPort = h("input", { type: "number", name: "ssh_port", min: 1, max: 65535, placeholder: "22" });
  const key = h("textarea", { name: "ssh_private_key", rows: 3, autocomplete: "off", spellcheck: "false" });
  const hostKey = input({ name: "ssh_host_key", autocomplete: "off", spellcheck: "false", placeholder: "ssh-ed25519 AAAA…" });
  const agentPort = h("input", { type: "number", name: "agent_port", min: 1, max: 65535, placeholder: "7450" });
  const baseDir = input({ name: "base_dir", autocomplete: "off", placeholder: "/var/lib/sovdb" });
  const zone = input({ name: "zone" });
  const labels = input({ name: "labels", placeholder: "tier=nvme" });
  const progress = h("div", { class: "progress-area" });
  main.append(
    section(
      "Add a host",
      form(
        "Add a host",
        [
          field("Name", name),
          field("Location", loc),
          field("Address", address, "IP address or DNS name the control plane reaches it at."),
          field("SSH user", sshUser),
          field("SSH port", sshPort),
          field("SSH private key", key, "Used to install the agent; kept sealed."),
          field("SSH host key", hostKey, "Pin the host's public key (type base64); empty: trust the key it presents the first time."),
          field("Agent port", agentPort),
          field("Base directory", baseDir, "Where everything sovdb puts on the host lives."),
          field("Zone", zone),
          field("Labels", labels, "key=value pairs, separated by commas."),
        ],
        "Add host",
        async () => {
          const body = { name: name.value.trim(), location: loc.value, address: address.value.trim() };
          if (sshUser.value.trim()) body.ssh_user = sshUser.value.trim();
          if (sshPort.value) body.ssh_port = Number(sshPort.value);
          if (key.value.trim()) body.ssh_private_key = key.value;
          if (hostKey.value.trim()) body.ssh_host_key = hostKey.value.trim();
          if (agentPort.value) body.agent_port = Number(agentPort.value);
          if (baseDir.value.trim()) body.base_dir = baseDir.value.trim();
          if (zone.value.trim()) body.zone = zone.value.trim();
          const l = parseLabels(labels.value);
          if (Object.keys(l).length) body.labels = l;
          await runOperation(progress, () => api.post("/hosts", body), signal);
          return null;
        },
      ),
      progress,
    ),
  );
}

function locationForms(locs) {
  const name = input({ name: "location-name", autocomplete: "off" });
  const provider = select("provider", [["ssh", "ssh: hosts reached over SSH"], ["local", "local: this machine"]], "ssh");
  const region = input({ name: "region", placeholder: "eu-west" });
  const zone = input({ name: "zone" });
  const labels = input({ name: "labels", placeholder: "jurisdiction=EU" });
  const status = h("div", { "aria-live": "polite" });
  const gone = select("delete-location", locs.map((l) => [l.name, l.name]), "");
  return [
    form(
      "Create a location",
      [field("Location name", name), field("Provider", provider), field("Region", region), field("Zone", zone), field("Labels", labels, "key=value pairs, separated by commas.")],
      "Create location",
      async () => {
        const body = { name: name.value.trim(), provider: provider.value, region: region.value.trim() };
        if (zone.value.trim()) body.zone = zone.value.trim();
        const l = parseLabels(labels.value);
        if (Object.keys(l).length) body.labels = l;
        await api.post("/locations", body);
        // The page again, with the new location listed.
        window.dispatchEvent(new HashChangeEvent("hashchange"));
        return null;
      },
    ),
    h(
      "div",
      { class: "inline" },
      h("label", { for: "delete-location" }, "Location to delete"),
      Object.assign(gone, { id: "delete-location" }),
      button(
        "Delete location",
        async () => {
          clear(status);
          const n = gone.value;
          if (!n || !(await confirmByName("location", n))) return;
          try {
            await api.del(`/locations/${enc(n)}`);
            window.dispatchEvent(new HashChangeEvent("hashchange"));
          } catch (e) {
            status.append(errorBox(e));
          }
        },
        "danger",
      ),
    ),
    status,
  ];
}

export async function hostDetail(main, { args: [name], signal }) {
  const x = await api.get(`/hosts/${enc(name)}`);
  const f = x.facts || {};
  const live = h("div", { class: "progress-area", "aria-live": "polite" });
  const run = (start) => runOperation(live, start, signal).catch((e) => clear(live).append(errorBox(e)));
  const drainStatus = h("div", { "aria-live": "polite" });
  main.append(
    heading(
      `Host ${x.name}`,
      button(
        "Drain",
        async () => {
          clear(drainStatus);
          try {
            await api.post(`/hosts/${enc(name)}/drain`, {});
            drainStatus.append(notice("Draining: no new member is placed here; existing ones keep running."));
          } catch (e) {
            drainStatus.append(errorBox(e));
          }
        },
        "",
        { id: "drain" },
      ),
      button(
        "Remove host",
        async () => {
          if (await confirmByName("host", name)) run(() => api.del(`/hosts/${enc(name)}`));
        },
        "danger",
        { id: "remove-host" },
      ),
    ),
    drainStatus,
    live,
    h("p", {}, badge(x.status), x.status_message ? ` ${x.status_message}` : ""),
    facts([
      ["Location", x.location],
      ["Address", x.address],
      ["Agent port", String(x.agent_port)],
      ["Zone", x.zone],
      ["Labels", labelsText(x.labels)],
      ["Last seen", time(x.last_seen_at)],
      ["Base directory", x.base_dir],
    ]),
    section(
      "Facts",
      x.facts
        ? [
            facts([
              ["Host name", f.hostname],
              ["OS", f.os],
              ["Kernel", f.kernel],
              ["Architecture", f.arch],
              ["CPUs", String(f.cpus)],
              ["Memory", bytes(f.memory_bytes)],
              ["Addresses", (f.addresses || []).join(", ")],
              ["Agent version", f.agent_version],
            ]),
            table(
              "Disks",
              [["Mount", (d) => d.mount], ["File system", (d) => d.filesystem], ["Size", (d) => bytes(d.total_bytes)], ["Free", (d) => bytes(d.free_bytes)]],
              f.disks || [],
              "No disks reported.",
            ),
          ]
        : notice("The agent has not reported facts yet."),
    ),
  );
}

// ---------------------------------------------------------------- backup repositories

function repoTable(items, session, status, refresh) {
  return table(
    "Backup repositories",
    [
      ["Name", (r) => r.name],
      ["Type", (r) => r.type],
      ["Location", (r) => r.location],
      ["Where", (r) => (r.type === "s3" ? `${r.endpoint}/${r.bucket}${r.path}` : `${r.host || ""}:${r.path}`)],
      ["Encrypted", (r) => (r.encrypted ? "yes" : "no")],
      ["Default", (r) => (r.default ? "yes" : "no")],
      ["Clusters", (r) => r.clusters.join(", ") || "—"],
      [
        "Actions",
        (r) =>
          session.can("operator")
            ? button(
                "Delete",
                async () => {
                  if (!(await confirmByName("repository", r.name))) return;
                  clear(status);
                  try {
                    await api.del(`/repos/${enc(r.name)}`);
                    status.append(notice(`Repository ${r.name} deleted; its files are kept.`));
                    await refresh();
                  } catch (e) {
                    status.append(errorBox(e));
                  }
                },
                "danger",
                { "aria-label": `Delete repository ${r.name}` },
              )
            : "—",
      ],
    ],
    items,
    "No backup repositories in this project.",
  );
}

/** Deleted clusters whose backups were kept: restore by name, or purge (operators). */
async function retained(session, signal) {
  const out = h("div");
  const live = h("div", { class: "progress-area", "aria-live": "polite" });
  const run = (start) => runOperation(live, start, signal).catch((e) => clear(live).append(errorBox(e)));
  const items = await api.get("/retained-backups");
  out.append(
    table(
      "Backups of deleted clusters",
      [
        ["Cluster", (r) => r.cluster],
        ["Deleted", (r) => time(r.deleted_at)],
        ["Repository", (r) => r.repository],
        [
          "Actions",
          (r) => {
            if (!session.can("operator")) return "—";
            const as = input({ name: "restore-as", autocomplete: "off", "aria-label": `Name of the cluster restored from ${r.cluster}`, placeholder: "new cluster's name" });
            return h(
              "div",
              { class: "inline" },
              as,
              button("Restore", () => run(() => api.post(`/clusters/${enc(r.cluster)}/restore`, { as: as.value.trim() || r.cluster })), "", {
                "aria-label": `Restore ${r.cluster}`,
              }),
              button(
                "Purge",
                async () => {
                  if (await confirmByName("backups of", r.cluster)) run(() => api.del(`/retained-backups/${enc(r.cluster)}`));
                },
                "danger",
                { "aria-label": `Purge the backups of ${r.cluster}` },
              ),
            );
          },
        ],
      ],
      items,
      "None: backups of deleted clusters are kept unless deleted with them.",
    ),
    live,
  );
  return out;
}

export async function repos(main, { session, signal }) {
  main.append(heading("Backup repositories"));
  const status = h("div", { "aria-live": "polite" });
  const listBox = h("div");
  const refresh = async () => clear(listBox).append(repoTable(await api.all("/repos"), session, status, refresh));
  await refresh();
  main.append(status, listBox, section("Backups of deleted clusters", await retained(session, signal)));
  if (!session.can("operator")) return;
  const locs = await api.all("/locations");
  const name = input({ name: "repo-name", autocomplete: "off" });
  const loc = select("location", [["", "default location"], ...locs.map((l) => [l.name, l.name])], "");
  const kind = select("type", [["posix", "a directory on a host (posix)"], ["s3", "S3-compatible storage"]], "posix");
  const path = input({ name: "path", placeholder: "/var/lib/sovdb-backups" });
  const host = input({ name: "host", placeholder: "the location's first host" });
  const endpoint = input({ name: "endpoint", placeholder: "s3.example.org:9000" });
  const bucket = input({ name: "bucket" });
  const region = input({ name: "region" });
  const keyId = input({ name: "access_key_id", autocomplete: "off" });
  const secret = h("input", { type: "password", name: "secret_access_key", autocomplete: "off" });
  const isDefault = h("input", { type: "checkbox", name: "default" });
  const s3 = h("fieldset", { hidden: true }, h("legend", {}, "S3"), field("Endpoint", endpoint), field("Bucket", bucket), field("Region", region), field("Access key ID", keyId), field("Secret access key", secret));
  kind.addEventListener("change", () => (s3.hidden = kind.value !== "s3"));
  main.append(
    section(
      "Create a repository",
      form(
        "Create a repository",
        [field("Name", name), field("Location", loc), field("Type", kind), field("Path", path), field("Host (posix)", host), s3, checkbox("The location's default repository", isDefault)],
        "Create repository",
        async () => {
          const body = { name: name.value.trim(), type: kind.value, default: isDefault.checked };
          if (loc.value) body.location = loc.value;
          if (path.value.trim()) body.path = path.value.trim();
          if (kind.value === "posix" && host.value.trim()) body.host = host.value.trim();
          if (kind.value === "s3") {
            for (const [k, el] of [["endpoint", endpoint], ["bucket", bucket], ["region", region], ["access_key_id", keyId], ["secret_access_key", secret]]) if (el.value.trim()) body[k] = el.value.trim();
          }
          await api.post("/repos", body);
          secret.value = "";
          await refresh();
          return `Repository ${body.name} created.`;
        },
      ),
    ),
  );
}

// ---------------------------------------------------------------- users, roles, tokens

export async function users(main, { session }) {
  main.append(heading("Users, roles and tokens"));
  const who = await api.get("/whoami");
  main.append(
    section(
      "You",
      facts([
        ["User", who.user],
        ["Project", who.project],
        ["Roles", who.roles.map((b) => b.role + (b.project_id ? " (project)" : " (installation)")).join(", ")],
      ]),
    ),
  );
  main.append(section("Your password", passwordForm(who.user, true)));
  main.append(section("Your API tokens", await tokens()));
  if (!session.can("owner")) return;
  main.append(section("Users", await userList(session)));
}

/** Changes `user`'s password: your own with the current one, another's (admins) without. */
function passwordForm(user, own) {
  const current = h("input", { type: "password", name: "current-password", autocomplete: "current-password" });
  const next = h("input", { type: "password", name: "new-password", autocomplete: "new-password" });
  const again = h("input", { type: "password", name: "new-password-again", autocomplete: "new-password" });
  const fields = [
    ...(own ? [field("Current password", current)] : []),
    field(own ? "New password" : `New password for ${user}`, next, "At least 12 characters."),
    field(own ? "The new password again" : `The new password for ${user} again`, again),
  ];
  const label = own ? "Change your password" : `Set the password of ${user}`;
  return form(label, fields, own ? "Change password" : "Save the password", async () => {
    if (next.value !== again.value) throw new Error("The two new passwords differ: nothing was changed.");
    const body = { password: next.value };
    if (own) body.current_password = current.value;
    await api.put(`/users/${enc(user)}/password`, body);
    for (const i of [current, next, again]) i.value = "";
    return own
      ? "Your password is changed. Your other password logins are ended; API tokens stay."
      : `The password of ${user} is set. Their password logins are ended; API tokens stay.`;
  });
}

async function tokens() {
  const status = h("div", { "aria-live": "polite" });
  const listBox = h("div");
  const refresh = async () => {
    const items = await api.all("/tokens");
    clear(listBox).append(
      table(
        "API tokens",
        [
          ["Name", (t) => t.name],
          ["Created", (t) => time(t.created_at)],
          ["Expires", (t) => (t.expires_at ? time(t.expires_at) : "never")],
          ["Revoked", (t) => (t.revoked ? "yes" : "no")],
          [
            "Actions",
            (t) =>
              t.revoked
                ? "—"
                : button(
                    "Revoke",
                    async () => {
                      if (!(await confirmByName("token", t.name))) return;
                      clear(status);
                      try {
                        await api.del(`/tokens/${enc(t.id)}`);
                        status.append(notice(`Token ${t.name} revoked.`));
                        await refresh();
                      } catch (e) {
                        status.append(errorBox(e));
                      }
                    },
                    "danger",
                    { "aria-label": `Revoke token ${t.name} (${t.id})` },
                  ),
          ],
        ],
        items,
        "No tokens.",
      ),
    );
  };
  await refresh();
  const name = input({ name: "token-name", autocomplete: "off" });
  const days = h("input", { type: "number", name: "expires_days", min: 1, placeholder: "30" });
  const shown = h("div", { "aria-live": "polite" });
  return h(
    "div",
    {},
    status,
    listBox,
    h("h3", {}, "Create a token"),
    form("Create a token", [field("Token name", name), field("Expires in days (empty: the server's default)", days)], "Create token", async () => {
      const body = {};
      if (name.value.trim()) body.name = name.value.trim();
      if (days.value) body.expires_in_secs = Number(days.value) * 86400;
      const t = await api.post("/tokens", body);
      clear(shown).append(h("p", {}, "The token, shown only this once:"), h("pre", { class: "snippet" }, t.secret));
      await refresh();
      return null;
    }),
    shown,
  );
}

const PROJECT_ROLES = ["viewer", "developer", "operator", "owner"];

async function userList(session) {
  const status = h("div", { "aria-live": "polite" });
  const listBox = h("div");
  const roles = [...PROJECT_ROLES, ...(session.admin ? ["admin"] : [])].map((r) => [r, r]);
  const gUser = h("select", { name: "grant-user" });
  const refresh = async () => {
    const items = await api.all("/users");
    clear(listBox).append(
      table(
        "Users",
        [
          ["Name", (u) => u.name],
          ["Roles", (u) => u.roles.map((r) => r.role + (r.project ? ` in ${r.project}` : "")).join(", ") || "—"],
          ["Password", (u) => (u.has_password ? "yes" : "no")],
          ["Disabled", (u) => (u.disabled ? "yes" : "no")],
          ["Created", (u) => time(u.created_at)],
          ...(session.admin ? [["Actions", (u) => userActions(u)]] : []),
        ],
        items,
      ),
    );
    const chosen = gUser.value;
    clear(gUser).append(...items.map((u) => h("option", { value: u.name, selected: u.name === chosen }, u.name)));
  };
  // Admins: disable or enable, set the password, delete.
  const userActions = (u) => {
    const act = async (what, f) => {
      clear(status);
      try {
        await f();
        status.append(notice(what));
        await refresh();
      } catch (e) {
        status.append(errorBox(e));
      }
    };
    const toggle = u.disabled
      ? button("Enable", () => act(`User ${u.name} enabled.`, () => api.post(`/users/${enc(u.name)}/enable`)), "", {
          "aria-label": `Enable user ${u.name}`,
        })
      : button(
          "Disable",
          () => act(`User ${u.name} disabled: their tokens are refused from now on.`, () => api.post(`/users/${enc(u.name)}/disable`)),
          "",
          { "aria-label": `Disable user ${u.name}` },
        );
    const setPassword = button(
      "Set password",
      () => {
        clear(passwordBox).append(h("h3", {}, `Set the password of ${u.name}`), passwordForm(u.name, false));
        passwordBox.querySelector("input")?.focus();
      },
      "",
      { "aria-label": `Set the password of user ${u.name}` },
    );
    const remove = button(
      "Delete",
      async () => {
        if (!(await confirmByName("user", u.name))) return;
        await act(`User ${u.name} deleted, with their roles and tokens.`, () => api.del(`/users/${enc(u.name)}`));
      },
      "danger",
      { "aria-label": `Delete user ${u.name}` },
    );
    return h("div", { class: "actions" }, toggle, setPassword, remove);
  };
  const passwordBox = h("div");
  await refresh();
  const name = input({ name: "user-name", autocomplete: "off" });
  const password = h("input", { type: "password", name: "new-password", autocomplete: "new-password" });
  const role = select("role", roles, "viewer");
  const gRole = select("grant-role", roles, "viewer");
  const revokeStatus = h("div", { "aria-live": "polite" });
  const revoke = button(
    "Revoke the role",
    async () => {
      clear(revokeStatus);
      if (!(await confirmByName(`role of ${gUser.value}:`, gRole.value))) return;
      try {
        const q = gRole.value === "admin" ? "" : `?project=${enc(api.project())}`;
        await api.del(`/users/${enc(gUser.value)}/roles/${enc(gRole.value)}${q}`);
        revokeStatus.append(notice(`Role ${gRole.value} revoked from ${gUser.value}.`));
        await refresh();
      } catch (e) {
        revokeStatus.append(errorBox(e));
      }
    },
    "danger",
  );
  return h(
    "div",
    {},
    status,
    listBox,
    passwordBox,
    h("h3", {}, "Create a user"),
    form("Create a user", [field("User name", name), field("Password", password, "At least 12 characters; empty: the user logs in with tokens or the directory."), field("Role in this project", role)], "Create user", async () => {
      const body = { name: name.value.trim(), role: role.value };
      if (password.value) body.password = password.value;
      if (role.value !== "admin") body.project = api.project();
      await api.post("/users", body);
      password.value = "";
      await refresh();
      return `User ${body.name} created.`;
    }),
    h("h3", {}, "Grant or revoke a role"),
    form("Grant or revoke a role", [field("User", gUser), field("Role (in this project; admin: installation-wide)", gRole)], "Grant the role", async () => {
      const body = { role: gRole.value };
      if (gRole.value !== "admin") body.project = api.project();
      await api.post(`/users/${enc(gUser.value)}/roles`, body);
      await refresh();
      return `Role ${gRole.value} granted to ${gUser.value}.`;
    }),
    revoke,
    revokeStatus,
  );
}

// ---------------------------------------------------------------- audit

export async function audit(main, { session }) {
  main.append(heading("Audit log"));
  if (!session.admin) {
    main.append(notice("The audit log is shown to administrators."));
    return;
  }
  const params = new URLSearchParams(sessionStorage.getItem("sovdb.audit") || "");
  const since = input({ name: "since", placeholder: "2026-01-31T00:00:00Z", value: params.get("since") || "" });
  const actor = input({ name: "actor", value: params.get("actor") || "" });
  const target = input({ name: "target", placeholder: "cluster/orders or cluster/", value: params.get("target") || "" });
  const results = h("div", { id: "audit-results" });
  const load = async (pageToken) => {
    const q = new URLSearchParams();
    if (since.value.trim()) q.set("since", since.value.trim());
    if (actor.value.trim()) q.set("actor", actor.value.trim());
    if (target.value.trim()) q.set("target", target.value.trim());
    sessionStorage.setItem("sovdb.audit", q.toString());
    // Newest first is what a person wants: read every page of the filter, show the last 200.
    q.set("limit", "1000");
    if (pageToken) q.set("page_token", pageToken);
    const records = await api.all(`/audit?${q.toString()}`);
    const shown = records.slice(-200).reverse();
    clear(results).append(
      h("p", { class: "muted" }, `${records.length} records${records.length > shown.length ? `, the newest ${shown.length} shown` : ""}.`),
      table(
        "Audit records",
        [
          ["#", (r) => String(r.seq)],
          ["When", (r) => time(r.at)],
          ["Actor", (r) => r.actor],
          ["Action", (r) => r.action],
          ["Target", (r) => r.target],
          ["Outcome", (r) => badge(r.outcome)],
          ["Project", (r) => r.project || "—"],
          ["From", (r) => r.source || "—"],
        ],
        shown,
        "No records match.",
      ),
    );
    return null;
  };
  main.append(form("Filter the audit log", [h("div", { class: "filters" }, field("Since", since), field("Actor", actor), field("Target", target))], "Filter", () => load()), results);
  await load();
}

// ---------------------------------------------------------------- alerts

/** A measured value, to 4 significant digits (87.88, not 87.87519650312436). */
const num = (v) => String(Number(Number(v).toPrecision(4)));

/** Seconds as a person reads a duration: `0 s`, `90 s`, `5 min`, `2 h`. */
function duration(secs) {
  if (!secs) return "at once";
  if (secs % 3600 === 0) return `${secs / 3600} h`;
  if (secs % 60 === 0 && secs >= 120) return `${secs / 60} min`;
  return `${secs} s`;
}

/** An RFC 3339 time from a `datetime-local` input's value (the browser's time zone). */
function localTime(value) {
  const t = new Date(value);
  if (Number.isNaN(t.getTime())) throw new Error(`"${value}" is not a time`);
  return t.toISOString();
}

export async function alerts(main, { session, signal }) {
  main.append(heading("Alerts"));
  const canChange = session.can("operator");
  let all = [];
  let rules = [];
  let channels = [];
  let silences = [];
  let deliveries = [];
  const openBox = h("div", { id: "open-alerts" });
  const historyBox = h("div", { id: "alert-history" });
  const rulesBox = h("div", { id: "alert-rules" });
  const channelsBox = h("div", { id: "alert-channels" });
  const silencesBox = h("div", { id: "alert-silences" });
  const deliveriesBox = h("div", { id: "alert-deliveries" });
  const status = {
    rules: h("div", { "aria-live": "polite" }),
    channels: h("div", { "aria-live": "polite" }),
    silences: h("div", { "aria-live": "polite" }),
  };
  const subjectOf = (id) => {
    const a = all.find((x) => x.id === id);
    return a ? `${a.rule} on ${a.subject}` : id;
  };

  const drawAlerts = () => {
    const open = all.filter((a) => a.state !== "resolved");
    clear(openBox).append(
      table(
        "Open alerts",
        [
          ["Rule", (a) => h("span", { "data-alert-rule": a.rule }, a.rule)],
          ["State", (a) => badge(a.state)],
          ["Severity", (a) => badge(a.severity)],
          ["Subject", (a) => a.subject],
          ["Since", (a) => time(a.started_at || a.pending_since)],
          ["Value", (a) => (a.value === undefined || a.value === null ? "—" : `${num(a.value)}${a.threshold === undefined || a.threshold === null ? "" : ` (threshold ${num(a.threshold)})`}`)],
          ["Silenced", (a) => (a.silenced ? "yes" : "no")],
          ["Message", (a) => a.message],
        ],
        open,
        "No alert is firing or pending.",
      ),
    );
    const done = all.filter((a) => a.state === "resolved").slice(-100).reverse();
    clear(historyBox).append(
      table(
        "Resolved alerts",
        [
          ["Rule", (a) => a.rule],
          ["Severity", (a) => badge(a.severity)],
          ["Subject", (a) => a.subject],
          ["Fired", (a) => time(a.started_at)],
          ["Resolved", (a) => time(a.resolved_at)],
          ["Message", (a) => a.message],
        ],
        done,
        "No alert has fired and resolved yet.",
      ),
    );
  };

  const act = async (box, f) => {
    clear(box);
    try {
      const msg = await f();
      if (msg) box.append(notice(msg));
    } catch (e) {
      box.append(errorBox(e));
    }
  };

  const drawRules = () =>
    clear(rulesBox).append(
      table(
        "Alert rules",
        [
          ["Rule", (r) => r.name],
          ["Kind", (r) => (r.default ? "default" : "own")],
          ["Condition", (r) => h("code", {}, r.condition)],
          ["Cluster", (r) => r.cluster || "every cluster"],
          ["For", (r) => duration(r.for_secs)],
          ["Severity", (r) => badge(r.severity)],
          ["Channels", (r) => (r.channels.length ? r.channels.join(", ") : r.default ? "every channel taking default rules" : "every channel")],
          [
            "Actions",
            (r) =>
              canChange && !r.default
                ? button(
                    "Delete",
                    async () => {
                      if (!(await confirmByName("rule", r.name))) return;
                      await act(status.rules, async () => {
                        await api.del(`/alerts/rules/${enc(r.name)}`);
                        await reload();
                        return `Rule ${r.name} deleted; its firing alerts resolve at the next round.`;
                      });
                    },
                    "danger",
                    { "aria-label": `Delete rule ${r.name}` },
                  )
                : "—",
          ],
        ],
        rules,
        "No rules.",
      ),
    );

  const testResult = h("div", { "aria-live": "polite", id: "channel-test-result" });
  const drawChannels = () =>
    clear(channelsBox).append(
      table(
        "Notification channels",
        [
          ["Channel", (c) => c.name],
          ["Type", (c) => c.type],
          [
            "Sends to",
            (c) =>
              c.type === "webhook"
                ? c.url
                : c.type === "email"
                  ? `${(c.to || []).join(", ")} via ${c.smtp_server}${c.smtp_plaintext ? " (without TLS)" : ""}`
                  : "a Slack-compatible webhook (its URL is a secret)",
          ],
          ["Default rules", (c) => (c.default_rules ? "yes" : "no")],
          ["Created", (c) => time(c.created_at)],
          [
            "Actions",
            (c) =>
              canChange
                ? h(
                    "div",
                    { class: "inline" },
                    button(
                      "Send a test",
                      (ev) =>
                        act(testResult, async () => {
                          ev.target.disabled = true;
                          try {
                            const r = await api.post(`/alerts/channels/${enc(c.name)}/test`);
                            if (!r.delivered) throw new Error(`The test message to ${r.channel} was not delivered: ${r.result}`);
                            return `Test message to ${r.channel} delivered: ${r.result}.`;
                          } finally {
                            ev.target.disabled = false;
                          }
                        }),
                      "",
                      { "aria-label": `Send a test to ${c.name}` },
                    ),
                    button(
                      "Delete",
                      async () => {
                        if (!(await confirmByName("channel", c.name))) return;
                        await act(status.channels, async () => {
                          await api.del(`/alerts/channels/${enc(c.name)}`);
                          await reload();
                          return `Channel ${c.name} deleted.`;
                        });
                      },
                      "danger",
                      { "aria-label": `Delete channel ${c.name}` },
                    ),
                  )
                : "—",
          ],
        ],
        channels,
        "No channels: alerts are listed here and in the events, and notify no one.",
      ),
    );

  const drawSilences = () =>
    clear(silencesBox).append(
      table(
        "Silences",
        [
          ["Status", (x) => badge(x.status)],
          ["Cluster", (x) => x.cluster || "every cluster"],
          ["Rule", (x) => x.rule || "every rule"],
          ["From", (x) => time(x.starts_at)],
          ["Until", (x) => time(x.ends_at)],
          ["Comment", (x) => x.comment || "—"],
          ["By", (x) => x.created_by],
          [
            "Actions",
            (x) =>
              canChange && x.status !== "expired"
                ? button(
                    "Delete",
                    () =>
                      act(status.silences, async () => {
                        await api.del(`/alerts/silences/${enc(x.id)}`);
                        await reload();
                        return "Silence deleted: its alerts notify again.";
                      }),
                    "danger",
                    { "aria-label": `Delete the silence of ${x.cluster || "every cluster"}, ${x.rule || "every rule"}, until ${new Date(x.ends_at).toLocaleString()}` },
                  )
                : "—",
          ],
        ],
        silences,
        "No silences.",
      ),
    );

  const drawDeliveries = () =>
    clear(deliveriesBox).append(
      table(
        "Deliveries",
        [
          ["Queued", (d) => time(d.created_at)],
          ["Channel", (d) => d.channel],
          ["Alert", (d) => subjectOf(d.alert_id)],
          ["Notifies", (d) => d.status],
          ["State", (d) => h("span", { "data-delivery": d.channel }, badge(d.state))],
          ["Attempts", (d) => String(d.attempts)],
          ["Last result", (d) => d.last_result || "—"],
          ["Delivered", (d) => time(d.delivered_at)],
          ["Next attempt", (d) => (d.state === "retrying" ? time(d.next_at) : "—")],
        ],
        deliveries.slice(-100).reverse(),
        "Nothing sent yet.",
      ),
    );

  const readAlerts = async () => {
    const [a, d] = await Promise.all([api.all("/alerts?limit=1000"), api.all("/alerts/deliveries?limit=1000")]);
    return [a, d];
  };
  const reload = async () => {
    [[all, deliveries], rules, channels, silences] = await Promise.all([readAlerts(), api.get("/alerts/rules"), api.get("/alerts/channels"), api.get("/alerts/silences")]);
    drawAlerts();
    drawRules();
    drawChannels();
    drawSilences();
    drawDeliveries();
    if (canChange) {
      drawChannelChoices();
      drawRuleChoices();
    }
  };

  // The silence form's rules follow the rules (a new one can be silenced at once).
  const silenceRule = h("select", { name: "silence-rule" });
  const drawRuleChoices = () => {
    const chosen = silenceRule.value;
    clear(silenceRule).append(...[["", "every rule"], ...rules.map((r) => [r.name, r.name])].map(([value, text]) => h("option", { value, selected: value === chosen }, text)));
  };

  // The rule form's channel choices follow the channels (a new one is offered at once).
  const channelChoices = h("fieldset", { class: "filters" });
  const drawChannelChoices = () => {
    const ticked = new Set([...channelChoices.querySelectorAll("input:checked")].map((i) => i.value));
    add(
      clear(channelChoices),
      h("legend", {}, "Channels to notify (none ticked: every channel)"),
      channels.length ? channels.map((c) => checkbox(c.name, h("input", { type: "checkbox", name: "rule-channel", value: c.name, checked: ticked.has(c.name) }))) : h("p", { class: "empty" }, "No channels yet."),
    );
  };

  await reload();
  main.append(
    section("Open alerts", openBox),
    section("Alert history", h("p", { class: "muted" }, "Resolved alerts, newest first (the last 100)."), historyBox),
    section("Rules", status.rules, rulesBox, canChange ? await ruleForm() : null),
    section("Channels", status.channels, testResult, channelsBox, canChange ? channelForm() : null),
    section("Silences", status.silences, silencesBox, canChange ? await silenceForm() : null),
    section("Deliveries", h("p", { class: "muted" }, "Each notification of an alert to a channel, newest first (the last 100). A test message is not one."), deliveriesBox),
  );

  // Alerts change by themselves: the lists are read again while the page is shown.
  keepFresh(main, signal, [
    {
      key: "alerts",
      boxes: [openBox, historyBox, deliveriesBox],
      first: JSON.stringify([all, deliveries]),
      read: readAlerts,
      draw: ([a, d]) => {
        all = a;
        deliveries = d;
        drawAlerts();
        drawDeliveries();
      },
    },
  ]);

  async function ruleForm() {
    const clusters = await api.all("/clusters");
    const name = input({ name: "rule-name", autocomplete: "off", required: true });
    const cluster = select("rule-cluster", [["", "every cluster of the project"], ...clusters.map((c) => [c.name, c.name])], "");
    const metric = input({ name: "metric", required: true, autocomplete: "off", list: "metric-names", placeholder: "pg_replication_lag_seconds" });
    const names = h("datalist", { id: "metric-names" });
    // The names offered are those the project's first cluster has samples of.
    if (clusters.length)
      api
        .get(`/clusters/${enc(clusters[0].name)}/metrics?from=2m`)
        .then((r) => names.append(...[...new Set(r.series.map((x) => x.name))].sort().map((n) => h("option", { value: n }))))
        .catch(() => {});
    const op = select("op", [[">", "is above"], ["<", "is below"]], ">");
    const threshold = h("input", { type: "number", name: "threshold", step: "any", required: true });
    const forDuration = input({ name: "for", placeholder: "2m", autocomplete: "off" });
    drawChannelChoices();
    return h(
      "div",
      {},
      h("h3", {}, "Create a rule"),
      form(
        "Create a rule",
        [
          field("Rule name", name, "A DNS label, not a default rule's name."),
          field("Rule's cluster", cluster),
          field("Metric", metric, "A name as the metrics catalogue has it (docs/monitoring.md), e.g. pg_replication_lag_seconds."),
          names,
          h("div", { class: "filters" }, field("Fires when the value", op), field("Threshold", threshold)),
          field("For", forDuration, "How long the condition must hold before it fires: 30s, 5m; empty: at once."),
          channelChoices,
        ],
        "Create rule",
        async () => {
          const body = { name: name.value.trim(), metric: metric.value.trim(), op: op.value };
          // An empty threshold is left out: the API says what is missing.
          if (threshold.value !== "") body.threshold = Number(threshold.value);
          if (cluster.value) body.cluster = cluster.value;
          if (forDuration.value.trim()) body.for = forDuration.value.trim();
          body.channels = [...channelChoices.querySelectorAll("input:checked")].map((i) => i.value);
          await api.post("/alerts/rules", body);
          await reload();
          return `Rule ${body.name} created.`;
        },
      ),
    );
  }

  function channelForm() {
    const name = input({ name: "channel-name", autocomplete: "off", required: true });
    const kind = select("channel-type", [["webhook", "webhook (signed JSON POST)"], ["slack", "Slack-compatible incoming webhook"], ["email", "email (SMTP)"]], "webhook");
    const url = input({ name: "webhook-url", autocomplete: "off" });
    const secret = h("input", { type: "password", name: "webhook-secret", autocomplete: "off" });
    const ca = h("textarea", { name: "webhook-ca", rows: 2, spellcheck: "false" });
    const slackUrl = h("input", { type: "password", name: "slack-url", autocomplete: "off" });
    const smtp = input({ name: "smtp-server", placeholder: "mail.example.org:587" });
    const smtpUser = input({ name: "smtp-username", autocomplete: "off" });
    const smtpPassword = h("input", { type: "password", name: "smtp-password", autocomplete: "off" });
    const smtpCa = h("textarea", { name: "smtp-ca", rows: 2, spellcheck: "false" });
    const plaintext = h("input", { type: "checkbox", name: "smtp-plaintext" });
    const from = input({ name: "from", placeholder: "sovdb@example.org" });
    const to = input({ name: "to", placeholder: "ops@example.org, dba@example.org" });
    const defaults = h("input", { type: "checkbox", name: "default-rules", checked: true });
    const webhook = h("fieldset", {}, h("legend", {}, "Webhook"), field("Webhook URL", url, "An http or https URL your receiver listens at; redirects are not followed."), field("HMAC secret", secret, "16 characters or more; empty: one is generated and shown once."), field("Webhook CA certificate", ca, "PEM, to trust besides the system's CAs (optional)."));
    const slack = h("fieldset", { hidden: true }, h("legend", {}, "Slack"), field("Slack webhook URL", slackUrl, "The incoming webhook's URL: a secret, never shown back."));
    const email = h(
      "fieldset",
      { hidden: true },
      h("legend", {}, "Email"),
      field("SMTP server", smtp, "host[:port]; port 587 unless given."),
      field("SMTP user name", smtpUser),
      field("SMTP password", smtpPassword),
      field("SMTP CA certificate", smtpCa, "PEM, to trust besides the system's CAs (optional)."),
      checkbox("Send without TLS (only on a network you trust)", plaintext),
      field("From address", from),
      field("To addresses", to, "Separated by commas."),
    );
    kind.addEventListener("change", () => {
      webhook.hidden = kind.value !== "webhook";
      slack.hidden = kind.value !== "slack";
      email.hidden = kind.value !== "email";
    });
    const shown = h("div", { "aria-live": "polite" });
    return h(
      "div",
      {},
      h("h3", {}, "Create a channel"),
      form(
        "Create a channel",
        [field("Channel name", name), field("Channel type", kind), webhook, slack, email, checkbox("Receives the default rules' alerts", defaults)],
        "Create channel",
        async () => {
          clear(shown);
          const body = { name: name.value.trim(), type: kind.value, default_rules: defaults.checked };
          const set = (k, el) => {
            if (el.value.trim()) body[k] = el.value.trim();
          };
          if (kind.value === "webhook") {
            set("url", url);
            set("secret", secret);
            set("ca_pem", ca);
          } else if (kind.value === "slack") {
            set("url", slackUrl);
          } else {
            set("smtp_server", smtp);
            set("smtp_username", smtpUser);
            set("smtp_password", smtpPassword);
            set("smtp_ca_pem", smtpCa);
            set("from", from);
            body.smtp_plaintext = plaintext.checked;
            body.to = to.value
              .split(",")
              .map((x) => x.trim())
              .filter(Boolean);
          }
          const ch = await api.post("/alerts/channels", body);
          for (const el of [secret, slackUrl, smtpPassword]) el.value = "";
          if (ch.secret)
            shown.append(
              h(
                "div",
                { class: "secret-once" },
                h("p", {}, `The HMAC secret of ${ch.name}, shown only this once (receivers check the X-Sovdb-Signature header with it):`),
                h("pre", { class: "snippet", id: "channel-secret" }, ch.secret),
              ),
            );
          await reload();
          return `Channel ${ch.name} created.`;
        },
      ),
      shown,
    );
  }

  async function silenceForm() {
    const clusters = await api.all("/clusters");
    const cluster = select("silence-cluster", [["", "every cluster"], ...clusters.map((c) => [c.name, c.name])], "");
    const rule = silenceRule;
    drawRuleChoices();
    const starts = h("input", { type: "datetime-local", name: "silence-start" });
    const length = input({ name: "silence-duration", placeholder: "2h", autocomplete: "off" });
    const until = h("input", { type: "datetime-local", name: "silence-until" });
    const comment = input({ name: "silence-comment", autocomplete: "off" });
    return h(
      "div",
      {},
      h("h3", {}, "Create a silence"),
      h("p", { class: "muted" }, "A silence holds back notifications, not state: alerts still fire and are listed. A later start makes a maintenance window."),
      form(
        "Create a silence",
        [
          h("div", { class: "filters" }, field("Silenced cluster", cluster), field("Silenced rule", rule)),
          field("Starts", starts, "Your local time; empty: now."),
          h("div", { class: "filters" }, field("Duration", length, "2h, 30m…"), field("Or until", until, "Your local time.")),
          field("Comment", comment),
        ],
        "Create silence",
        async () => {
          const body = {};
          if (cluster.value) body.cluster = cluster.value;
          if (rule.value) body.rule = rule.value;
          if (starts.value) body.starts_at = localTime(starts.value);
          if (until.value) body.ends_at = localTime(until.value);
          else if (length.value.trim()) body.duration = length.value.trim();
          if (comment.value.trim()) body.comment = comment.value.trim();
          await api.post("/alerts/silences", body);
          await reload();
          return "Silence created.";
        },
      ),
    );
  }
}

// ---------------------------------------------------------------- events

const PERIODS = [
  ["24h", "the last 24 hours", 86400],
  ["7d", "the last 7 days", 7 * 86400],
  ["30d", "the last 30 days", 30 * 86400],
  ["all", "everything", 0],
];

function eventRow(e) {
  const target = e.target.startsWith("cluster/") ? link(`#/clusters/${enc(e.target.slice(8))}`, e.target) : e.target;
  return h(
    "tr",
    { "data-event": e.id },
    h("th", { scope: "row" }, time(e.at)),
    h("td", { "data-kind": e.kind }, e.kind),
    h("td", {}, target),
    h("td", {}, e.project || "installation"),
    h("td", {}, e.message),
  );
}

/**
 * The timeline of the project (and, for admins, of the installation's hosts), newest
 * first, filtered by cluster and period; *Follow* streams new events in as they are
 * written (server-sent events of `GET /events?follow=true`, read with fetch()).
 */
export async function events(main, { signal, session }) {
  main.append(heading("Events"));
  const clusters = await api.all("/clusters");
  const saved = new URLSearchParams(sessionStorage.getItem("sovdb.events") || "");
  const everything = session.admin ? "every cluster, and the installation's hosts" : "every cluster of the project";
  const cluster = select("events-cluster", [["", everything], ...clusters.map((c) => [c.name, c.name])], saved.get("cluster") || "");
  const period = select("events-period", PERIODS.map(([v, t]) => [v, t]), saved.get("period") || "7d");
  const follow = h("button", { type: "button", id: "follow", "aria-pressed": "false" }, "Follow");
  const followStatus = h("p", { class: "muted", "aria-live": "polite", id: "follow-status" });
  const results = h("div", { id: "events" });
  let items = [];
  let following = null;
  let body = null;

  const draw = () => {
    body = null;
    const shown = items.slice(-200).reverse();
    clear(results).append(h("p", { class: "muted", id: "events-count" }, `${items.length} events${items.length > shown.length ? `, the newest ${shown.length} shown` : ""}.`));
    if (!shown.length) {
      results.append(h("p", { class: "empty" }, "No events in this period."));
      return;
    }
    body = h("tbody", {}, shown.map(eventRow));
    results.append(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", { class: "visually-hidden" }, "Events, newest first"),
          h("thead", {}, h("tr", {}, ["When", "Kind", "Target", "Project", "Message"].map((c) => h("th", { scope: "col" }, c)))),
          body,
        ),
      ),
    );
  };
  const load = async () => {
    const q = new URLSearchParams({ limit: "1000" });
    if (cluster.value) q.set("cluster", cluster.value);
    const secs = PERIODS.find((p) => p[0] === period.value)[2];
    if (secs) q.set("since", new Date(Date.now() - secs * 1000).toISOString());
    sessionStorage.setItem("sovdb.events", new URLSearchParams({ cluster: cluster.value, period: period.value }).toString());
    items = await api.all(`/events?${q}`);
    draw();
  };
  const stop = () => {
    if (following) following.abort();
    following = null;
    follow.setAttribute("aria-pressed", "false");
    clear(followStatus);
  };
  const start = () => {
    following = new AbortController();
    const ctl = following;
    signal.addEventListener("abort", () => ctl.abort());
    follow.setAttribute("aria-pressed", "true");
    clear(followStatus).append("Following: new events appear at the top as they are written.");
    const query = cluster.value ? { cluster: cluster.value } : {};
    const newest = items.length ? items[items.length - 1].at : null;
    let fresh = 0;
    api
      .followEvents(
        query,
        newest,
        (e) => {
          if (items.some((x) => x.id === e.id)) return;
          items.push(e);
          fresh++;
          if (!body) draw();
          else {
            body.prepend(eventRow(e));
            clear(results.querySelector("#events-count")).append(`${items.length} events.`);
          }
          clear(followStatus).append(`Following: ${fresh} new event${fresh === 1 ? "" : "s"} since you started.`);
        },
        ctl.signal,
      )
      .catch((e) => {
        if (ctl !== following) return;
        stop();
        followStatus.append(errorBox(e));
      });
  };
  follow.addEventListener("click", () => (following ? stop() : start()));
  const refilter = async () => {
    const was = following !== null;
    stop();
    try {
      await load();
    } catch (e) {
      clear(results).append(errorBox(e));
      return;
    }
    if (was) start();
  };
  cluster.addEventListener("change", refilter);
  period.addEventListener("change", refilter);
  main.append(
    h("div", { class: "filters toolbar", role: "group", "aria-label": "Which events" }, field("Cluster", cluster), field("Period", period), h("div", { class: "actions" }, follow)),
    followStatus,
    results,
  );
  await load();
}

// ---------------------------------------------------------------- metrics

/** A cluster's metrics charts, with a choice of cluster. */
export async function metrics(main, { args: [name], signal }) {
  main.append(heading("Metrics"));
  const clusters = await api.all("/clusters");
  if (!clusters.length) {
    main.append(h("p", { class: "empty" }, "No clusters in this project yet: metrics are those of clusters' members and their hosts."));
    return;
  }
  const current = name && clusters.some((c) => c.name === name) ? name : clusters[0].name;
  const pick = select("metrics-cluster", clusters.map((c) => [c.name, c.name]), current);
  pick.addEventListener("change", () => (location.hash = `#/metrics/${enc(pick.value)}`));
  main.append(
    h("div", { class: "inline" }, field("Cluster", pick), link(`#/clusters/${enc(current)}`, `Cluster ${current}`)),
    h("p", { class: "muted" }, "Agents sample every 10 s. By default the last 24 hours are kept at that resolution and 14 days as 1-minute rollups."),
    metricsPanel(current, signal),
  );
}
