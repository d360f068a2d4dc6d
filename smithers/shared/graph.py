"""Graph validation: unknown dependencies, cycles, branch paths and loop bodies.

Pure functions over :class:`smithers.shared.workflow.Node`; every error names the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from smithers.shared.errors import InvalidWorkflow
from smithers.shared.workflow import Node, NodeKind


def validate_graph(workflow: str, nodes: Mapping[str, Node]) -> tuple[dict[str, Node], tuple[str, ...]]:
    """Return the nodes (branch and loop links filled in) and a topological order."""
    out = dict(nodes)
    where = f"workflow {workflow!r}"
    if not out:
        raise InvalidWorkflow(f"{where} has no nodes")
    _link_branches(where, out)
    _link_loops(where, out)
    for node in out.values():
        for dep in node.after:
            if dep not in out:
                raise InvalidWorkflow(f"{where}: node {node.id!r} depends on unknown node {dep!r}")
            if dep == node.id:
                raise InvalidWorkflow(f"{where}: node {node.id!r} depends on itself")
        _check_loop_edges(where, out, node)
    return out, _topological(where, out)


def _link_branches(where: str, nodes: dict[str, Node]) -> None:
    for node in list(nodes.values()):
        if node.kind is not NodeKind.BRANCH:
            continue
        seen: set[str] = set()
        for path, targets in node.paths.items():
            for target in targets:
                if target not in nodes:
                    raise InvalidWorkflow(
                        f"{where}: branch {node.id!r} path {path!r} names unknown node {target!r}"
                    )
                if target in seen:
                    raise InvalidWorkflow(f"{where}: branch {node.id!r} lists node {target!r} in two paths")
                seen.add(target)
                child = nodes[target]
                if node.id not in child.after:
                    nodes[target] = replace(child, after=(*child.after, node.id))


def _link_loops(where: str, nodes: dict[str, Node]) -> None:
    owner: dict[str, str] = {}
    for node in list(nodes.values()):
        if node.kind is not NodeKind.LOOP:
            continue
        if not node.body:
            raise InvalidWorkflow(f"{where}: loop {node.id!r} has an empty body")
        for member in node.body:
            if member not in nodes:
                raise InvalidWorkflow(f"{where}: loop {node.id!r} body names unknown node {member!r}")
            if nodes[member].kind is NodeKind.LOOP:
                raise InvalidWorkflow(
                    f"{where}: loop {node.id!r} contains loop {member!r}; loops do not nest"
                )
            if member in owner:
                raise InvalidWorkflow(
                    f"{where}: node {member!r} is in the bodies of {owner[member]!r} and {node.id!r}"
                )
            owner[member] = node.id
            nodes[member] = replace(nodes[member], loop=node.id)


def _check_loop_edges(where: str, nodes: Mapping[str, Node], node: Node) -> None:
    for dep in node.after:
        dep_loop = nodes[dep].loop
        if node.loop is not None and dep_loop != node.loop:
            raise InvalidWorkflow(
                f"{where}: node {node.id!r} in loop {node.loop!r} depends on {dep!r} outside it;"
                f" put {dep!r} in the loop's after instead"
            )
        if node.loop is None and dep_loop is not None:
            raise InvalidWorkflow(
                f"{where}: node {node.id!r} depends on {dep!r} inside loop {dep_loop!r};"
                f" depend on the loop {dep_loop!r} instead"
            )


def _topological(where: str, nodes: Mapping[str, Node]) -> tuple[str, ...]:
    declared = list(nodes)
    indegree = {n: len(set(nodes[n].after)) for n in declared}
    children: dict[str, list[str]] = {n: [] for n in declared}
    for n in declared:
        for dep in set(nodes[n].after):
            children[dep].append(n)
    ready = [n for n in declared if indegree[n] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for child in children[current]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(declared):
        stuck = sorted(n for n in declared if indegree[n] > 0)
        raise InvalidWorkflow(f"{where}: dependency cycle through node {stuck[0]!r} ({', '.join(stuck)})")
    # a loop's body runs inside the loop: order body nodes right after their loop
    top = [n for n in order if nodes[n].loop is None]
    result: list[str] = []
    for n in top:
        result.append(n)
        if nodes[n].kind is NodeKind.LOOP:
            result.extend(m for m in order if nodes[m].loop == n)
    return tuple(result)


def ancestors(nodes: Mapping[str, Node], node_id: str) -> tuple[str, ...]:
    """Every node ``node_id`` depends on, directly or not, sorted by id.

    A loop body node depends on its loop's upstream nodes too (it sees their outputs);
    a node after a loop depends on the loop, whose output holds the last pass's body
    outputs, and not on the body nodes themselves.
    """
    node = nodes[node_id]
    stack = list(node.after)
    if node.loop is not None:
        stack.extend(nodes[node.loop].after)
    seen: set[str] = set()
    while stack:
        dep = stack.pop()
        if dep in seen:
            continue
        seen.add(dep)
        stack.extend(nodes[dep].after)
        loop = nodes[dep].loop
        if loop is not None:
            stack.extend(nodes[loop].after)
    return tuple(sorted(seen))


def output_iteration(nodes: Mapping[str, Node], node_id: str, dep: str, iteration: int) -> int:
    """The iteration at which ``node_id`` (running at ``iteration``) reads ``dep``'s output:
    its own for a body node of the same loop, else 0 (loops do not nest)."""
    loop = nodes[dep].loop
    return iteration if loop is not None and loop == nodes[node_id].loop else 0
