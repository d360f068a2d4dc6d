"""The map half of the scheduler's pure decision: starting a map node, dispatching its
items within its concurrency, and settling it with its items' outputs in index order.

A map node (:mod:`smithers.shared.fanout`) at iteration 0 is the map; item ``i`` is the
node at iteration ``i + 1``, whose attempts :class:`Steps` watches like any task's
(retries, timeouts, lost workers). One decision looks at each item once: its cost is
linear in the map's width. Like the rest of the decision it performs no I/O.
"""

from __future__ import annotations

from typing import Any

from smithers.shared.actions import Key, NodeView
from smithers.shared.decision_steps import Steps
from smithers.shared.errors import InvalidInput
from smithers.shared.fanout import MapSpec, item_iteration, items_of
from smithers.shared.policy import cache_key
from smithers.shared.status import NodeStatus
from smithers.shared.workflow import Node, Workflow

_IN_FLIGHT = (NodeStatus.QUEUED, NodeStatus.RUNNING, NodeStatus.BACKOFF)


def is_map(node: Node, iteration: int) -> bool:
    """True for a map node's own execution: it is driven by the decision, and active
    only through its items (each at another iteration)."""
    return node.map is not None and iteration == 0


class Maps(Steps):
    """What the decision does with map nodes; :class:`smithers.shared.decision._Decider`
    provides the workflow and the output reads."""

    wf: Workflow

    def outputs_of(self, keys: list[Key]) -> dict[Key, Any]:
        raise NotImplementedError

    def upstream(self, node: Node, iteration: int) -> dict[str, Any]:
        raise NotImplementedError

    def start_map(self, node: Node) -> None:
        """The map became ready: read its items, refuse a list wider than ``max_width``
        and record the width."""
        spec = node.map
        assert spec is not None
        try:
            items = items_of(spec, self.upstream(node, 0)[spec.over])
        except InvalidInput as exc:
            self.set_node(
                node, 0, NodeStatus.FAILED, "node.failed", error={"code": "map_error", "message": exc.message}
            )
            return
        width = len(items)
        if width > spec.max_width:
            message = f"{width} items to map over, more than max_width {spec.max_width}"
            error = {"code": "map_too_wide", "message": message, "width": width}
            self.set_node(node, 0, NodeStatus.FAILED, "node.failed", error=error)
            return
        payload = {"width": width, "concurrency": spec.in_flight}
        # visit() drives it on from here, in this decision
        self.set_node(node, 0, NodeStatus.RUNNING, "map.started", payload=payload, current_iteration=width)

    def drive_map(self, node: Node, st: NodeView) -> None:
        """A running map (``st.current_iteration`` is its width): dispatch items in index
        order while fewer than ``concurrency`` are in flight; fail the map once an item
        failed for good and none is in flight; succeed it once every item has."""
        spec = node.map
        assert spec is not None
        width = st.current_iteration
        in_flight, succeeded = 0, 0
        failed: tuple[int, NodeView] | None = None
        fresh: list[int] = []  # items not started, in index order
        for index in range(width):
            item = self.states.get((node.id, item_iteration(index)))
            if item is None:
                fresh.append(index)
            elif item.status is NodeStatus.SUCCEEDED:
                succeeded += 1
            elif item.status in _IN_FLIGHT:
                in_flight += 1
            elif failed is None and item.status.terminal:
                failed = (index, item)
        if failed is not None:
            if in_flight == 0:
                self.fail_map(node, *failed)
            return
        if succeeded == width:
            keys = [(node.id, item_iteration(i)) for i in range(width)]
            found = self.outputs_of(keys)
            self.set_node(
                node,
                0,
                NodeStatus.SUCCEEDED,
                "node.succeeded",
                payload={"width": width},
                output=[found[k] for k in keys],
            )
            return
        room = spec.in_flight - in_flight
        if room <= 0 or not fresh or self.failure is not None:
            return
        self.dispatch_items(node, spec, fresh[:room])

    def dispatch_items(self, node: Node, spec: MapSpec, indexes: list[int]) -> None:
        """Dispatch items; with a cache policy each item's key is its item, the run's
        input and the other upstream outputs (not the whole list: a list that grows
        finds the items it already had)."""
        if node.cache is None:
            for index in indexes:
                self.dispatch(node, item_iteration(index), "start")
            return
        readable = self.upstream(node, 0)
        items = items_of(spec, readable[spec.over])
        others = {name: value for name, value in readable.items() if name != spec.over}
        for index in indexes:
            resolved = {"input": self.run.input, "upstream": others, "item": items[index]}
            key = cache_key(
                node.cache, run_id=self.run.run_id, workflow=self.wf.name, node_id=node.id,
                resolved_input=resolved,
            )  # fmt: skip
            self.dispatch(node, item_iteration(index), "start", cache_key=key)

    def fail_map(self, node: Node, index: int, item: NodeView) -> None:
        """An item failed for good: the map fails naming it (the run's error names the
        map, not the item's iteration)."""
        cause = item.error or {}
        error = {
            "code": "map_item_failed",
            "message": f"item {index} failed: {cause.get('message', item.status.value)}",
            "index": index,
            "item_error": dict(cause),
        }
        if self.failure is not None and self.failure.get("node_id") == node.id:
            self.failure = None  # the map's failure, below, is the run's
        self.set_node(node, 0, NodeStatus.FAILED, "node.failed", error=error)
