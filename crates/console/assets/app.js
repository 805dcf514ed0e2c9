// The console's shell: the session (who is logged in, with which roles), the navigation,
// and the router from the URL's fragment (#/clusters/NAME) to a page of pages.js.

import * as api from "./api.js";
import { h, clear, errorBox, field, form } from "./ui.js";
import * as pages from "./pages.js";

const RANK = { viewer: 0, developer: 1, operator: 2, owner: 3, admin: 4 };

/** Who is logged in: from GET /whoami (and /projects, to match project roles). */
export const session = {
  user: null,
  project: null,
  rank: -1,
  admin: false,
  /** Whether the user's roles include `role` in the current project. */
  can(role) {
    return this.rank >= RANK[role];
  },
};

async function loadSession() {
  const who = await api.get("/whoami");
  session.user = who.user;
  session.project = who.project;
  let projectId = null;
  let projects = [];
  try {
    projects = await api.all("/projects");
    const p = projects.find((p) => p.name === who.project);
    projectId = p ? p.id : null;
  } catch (_) {
    projects = [];
  }
  session.projects = projects;
  session.admin = who.roles.some((b) => b.role === "admin");
  session.rank = Math.max(-1, ...who.roles.filter((b) => !b.project_id || b.project_id === projectId).map((b) => RANK[b.role] ?? -1));
}

const ROUTES = [
  [/^\/?$/, pages.overview, "Overview"],
  [/^\/clusters$/, pages.clusters, "Clusters"],
  [/^\/clusters\/new$/, pages.clusterCreate, "Create a cluster"],
  [/^\/clusters\/([^/]+)$/, pages.clusterDetail, "Cluster"],
  [/^\/metrics$/, pages.metrics, "Metrics"],
  [/^\/metrics\/([^/]+)$/, pages.metrics, "Metrics"],
  [/^\/alerts$/, pages.alerts, "Alerts"],
  [/^\/events$/, pages.events, "Events"],
  [/^\/operations$/, pages.operations, "Operations"],
  [/^\/operations\/([^/]+)$/, pages.operationDetail, "Operation"],
  [/^\/locations$/, pages.locations, "Locations and hosts"],
  [/^\/hosts\/([^/]+)$/, pages.hostDetail, "Host"],
  [/^\/repos$/, pages.repos, "Backup repositories"],
  [/^\/users$/, pages.users, "Users, roles and tokens"],
  [/^\/audit$/, pages.audit, "Audit log"],
];

const NAV = [
  ["#/", "Overview", null],
  ["#/clusters", "Clusters", null],
  ["#/metrics", "Metrics", null],
  ["#/alerts", "Alerts", null],
  ["#/events", "Events", null],
  ["#/operations", "Operations", null],
  ["#/locations", "Locations and hosts", null],
  ["#/repos", "Backup repositories", null],
  ["#/users", "Users and tokens", null],
  ["#/audit", "Audit log", "admin"],
];

const app = document.getElementById("app");
let pageAbort = null;

/** Whether the login page is showing (a 401 there is the form's to report). */
let onLoginPage = false;

function shell() {
  onLoginPage = false;
  const nav = h(
    "nav",
    { "aria-label": "Main" },
    h(
      "ul",
      {},
      NAV.map(([href, text, need]) =>
        h("li", { hidden: need === "admin" && !session.admin }, h("a", { href, "data-nav": href }, text)),
      ),
    ),
  );
  const projectSelect = h("select", { id: "project", name: "project" });
  const names = (session.projects || []).map((p) => p.name);
  if (!names.includes(session.project)) names.unshift(session.project);
  for (const n of names) projectSelect.append(h("option", { value: n, selected: n === session.project }, n));
  projectSelect.addEventListener("change", async () => {
    const previous = api.project();
    api.setProject(projectSelect.value);
    try {
      await loadSession();
    } catch (e) {
      // Not a project this user holds a role in (any more): stay where we were.
      api.setProject(previous);
      projectSelect.value = previous;
      if (e.status !== 401) document.getElementById("main").prepend(errorBox(e));
      return;
    }
    shell();
    await route();
  });
  const logout = h("button", { type: "button", id: "logout" }, "Log out");
  logout.addEventListener("click", async () => {
    // A token this console made by logging in is revoked; a token the user pasted is
    // theirs to keep, so it is only forgotten here.
    const own = sessionStorage.getItem("sovdb.loginTokenId");
    if (own) await api.del(`/tokens/${encodeURIComponent(own)}`).catch(() => {});
    sessionStorage.removeItem("sovdb.loginTokenId");
    api.setToken(null);
    // Changing the fragment routes to the login (hashchange); an unchanged one must here.
    if (location.hash !== "#/login") location.hash = "#/login";
    else loginPage();
  });
  const main = h("main", { id: "main", tabindex: "-1" });
  clear(app).append(
    h("a", { href: "#main", class: "skip", onclick: (e) => (e.preventDefault(), main.focus()) }, "Skip to content"),
    h(
      "header",
      { class: "top" },
      h("a", { href: "#/", class: "brand" }, h("img", { src: "/console/favicon.svg", alt: "", width: 24, height: 24 }), "sovdb"),
      h(
        "div",
        { class: "who" },
        h("label", { for: "project" }, "Project"),
        projectSelect,
        h("span", { id: "whoami" }, `${session.user}`),
        logout,
      ),
    ),
    h("div", { class: "layout" }, nav, main),
  );
}

async function route() {
  const path = decodeURIComponent((location.hash || "#/").slice(1)) || "/";
  if (path === "/login" || !api.token()) return loginPage();
  const main = document.getElementById("main");
  if (!main) return start();
  if (pageAbort) pageAbort.abort();
  pageAbort = new AbortController();
  for (const a of document.querySelectorAll("nav a")) {
    const href = a.getAttribute("data-nav");
    const current = href === "#/" ? path === "/" : ("#" + path).startsWith(href);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [re, page, title] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    document.title = `${title} — sovdb`;
    // Each visit builds into a container of its own: a page still loading when the user
    // moves on fills its detached container, never the page that replaced it.
    const view = h("div", { class: "view" });
    clear(main).append(view);
    try {
      await page(view, { args: m.slice(1), signal: pageAbort.signal, session });
    } catch (e) {
      if (e && e.status === 401) return;
      view.append(errorBox(e));
    }
    // A keyboard or screen-reader user lands on the new page's heading, unless the page
    // put the focus somewhere itself (a form's first field).
    const heading = view.querySelector("h1");
    if (heading && view.isConnected && !view.contains(document.activeElement)) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
    return;
  }
  clear(main).append(h("h1", {}, "Not found"), h("p", {}, "No page here. "), h("a", { href: "#/" }, "Overview"));
}

function loginPage() {
  onLoginPage = true;
  document.title = "Log in — sovdb";
  const user = h("input", { type: "text", name: "user", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const tokenInput = h("input", { type: "password", name: "token", autocomplete: "off" });
  const next = sessionStorage.getItem("sovdb.next") || "#/";
  const done = async () => {
    await loadSession();
    sessionStorage.removeItem("sovdb.next");
    const target = next === "#/login" ? "#/" : next;
    shell();
    // Changing the fragment routes (hashchange); an unchanged one must be routed here.
    if (location.hash !== target) location.hash = target;
    else await route();
  };
  const main = h(
    "main",
    { id: "main", class: "login" },
    h("h1", {}, h("img", { src: "/console/favicon.svg", alt: "", width: 32, height: 32 }), " sovdb console"),
    h(
      "section",
      { "aria-labelledby": "login-title" },
      h("h2", { id: "login-title" }, "Log in"),
      h("p", { class: "muted" }, "With your sovdb or directory (LDAP) user name and password."),
      form(
        "Log in with a password",
        [field("User", user), field("Password", password)],
        "Log in",
        async () => {
          const t = await api.call("POST", "/login", { user: user.value.trim(), password: password.value });
          api.setToken(t.secret);
          sessionStorage.setItem("sovdb.loginTokenId", t.token.id);
          await done();
        },
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "token-title" },
      h("h2", { id: "token-title" }, "Or use an API token"),
      form("Log in with a token", [field("API token", tokenInput)], "Use token", async () => {
        api.setToken(tokenInput.value.trim());
        try {
          await done();
        } catch (e) {
          api.setToken(null);
          throw e;
        }
      }),
    ),
  );
  clear(app).append(main);
  user.focus();
}

api.onUnauthorized(() => {
  // A token tried on the login page: its form says it was refused.
  if (onLoginPage) return;
  // The token expired or was revoked: back to the login, then to where the user was.
  if (location.hash !== "#/login") sessionStorage.setItem("sovdb.next", location.hash || "#/");
  api.setToken(null);
  loginPage();
});

async function start() {
  if (!api.token()) return loginPage();
  try {
    await loadSession();
  } catch (e) {
    if (e.status === 401) return;
    clear(app).append(h("main", { id: "main" }, h("h1", {}, "sovdb console"), errorBox(e)));
    return;
  }
  shell();
  await route();
}

window.addEventListener("hashchange", route);
start();
