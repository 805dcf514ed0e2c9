// The console's pages. Each takes the <main> element and {args, signal, session}, reads
// what it shows from the API and builds the page. Change buttons are shown only to roles
// that may use them; the API decides anyway, and its refusal is shown if one comes.

import * as api from "./api.js";
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
  const [clusters, ops] = await Promise.all([api.all("/clusters"), api.get("/operations?limit=10")]);
  const counts = {};
  for (const c of clusters) counts[c.state] = (counts[c.state] || 0) + 1;
  const states = ["ready", "creating", "degraded", "failed", "deleting"];
  main.append(
    section(
      "Clusters by state",
      h(
        "ul",
        { class: "tiles" },
        states.map((s) => h("li", { class: "tile state-" + s }, h("span", { class: "count" }, String(counts[s] || 0)), h("span", {}, s))),
      ),
      h("p", {}, link("#/clusters", `All ${clusters.length} clusters`), session.can("developer") ? [" · ", link("#/clusters/new", "Create a cluster")] : null),
    ),
    // Firing alerts go here when the API has alerts.
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
  if (session.can("operator") && c.members.length > 1) {
    const to = select("to", [["", "the best replica (Patroni chooses)"], ...c.members.filter((m) => m.role !== "primary").map((m) => [m.name, m.name])], "");
    to.id = "switchover-to";
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
  add(
    main,
    heading(`Cluster ${cl.name}`),
    h("p", {}, badge(cl.state), ` ${cl.engine} ${cl.version} in ${cl.location}`, c.status_message ? h("span", { class: "muted" }, ` — ${c.status_message}`) : null),
    actions.length ? h("div", { class: "actions toolbar", role: "group", "aria-label": "Cluster actions" }, actions) : null,
    live,
    section(
      "Topology",
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
        c.members,
        "No members yet.",
      ),
    ),
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
    section(
      "Operations",
      later(async () => {
        const ops = (await api.get("/operations?limit=200")).items.filter((o) => o.target === `cluster/${name}`);
        return operationTable(ops);
      }),
    ),
    section(
      "Events",
      later(async () => {
        const events = await api.all(`${path}/events`);
        return table("Events", [["When", (e) => time(e.at)], ["Kind", (e) => e.kind], ["Message", (e) => e.message]], events.slice(-50).reverse(), "No events.");
      }),
    ),
    // Metrics charts go here when the API has cluster metrics.
  );
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
          field("Zone", zone),
          field("Labels", labels, "key=value pairs, separated by commas."),
        ],
        "Add host",
        async () => {
          const body = { name: name.value.trim(), location: loc.value, address: address.value.trim() };
          if (sshUser.value.trim()) body.ssh_user = sshUser.value.trim();
          if (sshPort.value) body.ssh_port = Number(sshPort.value);
          if (key.value.trim()) body.ssh_private_key = key.value;
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
  main.append(section("Your API tokens", await tokens()));
  if (!session.can("owner")) return;
  main.append(section("Users", await userList(session)));
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
        ],
        items,
      ),
    );
    const chosen = gUser.value;
    clear(gUser).append(...items.map((u) => h("option", { value: u.name, selected: u.name === chosen }, u.name)));
  };
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
