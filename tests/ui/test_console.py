"""The console in Chromium: launch a run, watch it live, approve it from the inbox with a
structured payload, review a sandbox's diff, see both runs finish; a token without
``approval:submit`` sees no approve button and gets 403 when it forces the call; every
control is labelled and the main path works from the keyboard."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from smithers.shared.registry import Registry
from smithers.shared.status import ApprovalStatus, RunStatus
from smithers.shared.store import sandboxes as sb
from smithers.shared.store.attempts import claim, complete
from smithers.shared.store.queries import approvals, events_after, get_run, nodes_of, outputs_of
from smithers.shared.store.runs import launch
from tests.ui.conftest import LiveGateway

pytestmark = pytest.mark.timeout(240)

PATCH_DIFF = (
    "--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1 +1 @@\n-hello world\n+hello, reviewed world\n"
    "--- /dev/null\n+++ b/notes/new.txt\n@@ -0,0 +1 @@\n+written in a sandbox\n"
)
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter(el => el.type !== 'hidden')
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
        && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
    .map(el => el.outerHTML)"""


@pytest.fixture
def page(chromium: Any, live: LiveGateway) -> Iterator[Any]:
    context = chromium.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    problems: list[str] = []
    # errors in the page (a CSP violation, an exception); the 401 of GET /v1/session while
    # signed out is how the console learns it must show the sign-in form
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" and "401" not in m.text else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.problems = problems
    yield pg
    context.close()


def sign_in(page: Any, token: str) -> None:
    page.goto("/ui/")
    page.get_by_label("Bearer token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Bearer token").wait_for()


def wait_for(check: Any, timeout: float = 30) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def run_status(live: LiveGateway, run_id: str) -> RunStatus:
    with live.store.read() as conn:
        run = get_run(conn, run_id)
    assert run is not None
    return run.status


def unlabelled(page: Any) -> list[str]:
    return list(page.evaluate(UNLABELLED))


def test_launch_watch_approve_with_a_payload_and_see_it_finish(
    page: Any, live: LiveGateway, shots: Any
) -> None:
    # given a launcher and an approver, each with only their own scopes
    launcher = live.token("alice", "run:read,run:write")
    approver = live.token("carol", "run:read,approval:read,approval:submit")

    # the console is same-origin static files under a strict CSP
    response = page.goto("/ui/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp

    # when the launcher signs in and launches from the dashboard
    sign_in(page, launcher)
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: the page cannot read it
    assert page.evaluate("() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage)") == "{}{}"
    page.get_by_label("Workflow to launch").select_option("t-release")
    page.get_by_label("Input (JSON object)").fill('{"version": "1.4.2"}')
    page.get_by_label("Run id (optional)").fill("rel-142")
    assert unlabelled(page) == []
    page.get_by_role("button", name="Launch run").click()

    # then the run page follows it live: the approval request arrives on the timeline
    page.locator('.timeline li[data-type="approval.requested"]').wait_for()
    page.locator('.node[data-node="ship"][data-status="waiting"]').wait_for()
    assert page.get_by_role("status").filter(has_text="live").count() >= 1
    assert page.get_by_text("Approving or denying").count() == 0  # the run page is no inbox
    shots(page, "run-waiting", docs=True)
    sign_out(page)

    # when the approver opens the inbox
    sign_in(page, approver)
    page.get_by_role("link", name="Approvals").click()
    card = page.locator('article.approval[data-approval="rel-142/ship"]')
    card.wait_for()
    assert "Ship this build to production?" in card.inner_text()
    assert "app-1.4.2.tar.gz" in card.locator(".context").inner_text()  # the declared upstream output
    assert "carol" in card.inner_text() and "dave" in card.inner_text()
    assert unlabelled(page) == []

    # a payload the schema refuses is refused in the browser: nothing reaches the gateway
    card.get_by_label("Rollout percent").fill("250")
    card.get_by_role("button", name="Approve").click()
    card.get_by_role("alert").filter(has_text="payload.channel is required").wait_for()
    assert "payload.percent must be <= 100" in card.get_by_role("alert").inner_text()
    assert card.get_by_label("Channel (required)").get_attribute("aria-invalid") == "true"
    with live.store.read() as conn:
        assert [a.status for a in approvals(conn, run_id="rel-142")] == [ApprovalStatus.PENDING]
    shots(page, "inbox", docs=True)

    # a valid one is sent, checked again by the gateway, and recorded
    card.get_by_label("Channel (required)").select_option(label="beta")
    card.get_by_label("Rollout percent").fill("25")
    card.get_by_label("Note").fill("beta first, watch the error rate")
    card.get_by_role("button", name="Approve").click()
    page.get_by_text("No approval is waiting.").wait_for()

    # then the run finishes, seen live on its page, with the payload as the node's output
    page.goto("/ui/#/runs/rel-142")
    page.get_by_text("run finished: stream complete").wait_for()
    page.locator('.node[data-node="publish"][data-status="succeeded"]').wait_for()
    assert run_status(live, "rel-142") is RunStatus.SUCCEEDED
    with live.store.read() as conn:
        outputs = outputs_of(conn, "rel-142")
    assert outputs[("publish", 0)] == {"channel": "beta", "percent": 25}
    assert outputs[("ship", 0)]["payload"] == {"channel": "beta", "percent": 25}
    assert page.locator('.audit tr[data-action="approval.decided"]').count() == 1
    shots(page, "run-finished", docs=True)

    # and the decided tab shows who decided, with the note and time
    page.goto("/ui/#/approvals?view=decided")
    decided = page.locator('article.decided[data-approval="rel-142/ship"]')
    decided.wait_for()
    assert "carol" in decided.inner_text() and "beta first" in decided.inner_text()
    assert page.problems == [], page.problems


def seed_review(live: LiveGateway, registry: Registry, run_id: str) -> str:
    """Launch t-review and play the sandbox worker's part through the store: claim the
    attempt, record the sandbox and its patch, commit the result (as the worker does)."""
    entry = registry.get("t-review")
    with live.store.write() as tx:
        launch(
            tx,
            run_id=run_id,
            workflow="t-review",
            workflow_version=entry.workflow.version,
            module_revision=entry.revision,
            deployment_version="test",
            run_input={},
            launched_by="alice",
        )
    live.svc.broker.wake(run_id) if live.svc.broker else None

    def attempt() -> str | None:
        with live.store.read() as conn:
            node = next((n for n in nodes_of(conn, run_id) if n.node_id == "propose"), None)
        return node.current_attempt_id if node is not None else None

    attempt_id = wait_for(attempt)
    with live.store.write() as tx:
        c = claim(tx, attempt_id, "ui-test-sandbox", 60.0)
    assert c is not None
    sandbox_id = "sbx-" + attempt_id.replace("-", "")
    patch = {"path": "0001-greeting.patch", "sha256": "0" * 64, "size": len(PATCH_DIFF), "diff": PATCH_DIFF}
    with live.store.write() as tx:
        sb.create(
            tx,
            sandbox_id=sandbox_id,
            run_id=run_id,
            node_id="propose",
            iteration=0,
            attempt_id=attempt_id,
            runtime="docker",
            image="smithers-sandbox:latest",
            limits={"memory_mb": 256},
            bundle_path="/tmp/none",
        )
    with live.store.write() as tx:
        sb.started(tx, sandbox_id, container_id="c" * 64, image_digest="sha256:abc", request_bytes=100)
    with live.store.write() as tx:
        sb.finished(
            tx,
            sandbox_id,
            manifest={"status": "succeeded", "outputs": {}, "patches": [patch]},
            result_bytes=len(PATCH_DIFF),
            patches=1,
            auto_accept=False,
        )
    with live.store.write() as tx:
        assert complete(tx, c.attempt_id, c.claim_token, ok=True, output={"workspace": {"files": {}}})
    if live.svc.broker is not None:
        live.svc.broker.wake(run_id)
    wait_for(lambda: run_status(live, run_id) is RunStatus.WAITING)
    return sandbox_id


def test_review_a_diff_from_the_inbox_and_the_run_goes_on(
    page: Any, live: LiveGateway, ui_registry: Registry, shots: Any
) -> None:
    # given a sandbox whose patch waits for review
    sandbox_id = seed_review(live, ui_registry, "rev-1")
    reviewer = live.token("carol", "run:read,approval:read,approval:submit")

    # when the reviewer opens the inbox: the file list with sizes and a readable diff
    sign_in(page, reviewer)
    page.get_by_role("link", name="Approvals").click()
    card = page.locator(f'article.sandbox[data-sandbox="{sandbox_id}"]')
    card.wait_for()
    files = card.locator("table.files").inner_text()
    assert "0001-greeting.patch" in files and "greeting.txt, notes/new.txt" in files
    assert f"{len(PATCH_DIFF)} B" in files
    assert card.locator(".diff .line.add").filter(has_text="+hello, reviewed world").count() == 1
    assert card.locator(".diff .line.del").filter(has_text="-hello world").count() == 1
    assert unlabelled(page) == []
    shots(page, "diff-review", docs=True)

    # and accepts it with a note
    card.get_by_label("Review note").fill("looks right")
    card.get_by_role("button", name="Accept patches").click()

    # then the run goes on to the end, and the decision is on record
    wait_for(lambda: run_status(live, "rev-1") is RunStatus.SUCCEEDED)
    page.goto("/ui/#/runs/rev-1")
    page.get_by_text("run finished: stream complete").wait_for()
    review = page.locator(f'article.sandbox[data-sandbox="{sandbox_id}"] .decided')
    assert "Accepted by carol" in review.inner_text() and "looks right" in review.inner_text()
    assert page.problems == [], page.problems


def test_without_approval_submit_no_button_and_a_forced_call_is_403(page: Any, live: LiveGateway) -> None:
    # given a run waiting for its approval
    launcher = live.token("alice", "run:read,run:write")
    response = page.request.post(
        "/v1/runs",
        data=json.dumps({"workflow": "t-release", "run_id": "rel-ro"}),
        headers={"Authorization": f"Bearer {launcher}", "Content-Type": "application/json"},
    )
    assert response.status == 201
    wait_for(lambda: run_status(live, "rel-ro") is RunStatus.WAITING)

    # when a reader without approval:submit (nor run:write) opens the inbox
    sign_in(page, live.token("carol", "run:read,approval:read"))
    page.get_by_role("link", name="Approvals").click()
    card = page.locator('article.approval[data-approval="rel-ro/ship"]')
    card.wait_for()

    # then there is no approve button, and the page says which scope it would need
    assert card.get_by_role("button", name="Approve").count() == 0
    assert "Approving or denying needs the scope approval:submit" in card.inner_text()
    page.goto("/ui/#/runs/rel-ro")
    page.get_by_text("Cancel, resume, rerun and time travel needs the scope run:write").wait_for()
    assert page.get_by_role("button", name="Cancel run").count() == 0

    # and forcing the call with the session (and its CSRF token) is refused with 403
    forced = page.evaluate(
        """async () => {
            const s = await (await fetch('/v1/session')).json();
            const r = await fetch('/v1/runs/rel-ro/approvals/ship', {method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
                body: JSON.stringify({approved: true, payload: {channel: 'beta', percent: 1}})});
            return [r.status, await r.json()];
        }"""
    )
    assert forced == [
        403,
        {"error": {"code": "forbidden", "message": "this action needs the scope 'approval:submit'"}},
    ]
    with live.store.read() as conn:
        assert [a.status for a in approvals(conn, run_id="rel-ro")] == [ApprovalStatus.PENDING]
        assert "approval.decided" not in [e.type for e in events_after(conn, "rel-ro")]


def test_an_approver_without_run_read_opens_the_run_from_the_inbox(page: Any, live: LiveGateway) -> None:
    # given a run of carol's approval, waiting, launched by someone else
    launcher = live.token("alice", "run:read,run:write")
    response = page.request.post(
        "/v1/runs",
        data=json.dumps({"workflow": "t-release", "run_id": "rel-ap", "input": {"version": "2.4.0"}}),
        headers={"Authorization": f"Bearer {launcher}", "Content-Type": "application/json"},
    )
    assert response.status == 201
    wait_for(lambda: run_status(live, "rel-ap") is RunStatus.WAITING)

    # when carol, with approval:read and approval:submit only, follows the run's link in the inbox
    sign_in(page, live.token("carol", "approval:read,approval:submit"))
    card = page.locator('article.approval[data-approval="rel-ap/ship"]')
    card.get_by_role("link", name="rel-ap").click()

    # then she sees the run's input, the build output she decides on and the events, not a 403
    page.get_by_role("heading", name="Run rel-ap for your approval").wait_for()
    assert page.url.endswith("#/approvals/runs/rel-ap")
    shown = page.locator("main").inner_text()
    assert '"version": "2.4.0"' in shown
    assert "app-2.4.0.tar.gz" in shown
    assert "approval.requested" in shown
    assert "needs the scope" not in shown
    assert unlabelled(page) == []
    assert page.problems == []


def test_keyboard_only_sign_in_and_navigation(page: Any, live: LiveGateway) -> None:
    token = live.token("carol", "run:read,approval:read,approval:submit")
    page.goto("/ui/")
    # the token field has focus on arrival; Enter submits the form
    page.get_by_label("Bearer token").wait_for()
    assert page.evaluate("() => document.activeElement.name") == "token"
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Runs").wait_for()
    # the view's heading takes focus, so a screen reader announces the page
    page.wait_for_function("() => document.activeElement.tagName === 'H1'")
    assert page.evaluate("() => document.activeElement.textContent") == "Runs"
    # the skip link is the first stop; from it, Tab reaches the main navigation
    first = page.evaluate(
        "() => document.querySelector('a[href], button, input, select, textarea').textContent"
    )
    assert first == "Skip to content"
    page.get_by_role("link", name="Skip to content").focus()
    order = []
    for _ in range(3):
        page.keyboard.press("Tab")
        order.append(page.evaluate("() => document.activeElement.textContent"))
    assert order[:2] == ["Runs", "Approvals"], order
    # Enter on a focused link navigates
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Approval inbox").wait_for()
    assert unlabelled(page) == []
    # focus moves to the new view's heading; the next Tab stop shows a visible focus ring
    page.wait_for_function("() => document.activeElement.textContent === 'Approval inbox'")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Pending"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    assert page.problems == [], page.problems


def test_the_graph_collapses_a_wide_fan_out_and_counts_loop_iterations(page: Any, live: LiveGateway) -> None:
    # given a finished run with a 12-wide fan-out and a 3-iteration loop
    token = live.token("alice", "run:read,run:write")
    launched = page.request.post(
        "/v1/runs",
        data=json.dumps({"workflow": "t-shape", "run_id": "shape-1"}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert launched.status == 201
    wait_for(lambda: run_status(live, "shape-1") is RunStatus.SUCCEEDED, timeout=60)

    # when its page is opened
    sign_in(page, token)
    page.goto("/ui/#/runs/shape-1")
    page.get_by_text("run finished: stream complete").wait_for()
    toggle = page.get_by_role("button", name="fan-out of 12 nodes: 12 succeeded")
    toggle.wait_for()

    # then the fan-out is one collapsed line until expanded, and the loop body counts 3
    assert toggle.get_attribute("aria-expanded") == "false"
    assert not page.locator('.node[data-node="leaf7"]').is_visible()
    toggle.press("Enter")  # from the keyboard
    page.wait_for_function("() => document.querySelector('.layer.wide button').ariaExpanded === 'true'")
    assert page.locator('.node[data-node="leaf7"][data-status="succeeded"]').is_visible()
    assert "\u00d73 iterations" in page.locator('.node[data-node="polish"]').inner_text()
    assert page.problems == [], page.problems


def test_a_parent_run_and_its_child_run_link_to_each_other(page: Any, live: LiveGateway) -> None:
    # given a finished parent run whose node "sub" ran a child run
    token = live.token("alice", "run:read,run:write")
    launched = page.request.post(
        "/v1/runs",
        data=json.dumps({"workflow": "t-family", "run_id": "family-1"}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert launched.status == 201
    wait_for(lambda: run_status(live, "family-1") is RunStatus.SUCCEEDED, timeout=60)
    shown = page.request.get("/v1/runs/family-1", headers={"Authorization": f"Bearer {token}"}).json()
    (kid,) = shown["children"]
    assert kid["workflow"] == "t-kid" and kid["node_id"] == "sub"
    with live.store.read() as conn:
        assert outputs_of(conn, "family-1")[("report", 0)] == {"answer": 42}

    # when the parent's page is opened, its child runs table links the child
    sign_in(page, token)
    page.goto("/ui/#/runs/family-1")
    page.get_by_role("heading", name="Child runs").wait_for()
    page.get_by_role("link", name=kid["run_id"]).click()

    # then the child's page names its parent's node and links back to the parent
    page.wait_for_url(f"**/ui/#/runs/{kid['run_id']}")
    parent = page.locator("dd", has_text="at node")
    parent.wait_for()
    assert parent.locator("code").inner_text() == "sub"
    parent.get_by_role("link", name="family-1").click()
    page.wait_for_url("**/ui/#/runs/family-1")
    page.get_by_role("heading", name="Child runs").wait_for()
    assert page.problems == [], page.problems
