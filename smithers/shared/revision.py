"""Workflow revisions as plain data: a revision's graph, a function-free copy of it, and
whether a run can move from one revision to another.

A revision is the module revision the registry computes (the SHA-256 of the module's
source, :func:`smithers.shared.registry.module_revision`). Its graph is stored the first
time a process holds it or a run launches with it (:mod:`smithers.shared.store.revisions`)
so that an old run's graph can be shown, and time travel can work out what a rewind
reopens, after the module is gone. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from smithers.shared.workflow import Node, NodeKind, Workflow

MIN_PREFIX = 8  # a revision may be named by a prefix of at least this many hex digits


def graph_of(wf: Workflow) -> dict[str, Any]:
    """The workflow's graph as JSON: each node's id, kind and edges, and what a branch or a
    loop needs to be shown (path names, body, condition's name, ``max_iterations``)."""
    nodes = []
    for node_id in wf.order:
        node = wf.nodes[node_id]
        item: dict[str, Any] = {"id": node.id, "kind": node.kind.value, "after": list(node.after)}
        if node.loop is not None:
            item["loop"] = node.loop
        if node.kind is NodeKind.BRANCH:
            item["paths"] = {name: list(targets) for name, targets in node.paths.items()}
            item["condition"] = _name(node.choose)
        if node.kind is NodeKind.LOOP:
            item["body"] = list(node.body)
            item["condition"] = _name(node.until)
            item["max_iterations"] = node.max_iterations
        if node.kind is NodeKind.TIMER:
            item["seconds"] = node.seconds
        if node.kind is NodeKind.SIGNAL:
            item["signal"] = node.signal
            item["schema"] = dict(node.signal_schema) if node.signal_schema is not None else None
            item["timeout_s"] = node.signal_timeout_s
        if node.kind is NodeKind.CHILD:
            item["workflow"] = node.child_workflow
        if node.kind in (NodeKind.TASK, NodeKind.SANDBOX):
            item["function"] = _name(node.fn) if node.fn is not None else None
        nodes.append(item)
    return {"workflow": wf.name, "version": wf.version, "nodes": nodes}


def _name(fn: object) -> str | None:
    return None if fn is None else str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "?"))


def skeleton(graph: Mapping[str, Any]) -> Workflow:
    """A :class:`Workflow` with the stored graph's nodes and edges but no functions: enough
    to walk the graph (what a rewind reopens, the order to show nodes in), never to run it."""
    wf = Workflow(str(graph["workflow"]), str(graph.get("version", "1")))
    order = []
    for item in graph["nodes"]:
        node = Node(
            id=item["id"],
            kind=NodeKind(item["kind"]),
            after=tuple(item.get("after", ())),
            loop=item.get("loop"),
            paths={k: tuple(v) for k, v in (item.get("paths") or {}).items()},
            body=tuple(item.get("body", ())),
            max_iterations=int(item.get("max_iterations", 1)),
            seconds=float(item.get("seconds", 0.0)),
            signal=item.get("signal"),
            signal_schema=item.get("schema"),
            signal_timeout_s=item.get("timeout_s"),
            child_workflow=item.get("workflow"),
        )
        wf.nodes[node.id] = node
        order.append(node.id)
    wf.order = tuple(order)
    return wf


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def conflicts(ran: Iterable[tuple[str, str]], target: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Why a run whose nodes ``ran`` (``(node id, kind)`` pairs) cannot move to the
    ``target`` graph: every node that ran must be in it with the same kind. Empty when
    the move is compatible."""
    kinds = {item["id"]: item["kind"] for item in target["nodes"]}
    found: list[dict[str, Any]] = []
    for node_id, kind in sorted(set(ran)):
        if node_id not in kinds:
            found.append({"node_id": node_id, "kind": kind, "problem": "missing in the target revision"})
        elif kinds[node_id] != kind:
            found.append(
                {
                    "node_id": node_id,
                    "kind": kind,
                    "problem": f"is {_article(kinds[node_id])} in the target revision",
                }
            )
    return found
