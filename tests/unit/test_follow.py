"""What ``smithers follow`` prints for the events of child workflows."""

from __future__ import annotations

from types import SimpleNamespace

from smithers.cli.follow import describe


def test_follow_shows_the_child_run_a_node_launched() -> None:
    ev = SimpleNamespace(
        type="child.launched",
        node_id="sub",
        iteration=0,
        payload={"child_run_id": "child-1", "workflow": "kid", "epoch": 0},
        created_at=12.5,
    )
    line = describe(ev, 10.0)
    assert line is not None
    assert line.startswith("   2.50s  → sub") and line.endswith("launched child run child-1 (kid)")
