// The approval inbox (approval:read): pending approvals across runs with the context their
// workflow declares, a form for the declared payload (checked here with schema.js and again
// by the gateway), decided approvals, and the diff reviews waiting across runs.

import { api } from "./api.js";
import { field, h, json, message, needs, select, time, uid } from "./dom.js";
import { sandboxCard } from "./review.js";
import { validate } from "./schema.js";

export async function inbox(app, root, params) {
  const view = params.get("view") || "pending";
  const order = params.get("order") || "oldest";
  const nav = h(
    "nav",
    { "aria-label": "Inbox views", class: "tabs" },
    [["pending", "Pending"], ["decided", "Decided"]].map(([v, label]) =>
      h("a", { href: `#/approvals?view=${v}&order=${order}`, "aria-current": v === view ? "page" : null }, label),
    ),
  );
  const sort = h("form", { class: "filters", "aria-label": "Sort approvals" }, field("Order", select("order", [["oldest", "oldest first"], ["urgent", "most urgent first"]], order)));
  sort.addEventListener("change", () => (location.hash = `#/approvals?view=${view}&order=${new FormData(sort).get("order")}`));
  const list = h("div", { class: "inbox" });
  root.append(h("h1", {}, "Approval inbox"), nav, view === "pending" ? sort : null, list);
  const reload = async () => {
    if (view === "decided") {
      const [approved, denied] = await Promise.all(
        ["approved", "denied"].map((s) => api("GET", `/v1/approvals?status=${s}&order=newest`)),
      );
      const all = [...approved.approvals, ...denied.approvals].sort((a, b) => b.decided_at - a.decided_at);
      list.replaceChildren(...(all.length ? all.map(decidedCard) : [h("p", {}, "Nothing decided yet.")]));
      return;
    }
    const { approvals } = await api("GET", `/v1/approvals?order=${order}`);
    const cards = approvals.map((a) => pendingCard(app, a, reload));
    const reviews = await pendingReviews(app, reload);
    list.replaceChildren(
      h("h2", {}, `Approvals (${approvals.length})`),
      ...(cards.length ? cards : [h("p", {}, "No approval is waiting.")]),
      h("h2", {}, `Diff reviews (${reviews.length})`),
      ...(reviews.length ? reviews : [h("p", {}, "No diff is waiting for review.")]),
    );
  };
  await reload();
}

async function pendingReviews(app, reload) {
  if (!app.can("run:read")) return [needs("run:read", "Finding the runs whose diffs wait for review")];
  const { runs } = await api("GET", "/v1/runs?status=waiting&limit=50");
  const cards = [];
  for (const run of runs) {
    const { sandboxes } = await api("GET", `/v1/runs/${encodeURIComponent(run.run_id)}/sandboxes?review_status=pending`);
    for (const sb of sandboxes) {
      cards.push(h("div", {}, h("p", {}, "Run ", h("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` }, run.run_id), ` (${run.workflow})`), sandboxCard(app, run.run_id, sb, reload)));
    }
  }
  return cards;
}

function decidedCard(a) {
  return h(
    "article",
    { class: `approval decided s-${a.status}`, "data-approval": `${a.run_id}/${a.node_id}` },
    h("h3", {}, a.status === "approved" ? "Approved: " : "Denied: ", h("code", {}, `${a.run_id} / ${a.node_id}`)),
    h("dl", { class: "facts" }, [
      [h("dt", {}, "By"), h("dd", {}, a.decided_by)],
      [h("dt", {}, "At"), h("dd", {}, time(a.decided_at))],
      [h("dt", {}, "Note"), h("dd", {}, a.note || "—")],
      a.payload !== null && a.payload !== undefined ? [h("dt", {}, "Payload"), h("dd", {}, json(a.payload))] : null,
    ]),
  );
}

// The whole run with run:read; else what an approver sees of it (its approval context).
function runLink(app, runId) {
  return app.can("run:read") ? `#/runs/${encodeURIComponent(runId)}` : `#/approvals/runs/${encodeURIComponent(runId)}`;
}

function pendingCard(app, a, reload) {
  const spec = a.spec || {};
  const now = Date.now() / 1000;
  const overdue = a.escalate_at && a.escalate_at <= now;
  const headingId = uid("ap");
  const card = h(
    "article",
    { class: "approval", "data-approval": `${a.run_id}/${a.node_id}`, "aria-labelledby": headingId },
    h("h3", { id: headingId }, h("a", { href: runLink(app, a.run_id) }, a.run_id), ` / ${a.node_id}`, a.iteration ? ` (iteration ${a.iteration})` : ""),
    spec.description ? h("p", { class: "description" }, spec.description) : null,
    h("dl", { class: "facts" }, [
      [h("dt", {}, "Workflow"), h("dd", {}, a.workflow || "—")],
      [h("dt", {}, "Requested"), h("dd", {}, time(a.requested_at))],
      [h("dt", {}, "Owner"), h("dd", {}, a.owner || "anyone with approval:submit")],
      [h("dt", {}, "Fallback owner"), h("dd", {}, a.fallback_owner || "—")],
      [h("dt", {}, "Escalates"), h("dd", { class: overdue ? "overdue" : "" }, a.escalate_at ? `${time(a.escalate_at)}${overdue ? " (escalated)" : ""}` : "never")],
      spec.timeout_at ? [h("dt", {}, "Decided by default"), h("dd", {}, `${spec.default} at ${time(spec.timeout_at)}`)] : null,
    ]),
  );
  const shown = Object.entries(a.context || {});
  if (shown.length) {
    card.append(h("section", { class: "context", "aria-label": "What you are deciding on" }, h("h4", {}, "Context"), shown.map(([node, value]) => h("div", {}, h("h5", {}, node), json(value)))));
  }
  if (!app.can("approval:submit")) {
    card.append(needs("approval:submit", "Approving or denying"));
    return card;
  }
  card.append(decisionForm(a, spec, reload));
  return card;
}

function decisionForm(a, spec, reload) {
  const out = h("div", { "aria-live": "assertive" });
  const form = h("form", { class: "decision", novalidate: true, "aria-label": `Decide ${a.node_id} of ${a.run_id}` });
  const payload = payloadInputs(spec);
  const note = h("textarea", { name: "note", rows: 2, maxlength: 4000 });
  const decide = async (approved) => {
    let value = null;
    out.replaceChildren();
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    if (payload) {
      const read = payload.read();
      if (read.error) {
        out.replaceChildren(message("error", read.error));
        return;
      }
      value = read.value;
      const needed = approved || value !== undefined;
      if (needed) {
        const errors = payload.check(value);
        if (errors.length) {
          payload.mark(errors);
          out.replaceChildren(h("ul", { class: "msg error", role: "alert" }, errors.map((e) => h("li", {}, e.message))));
          return;
        }
      }
    }
    const body = { approved, note: note.value || null, iteration: a.iteration };
    if (value !== undefined && value !== null) body.payload = value;
    try {
      await api("POST", `/v1/runs/${encodeURIComponent(a.run_id)}/approvals/${encodeURIComponent(a.node_id)}`, body);
      out.replaceChildren(message("ok", approved ? "Approved." : "Denied."));
      await reload();
    } catch (e) {
      out.replaceChildren(message("error", `The gateway refused: ${e.message}`));
    }
  };
  form.append(
    payload ? payload.el : null,
    field("Note", note, "Shown to everyone who reads this run."),
    h("button", { type: "button", class: "approve", onclick: () => decide(true) }, "Approve"),
    " ",
    h("button", { type: "button", class: "deny", onclick: () => decide(false) }, "Deny"),
    out,
  );
  form.addEventListener("submit", (e) => e.preventDefault());
  return form;
}

// The inputs of a declared payload: options as radio buttons, an object schema as one
// control per property, anything else as JSON text. read() -> {value} | {error}.
function payloadInputs(spec) {
  if (spec.options && spec.options.length) {
    const name = uid("opt");
    const legendId = uid("legend");
    const radios = spec.options.map((o) => {
      const input = h("input", { type: "radio", name, value: o });
      return h("div", { class: "field check" }, input, h("label", { for: (input.id = uid("o")) }, o));
    });
    const el = h("fieldset", { class: "payload", "aria-labelledby": legendId }, h("legend", { id: legendId }, "Choose one"), radios);
    return {
      el,
      read: () => ({ value: el.querySelector("input:checked")?.value }),
      check: (value) => (spec.options.includes(value) ? [] : [{ path: "payload", message: `payload must be one of ${spec.options.map((o) => JSON.stringify(o)).join(", ")}` }]),
      mark: () => el.setAttribute("aria-invalid", "true"),
    };
  }
  const schema = spec.schema;
  if (!schema) return null;
  const el = h("fieldset", { class: "payload" }, h("legend", {}, schema.title || "Decision details"));
  if (schema.description) el.append(h("p", { class: "hint" }, schema.description));
  if (schema.type === "object" && schema.properties) {
    const controls = {};
    const required = new Set(schema.required || []);
    for (const [name, sub] of Object.entries(schema.properties)) {
      const control = controlFor(name, sub, required.has(name));
      controls[name] = control;
      el.append(field(`${sub.title || name}${required.has(name) ? " (required)" : ""}`, control.input, sub.description));
    }
    return {
      el,
      read: () => {
        const value = {};
        for (const [name, control] of Object.entries(controls)) {
          const read = control.read();
          if (read.error) {
            control.input.setAttribute("aria-invalid", "true");
            control.input.focus();
            return { error: read.error };
          }
          if (read.value !== undefined) value[name] = read.value;
        }
        return { value };
      },
      check: (value) => validate(schema, value),
      mark: (errors) => {
        let first = null;
        for (const e of errors) {
          const name = e.path.split(".")[1]?.replace(/\[.*$/, "");
          const control = controls[name];
          if (control) {
            control.input.setAttribute("aria-invalid", "true");
            first ||= control.input;
          }
        }
        if (first) first.focus();
      },
    };
  }
  const control = controlFor("payload", schema, true);
  el.append(field(schema.title || "Payload", control.input));
  return { el, read: control.read, check: (v) => validate(schema, v), mark: () => control.input.setAttribute("aria-invalid", "true") };
}

function controlFor(name, schema, required) {
  if (schema.enum) {
    const options = (required ? [] : [["", "—"]]).concat(schema.enum.map((v) => [JSON.stringify(v), String(v)]));
    const input = select(name, required ? [["", "choose…"], ...options] : options, "");
    return { input, read: () => ({ value: input.value === "" ? undefined : JSON.parse(input.value) }) };
  }
  if (schema.type === "boolean") {
    const input = h("input", { type: "checkbox", name });
    return { input, read: () => ({ value: input.checked }) };
  }
  if (schema.type === "integer" || schema.type === "number") {
    const input = h("input", { type: "number", name, step: schema.type === "integer" ? "1" : "any", min: schema.minimum, max: schema.maximum });
    return { input, read: () => ({ value: input.value === "" ? undefined : Number(input.value) }) };
  }
  if (schema.type === "string") {
    const input = h("input", { type: "text", name, maxlength: schema.maxLength });
    return { input, read: () => ({ value: input.value === "" ? undefined : input.value }) };
  }
  const input = h("textarea", { name, rows: 3, spellcheck: "false" });
  return {
    input,
    read: () => {
      if (!input.value.trim()) return { value: undefined };
      try {
        return { value: JSON.parse(input.value) };
      } catch (e) {
        return { error: `${name} is not JSON: ${e.message}` };
      }
    },
  };
}
