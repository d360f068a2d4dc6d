// The console's shell: sign-in, navigation by the URL hash, and what the scopes allow.

import { ApiError, currentSession, signIn, signOut } from "./api.js";
import { field, h, message } from "./dom.js";
import { approvalContext } from "./context.js";
import { inbox } from "./inbox.js";
import { dashboard, runPage } from "./runs.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
const nav = document.getElementById("nav");

const app = {
  session: null,
  leaving: [],
  can(scope) {
    return Boolean(this.session && this.session.scopes.includes(scope));
  },
  onLeave(fn) {
    this.leaving.push(fn);
  },
  fail(error) {
    if (error instanceof ApiError && error.status === 401) {
      this.session = null;
      route();
      return;
    }
    main.append(message("error", error.message || String(error)));
  },
};

function header() {
  nav.replaceChildren();
  who.replaceChildren();
  if (!app.session) return;
  const links = [["#/runs", "Runs", "run:read"], ["#/approvals", "Approvals", "approval:read"]];
  for (const [href, label, scope] of links) {
    nav.append(
      app.can(scope)
        ? h("a", { href, "aria-current": location.hash.startsWith(href) ? "page" : null }, label)
        : h("span", { class: "muted", title: `needs ${scope}` }, `${label} (needs ${scope})`),
    );
  }
  const out = h("button", { type: "button", id: "sign-out" }, "Sign out");
  out.addEventListener("click", async () => {
    await signOut().catch(() => null);
    app.session = null;
    if (location.hash === "#/signin") route();
    else location.hash = "#/signin";
  });
  who.append(
    h("span", {}, "Signed in as ", h("strong", {}, app.session.subject), ` · scopes: ${app.session.scopes.join(", ") || "none"}`),
    " ",
    out,
  );
}

function signInPage() {
  const token = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const out = h("div", { "aria-live": "assertive" });
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-h" },
    h("h1", { id: "signin-h" }, "Sign in"),
    field("Bearer token", token, "Exchanged once for a session cookie; the token is not stored by this page."),
    h("button", { type: "submit" }, "Sign in"),
    out,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      app.session = await signIn(token.value);
      token.value = "";
      const target = app.can("run:read") ? "#/runs" : "#/approvals";
      if (location.hash === target) route();
      else location.hash = target;
    } catch (error) {
      out.replaceChildren(message("error", `Sign-in refused: ${error.message}`));
      token.setAttribute("aria-invalid", "true");
      token.focus();
    }
  });
  main.replaceChildren(form);
  token.focus();
}

async function route() {
  for (const fn of app.leaving.splice(0)) fn();
  if (app.session === null) app.session = await currentSession().catch(() => null);
  header();
  if (!app.session) {
    signInPage();
    return;
  }
  const [path, query] = (location.hash.slice(1) || "/runs").split("?");
  const params = new URLSearchParams(query || "");
  const view = h("div");
  main.replaceChildren(view);
  try {
    const run = /^\/runs\/([^/]+)$/.exec(path);
    const held = /^\/approvals\/runs\/([^/]+)$/.exec(path);
    if (run) await gate("run:read", "Reading runs", view, () => runPage(app, view, decodeURIComponent(run[1])));
    else if (held) await gate("approval:read", "A run you decide on", view, () => approvalContext(app, view, decodeURIComponent(held[1])));
    else if (path.startsWith("/approvals")) await gate("approval:read", "The approval inbox", view, () => inbox(app, view, params));
    else if (path === "/signin") location.hash = app.can("run:read") ? "#/runs" : "#/approvals";
    else await gate("run:read", "The run dashboard", view, () => dashboard(app, view, params));
  } catch (error) {
    app.fail(error);
  }
  document.title = `${(view.querySelector("h1") || {}).textContent || "Console"} · Smithers`;
  const heading = view.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

async function gate(scope, what, view, show) {
  if (app.can(scope)) return show();
  view.append(h("h1", {}, what), h("p", { class: "needs", role: "note" }, `${what} needs the scope `, h("code", {}, scope), "."));
}

window.addEventListener("hashchange", route);
route();
