// A run as its approver sees it (approval:read, no run:read needed): the run's summary and
// input, the pending approvals the signed-in subject holds on it, the outputs they are about
// and the run's events, from GET /v1/runs/{run_id}/approval-context.

import { api } from "./api.js";
import { badge, h, json, time } from "./dom.js";

export async function approvalContext(app, root, runId) {
  const events = [];
  let page = await api("GET", `/v1/runs/${encodeURIComponent(runId)}/approval-context`);
  const { run, approvals, outputs } = page;
  events.push(...page.events);
  while (page.next_after_seq !== null && events.length < 2000) {
    page = await api("GET", `/v1/runs/${encodeURIComponent(runId)}/approval-context?after_seq=${page.next_after_seq}`);
    events.push(...page.events);
  }
  root.append(
    h("h1", {}, "Run ", h("code", {}, run.run_id), " for your approval"),
    h("p", {}, h("a", { href: "#/approvals" }, "Back to the inbox")),
    h("dl", { class: "facts" }, [
      [h("dt", {}, "Workflow"), h("dd", {}, run.workflow)],
      [h("dt", {}, "Status"), h("dd", {}, badge(run.status))],
      [h("dt", {}, "Launched by"), h("dd", {}, run.launched_by || "—")],
      [h("dt", {}, "Created"), h("dd", {}, time(run.created_at))],
    ]),
    h("section", { "aria-label": "Input" }, h("h2", {}, "Input"), json(run.input)),
    h(
      "section",
      { "aria-label": "Pending approvals" },
      h("h2", {}, "Waiting for you"),
      approvals.map((a) =>
        h(
          "article",
          { class: "approval", "data-approval": `${a.run_id}/${a.node_id}` },
          h("h3", {}, h("code", {}, a.node_id), a.iteration ? ` (iteration ${a.iteration})` : ""),
          (a.spec || {}).description ? h("p", { class: "description" }, a.spec.description) : null,
          h("p", {}, "Owner ", a.owner || "anyone with approval:submit", a.fallback_owner ? `, fallback ${a.fallback_owner}` : ""),
        ),
      ),
      app.can("approval:submit") ? h("p", {}, h("a", { href: "#/approvals" }, "Decide in the inbox")) : null,
    ),
    h(
      "section",
      { class: "context", "aria-label": "What you are deciding on" },
      h("h2", {}, "Outputs"),
      outputs.length ? outputs.map((o) => h("div", {}, h("h3", {}, o.node_id), json(o.value))) : h("p", {}, "No upstream output yet."),
    ),
    h(
      "section",
      { "aria-label": "Events" },
      h("h2", {}, `Events (${events.length})`),
      h("ol", { class: "events" }, events.map((e) => h("li", { "data-seq": e.seq }, h("code", {}, e.type), e.node_id ? ` ${e.node_id}` : "", ` · ${time(e.created_at)}`))),
    ),
  );
}
