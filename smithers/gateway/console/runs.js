// The run dashboard (run:read) and a run's page: graph, timeline, attempts, outputs,
// audit, sandboxes with their diffs, and the actions the session's scopes allow.

import { api, EventStream } from "./api.js";
import { badge, duration, field, h, json, message, needs, select, time } from "./dom.js";
import { diffReview } from "./review.js";

const STATUSES = ["", "queued", "running", "waiting", "succeeded", "failed", "cancelled"];
const SINCE = [["", "any time"], ["3600", "last hour"], ["86400", "last day"], ["604800", "last week"]];
const WIDE = 8; // a fan-out wider than this is shown collapsed, by state
const expanded = new Set(); // fan-outs opened by the person, kept across live re-renders

export async function dashboard(app, root, params) {
  const workflows = (await api("GET", "/v1/workflows")).workflows;
  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    field("Status", select("status", STATUSES.map((s) => [s, s || "any"]), params.get("status") || "")),
    field(
      "Workflow",
      select("workflow", [["", "any"], ...workflows.map((w) => [w.name, w.name])], params.get("workflow") || ""),
    ),
    field("Created", select("since", SINCE, params.get("since") || "")),
    field("Run id contains", h("input", { name: "q", type: "search", value: params.get("q") || "", maxlength: 64 })),
    h("button", { type: "submit" }, "Apply filters"),
  );
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [key, value] of new FormData(filters)) if (value) query.set(key, value);
    location.hash = `#/runs?${query}`;
  });
  const table = h("div", { "aria-live": "polite" });
  const live = h("p", { class: "live", role: "status" }, "connecting…");
  root.append(
    h("h1", {}, "Runs"),
    app.can("run:write") ? launchForm(app, workflows) : needs("run:write", "Launching a run"),
    filters,
    live,
    table,
  );

  const query = new URLSearchParams();
  for (const key of ["status", "workflow", "q"]) if (params.get(key)) query.set(key, params.get(key));
  if (params.get("since")) query.set("since", String(Math.floor(Date.now() / 1000) - Number(params.get("since"))));
  let timer = null;
  const load = async () => {
    const page = await api("GET", `/v1/runs?${query}`);
    table.replaceChildren(runTable(page.runs));
    return page;
  };
  const page = await load();
  // live: every run's events, from the feed position of the page just read
  const stream = new EventStream(
    "/v1/events",
    "after_feed_id",
    (ev) => {
      if (!ev.type || !(ev.type.startsWith("run.") || ev.type.startsWith("node.") || ev.type.startsWith("approval."))) return;
      clearTimeout(timer);
      timer = setTimeout(() => load().catch((e) => app.fail(e)), 150);
    },
    (state) => live.replaceChildren(state === "live" ? "● live" : state === "denied" ? "stream refused" : "reconnecting…"),
  ).start(page.feed_id || 0);
  app.onLeave(() => {
    stream.stop();
    clearTimeout(timer);
  });
}

function runTable(runs) {
  if (!runs.length) return h("p", {}, "No runs match.");
  return h(
    "table",
    { class: "runs" },
    h("caption", {}, `${runs.length} run${runs.length === 1 ? "" : "s"}, newest first`),
    h("thead", {}, h("tr", {}, ["Run", "Workflow", "Status", "Created", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      runs.map((r) =>
        h(
          "tr",
          { "data-run": r.run_id, "data-status": r.status },
          h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.run_id)}` }, r.run_id)),
          h("td", {}, r.workflow),
          h("td", {}, badge(r.status)),
          h("td", {}, time(r.created_at)),
          h("td", {}, time(r.updated_at)),
        ),
      ),
    ),
  );
}

function launchForm(app, workflows) {
  const input = h("textarea", { name: "input", rows: 3, spellcheck: "false" }, "{}");
  const error = h("div", { "aria-live": "assertive" });
  const form = h(
    "form",
    { class: "launch", "aria-label": "Launch a run" },
    h("h2", {}, "Launch"),
    field("Workflow to launch", select("workflow", workflows.map((w) => [w.name, `${w.name} (v${w.version})`]))),
    field("Input (JSON object)", input),
    field("Run id (optional)", h("input", { name: "run_id", maxlength: 64, pattern: "[a-z0-9_\\-]{1,64}" })),
    h("button", { type: "submit" }, "Launch run"),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    let runInput;
    try {
      runInput = JSON.parse(String(data.get("input") || "{}"));
    } catch (e) {
      error.replaceChildren(message("error", `Input is not JSON: ${e.message}`));
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    const body = { workflow: data.get("workflow"), input: runInput };
    if (data.get("run_id")) body.run_id = data.get("run_id");
    try {
      const run = await api("POST", "/v1/runs", body);
      location.hash = `#/runs/${encodeURIComponent(run.run_id)}`;
    } catch (e) {
      error.replaceChildren(message("error", e.message));
    }
  });
  return form;
}

export async function runPage(app, root, runId) {
  const head = h("div");
  const graph = h("section", { "aria-labelledby": "graph-h" });
  const timeline = h("ol", { class: "timeline", "aria-label": "Event timeline" });
  const details = h("div");
  const live = h("p", { class: "live", role: "status" }, "connecting…");
  root.append(
    h("p", {}, h("a", { href: "#/runs" }, "← all runs")),
    head,
    graph,
    h("section", { "aria-labelledby": "events-h" }, h("h2", { id: "events-h" }, "Events"), live, timeline),
    details,
  );
  const workflows = (await api("GET", "/v1/workflows")).workflows;
  let timer = null;
  const render = async () => {
    const data = await api("GET", `/v1/runs/${encodeURIComponent(runId)}`);
    const wf = workflows.find((w) => w.name === data.run.workflow);
    head.replaceChildren(...runHeader(app, data.run, wf, render).filter(Boolean));
    graph.replaceChildren(h("h2", { id: "graph-h" }, "Graph"), graphView(wf, data.nodes));
    const audit = await api("GET", `/v1/runs/${encodeURIComponent(runId)}/audit`).catch(() => null);
    const parts = [childrenView(data.children || []), attemptsView(data.attempts), outputsView(data.outputs), auditView(audit)];
    if (app.can("approval:read")) parts.push(await diffReview(app, runId, render));
    else parts.push(needs("approval:read", "Seeing this run's diff reviews"));
    details.replaceChildren(...parts.filter(Boolean));
  };
  await render();
  const stream = new EventStream(
    `/v1/runs/${encodeURIComponent(runId)}/events`,
    "after_seq",
    (ev) => {
      timeline.append(eventItem(ev));
      clearTimeout(timer);
      timer = setTimeout(() => render().catch((e) => app.fail(e)), 120);
    },
    (state) =>
      live.replaceChildren(
        { live: "● live", ended: "run finished: stream complete", denied: "stream refused" }[state] || "reconnecting…",
      ),
  ).start(0);
  app.onLeave(() => {
    stream.stop();
    clearTimeout(timer);
  });
}

function runHeader(app, run, wf, refresh) {
  const facts = [
    ["Workflow", `${run.workflow} v${run.workflow_version}`],
    ["Revision", run.module_revision],
    ["Deployment", run.deployment_version],
    ["Launched by", run.launched_by || "—"],
    run.parent_run_id ? [run.parent_node_id ? "Parent run" : "Rerun of", parentLink(run)] : null,
    ["Created", time(run.created_at)],
    ["Updated", time(run.updated_at)],
  ];
  return [
    h("h1", {}, "Run ", h("code", {}, run.run_id), " ", badge(run.status)),
    h("dl", { class: "facts" }, facts.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    run.error ? h("div", { class: "error-box", role: "alert" }, h("strong", {}, "Error: "), json(run.error)) : null,
    actions(app, run, wf, refresh),
  ];
}

const runLink = (runId) => h("a", { href: `#/runs/${encodeURIComponent(runId)}` }, runId);

// A child run links to its parent's node execution; a rerun or replay to its source.
function parentLink(run) {
  const link = runLink(run.parent_run_id);
  if (!run.parent_node_id) return link;
  const at = run.parent_iteration ? `${run.parent_node_id}[${run.parent_iteration}]` : run.parent_node_id;
  return h("span", {}, link, " at node ", h("code", {}, at));
}

// The child runs the run's child nodes launched, each linked (every epoch).
function childrenView(children) {
  if (!children.length) return null;
  return h(
    "section",
    { "aria-labelledby": "children-h" },
    h("h2", { id: "children-h" }, "Child runs"),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["Node", "Epoch", "Run", "Workflow", "Status"].map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        children.map((c) =>
          h(
            "tr",
            {},
            h("td", {}, h("code", {}, c.iteration ? `${c.node_id}[${c.iteration}]` : c.node_id)),
            h("td", {}, String(c.epoch)),
            h("td", {}, runLink(c.run_id)),
            h("td", {}, c.workflow),
            h("td", {}, badge(c.status)),
          ),
        ),
      ),
    ),
  );
}

function actions(app, run, wf, refresh) {
  const out = h("div", { "aria-live": "polite" });
  const bar = h("div", { class: "actions", role: "group", "aria-label": "Run actions" });
  const terminal = ["succeeded", "failed", "cancelled"].includes(run.status);
  const act = (label, path, body, done) =>
    h(
      "button",
      {
        type: "button",
        onclick: async () => {
          try {
            const result = await api("POST", `/v1/runs/${encodeURIComponent(run.run_id)}/${path}`, body);
            if (done) done(result);
            else await refresh();
            out.replaceChildren(message("ok", `${label}: done`));
          } catch (e) {
            out.replaceChildren(message("error", `${label}: ${e.message}`));
          }
        },
      },
      label,
    );
  if (!app.can("run:write")) {
    bar.append(needs("run:write", "Cancel, resume, rerun and time travel"));
    return h("div", {}, bar, out);
  }
  if (!terminal) bar.append(act("Cancel run", "cancel"));
  if (["failed", "cancelled"].includes(run.status)) bar.append(act("Resume run", "resume"));
  bar.append(act("Rerun", "rerun", undefined, (r) => (location.hash = `#/runs/${encodeURIComponent(r.run_id)}`)));
  const mayTravel = app.can("admin") || app.session.subject === run.launched_by;
  const travel = mayTravel && wf ? timeTravel(run, wf, out) : needs("admin", "Rewind, replay and fork of another person's run");
  return h("div", {}, bar, travel, out);
}

function timeTravel(run, wf, out) {
  const confirmBox = h("input", { type: "checkbox", name: "confirm" });
  const form = h(
    "form",
    { class: "travel", "aria-label": "Time travel" },
    h("h2", {}, "Time travel"),
    field("Node", select("node_id", wf.nodes.map((n) => [n.id, n.id]))),
    field("Action", select("action", [["rewind", "rewind (reopen this run)"], ["replay", "replay (new run)"], ["fork", "fork (new run, new input)"]])),
    field("Fork input (JSON)", h("textarea", { name: "input", rows: 2 }, "{}")),
    h("div", { class: "field check" }, confirmBox, h("label", { for: (confirmBox.id = `confirm-${run.run_id}`) }, "I understand this changes history")),
    h("button", { type: "submit" }, "Travel"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    if (!confirmBox.checked) {
      out.replaceChildren(message("error", "Tick the confirmation first."));
      confirmBox.focus();
      return;
    }
    const action = data.get("action");
    const body = { node_id: data.get("node_id"), confirm: true };
    try {
      if (action === "fork") body.input = JSON.parse(String(data.get("input") || "{}"));
      const result = await api("POST", `/v1/runs/${encodeURIComponent(run.run_id)}/${action}`, body);
      out.replaceChildren(message("ok", `${action}: done`));
      const next = (result && (result.new_run_id || (result.run && result.run.run_id))) || run.run_id;
      location.hash = `#/runs/${encodeURIComponent(next)}`;
    } catch (e) {
      out.replaceChildren(message("error", `${action}: ${e.message}`));
    }
  });
  return form;
}

// Nodes in topological layers, each with its state; loop bodies show their iterations;
// a layer wider than WIDE is collapsed to counts by state, with a toggle.
function graphView(wf, nodes) {
  if (!wf) return h("p", {}, "This workflow is not registered in this gateway.");
  const byId = new Map();
  for (const n of nodes) {
    const list = byId.get(n.node_id) || [];
    list.push(n);
    byId.set(n.node_id, list);
  }
  // a loop's body comes right after the loop (its nodes list only each other in after)
  const depth = new Map();
  const place = (n) => {
    if (depth.has(n.id)) return depth.get(n.id);
    depth.set(n.id, 0); // a guard: the graph has no cycles, the registry checked
    const parents = n.after.map((a) => place(wf.nodes.find((m) => m.id === a)) + 1);
    if (n.loop) parents.push(place(wf.nodes.find((m) => m.id === n.loop)) + 1);
    const d = Math.max(0, ...parents);
    depth.set(n.id, d);
    return d;
  };
  wf.nodes.forEach(place);
  const layers = [];
  for (const n of wf.nodes) (layers[depth.get(n.id)] ||= []).push(n);
  return h(
    "ol",
    { class: "graph", "aria-label": "Workflow graph, by layer" },
    layers.map((layer, i) => {
      const cards = layer.map((n) => nodeCard(n, byId.get(n.id) || []));
      if (layer.length <= WIDE) return h("li", { class: "layer" }, cards);
      const counts = {};
      for (const n of layer) {
        const st = latest(byId.get(n.id) || [])?.status || "pending";
        counts[st] = (counts[st] || 0) + 1;
      }
      const key = `${wf.name}:${i}`;
      const list = h("div", { class: "cards", hidden: !expanded.has(key) }, cards);
      const toggle = h("button", { type: "button", "aria-expanded": String(expanded.has(key)) }, `fan-out of ${layer.length} nodes: `, Object.entries(counts).map(([s, c]) => `${c} ${s}`).join(", "));
      toggle.addEventListener("click", () => {
        list.hidden = !list.hidden;
        if (list.hidden) expanded.delete(key);
        else expanded.add(key);
        toggle.setAttribute("aria-expanded", String(!list.hidden));
      });
      return h("li", { class: "layer wide", "data-layer": i }, toggle, list);
    }),
  );
}

const latest = (execs) => execs.slice().sort((a, b) => b.iteration - a.iteration)[0];

function nodeCard(node, execs) {
  const last = latest(execs);
  const status = last ? last.status : "pending";
  const iterations = execs.length > 1 ? h("span", { class: "iter" }, ` ×${execs.length} iterations`) : null;
  return h(
    "div",
    { class: `node s-${status}`, "data-node": node.id, "data-status": status },
    h("strong", {}, node.id),
    h("span", { class: "kind" }, ` ${node.kind}`),
    " ",
    badge(status),
    iterations,
  );
}

function eventItem(ev) {
  const where = ev.node_id ? ` ${ev.node_id}${ev.iteration ? `#${ev.iteration}` : ""}` : "";
  return h(
    "li",
    { "data-type": ev.type, "data-seq": ev.seq },
    h("span", { class: "seq" }, `#${ev.seq}`),
    " ",
    h("time", {}, time(ev.created_at)),
    " ",
    h("strong", {}, ev.type),
    where,
    Object.keys(ev.payload || {}).length ? h("details", {}, h("summary", {}, "payload"), json(ev.payload)) : null,
  );
}

function attemptsView(attempts) {
  return h(
    "section",
    { "aria-labelledby": "attempts-h" },
    h("h2", { id: "attempts-h" }, "Attempts"),
    attempts.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Node", "Iteration", "#", "State", "Duration", "Error"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            attempts.map((a) =>
              h(
                "tr",
                {},
                h("td", {}, a.node_id),
                h("td", {}, a.iteration),
                h("td", {}, a.number),
                h("td", {}, badge(a.state)),
                h("td", {}, a.finished_at && a.started_at ? duration(a.finished_at - a.started_at) : "—"),
                h("td", {}, a.error ? `${a.error.code || ""}: ${a.error.message || ""}` : ""),
              ),
            ),
          ),
        )
      : h("p", {}, "No attempts yet."),
  );
}

function outputsView(outputs) {
  return h(
    "section",
    { "aria-labelledby": "outputs-h" },
    h("h2", { id: "outputs-h" }, "Outputs (redacted)"),
    outputs.length
      ? h("dl", { class: "outputs" }, outputs.map((o) => [h("dt", {}, `${o.node_id}${o.iteration ? `#${o.iteration}` : ""}`), h("dd", {}, json(o.value))]))
      : h("p", {}, "No outputs yet."),
  );
}

function auditView(audit) {
  // the trail without the events (the timeline shows those): audit rows and time travel
  const entries = ((audit && audit.entries) || []).filter((e) => e.source !== "event");
  return h(
    "section",
    { "aria-labelledby": "audit-h" },
    h("h2", { id: "audit-h" }, "Audit"),
    entries.length
      ? h(
          "table",
          { class: "audit" },
          h("thead", {}, h("tr", {}, ["Time", "Action", "Actor", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            entries.map((e) =>
              h(
                "tr",
                { "data-action": e.type },
                h("td", {}, time(e.at)),
                h("td", {}, e.type, e.status ? ` (${e.status})` : ""),
                h("td", {}, e.actor || "—"),
                h("td", {}, json(e.detail || {})),
              ),
            ),
          ),
        )
      : h("p", {}, "No audit entries."),
  );
}
