// Diff review: a run's sandboxes with their proposed patches (file list with sizes and a
// readable unified diff), accepted or rejected with a note by approval:submit.

import { api } from "./api.js";
import { badge, field, h, message, needs, time } from "./dom.js";

export async function diffReview(app, runId, refresh) {
  const { sandboxes } = await api("GET", `/v1/runs/${encodeURIComponent(runId)}/sandboxes`);
  const section = h("section", { "aria-labelledby": "review-h" }, h("h2", { id: "review-h" }, "Sandboxes and diff review"));
  if (!sandboxes.length) {
    section.append(h("p", {}, "This run has no sandboxes."));
    return section;
  }
  for (const sb of sandboxes) section.append(sandboxCard(app, runId, sb, refresh));
  return section;
}

export function sandboxCard(app, runId, sb, refresh) {
  const patches = (sb.manifest && sb.manifest.patches) || [];
  const card = h(
    "article",
    { class: "sandbox", "data-sandbox": sb.sandbox_id, "aria-label": `Sandbox ${sb.sandbox_id}` },
    h("h3", {}, h("code", {}, sb.sandbox_id), " on ", sb.node_id, " ", badge(sb.status), " review: ", badge(sb.review_status || "none")),
    h("p", {}, `image ${sb.image}, created ${time(sb.created_at)}`),
  );
  if (!patches.length) {
    card.append(h("p", {}, "No patches proposed."));
    return card;
  }
  card.append(
    h(
      "table",
      { class: "files" },
      h("caption", {}, "Proposed patches"),
      h("thead", {}, h("tr", {}, ["Patch", "Size", "Files"].map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        patches.map((p) =>
          h("tr", {}, h("td", {}, h("a", { href: `#diff-${sb.sandbox_id}-${p.path}` }, p.path)), h("td", {}, bytes(p.size)), h("td", {}, filesOf(p.diff || "").join(", ") || "—")),
        ),
      ),
    ),
  );
  for (const p of patches) card.append(diffView(sb.sandbox_id, p));
  for (const r of sb.reviews || []) {
    card.append(h("p", { class: "decided" }, `${r.accept ? "Accepted" : "Rejected"} by ${r.actor} at ${time(r.decided_at)}`, r.note ? ` — “${r.note}”` : ""));
  }
  if (sb.review_status === "pending") {
    card.append(app.can("approval:submit") ? reviewForm(runId, sb, refresh) : needs("approval:submit", "Accepting or rejecting these patches"));
  }
  return card;
}

const bytes = (n) => (n === undefined || n === null ? "—" : n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`);

function filesOf(diff) {
  const files = [];
  for (const line of diff.split("\n")) {
    const m = /^\+\+\+ (?:b\/)?(.+)$/.exec(line);
    if (m && m[1] !== "/dev/null") files.push(m[1]);
  }
  return files;
}

function diffView(sandboxId, patch) {
  const lines = (patch.diff || "").replace(/\n$/, "").split("\n");
  return h(
    "figure",
    { class: "diff", id: `diff-${sandboxId}-${patch.path}` },
    h("figcaption", {}, `${patch.path} (${bytes(patch.size)})`),
    h(
      "pre",
      { tabindex: "0", "aria-label": `Unified diff of ${patch.path}` },
      lines.map((line) => {
        const kind = line.startsWith("+++") || line.startsWith("---") ? "file" : line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "ctx";
        return h("span", { class: `line ${kind}` }, line, "\n");
      }),
    ),
  );
}

function reviewForm(runId, sb, refresh) {
  const out = h("div", { "aria-live": "polite" });
  const note = h("textarea", { name: "note", rows: 2, maxlength: 4000 });
  const form = h("form", { class: "review", "aria-label": `Review ${sb.sandbox_id}` }, field("Review note", note));
  const decide = (accept) => async () => {
    try {
      await api("POST", `/v1/runs/${encodeURIComponent(runId)}/sandboxes/${encodeURIComponent(sb.sandbox_id)}/review`, {
        accept,
        note: note.value || null,
      });
      out.replaceChildren(message("ok", accept ? "Patches accepted." : "Patches rejected."));
      await refresh();
    } catch (e) {
      out.replaceChildren(message("error", e.message));
    }
  };
  form.append(
    h("button", { type: "button", class: "approve", onclick: decide(true) }, "Accept patches"),
    " ",
    h("button", { type: "button", class: "deny", onclick: decide(false) }, "Reject patches"),
    out,
  );
  form.addEventListener("submit", (e) => e.preventDefault());
  return form;
}
