"""The manager's nodes: fixed slices of M nodes, spare nodes, and bad-node exclusion.

The allocation's node list is cut once into contiguous slices of
`nodes_per_trial` nodes; what is left over are spares. A trial always runs on
one whole slice, so trials never share a node and a slice is reused as soon as
its trial ends. When a node misbehaves the manager excludes it: its slice takes
the first spare (keeping its index) or, with no spare left, is retired and its
healthy nodes become spares for the other slices. Every change is an `Event`;
the manager persists them, and replaying the same `exclude` calls on a fresh
`Allocation` of the same nodes rebuilds the same state.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

from trainer.contract.errors import UserError

from orchestrator import hostlist
from orchestrator.sites import SiteConfig


@dataclass(frozen=True)
class Slice:
    index: int
    nodes: tuple[str, ...]

    @property
    def hostlist(self) -> str:
        return hostlist.compress(self.nodes)


@dataclass(frozen=True)
class Event:
    """One change of the allocation.

    kind: "slice" (a slice as laid out at the start), "spares" (the spare pool at the start),
    "exclude" (`node` left the pool), "replace" (slice took spare `node`), "retire" (slice
    had no spare; its healthy nodes, in `nodes`, became spares). `nodes` is a hostlist.
    """

    kind: Literal["slice", "spares", "exclude", "replace", "retire"]
    slice: int | None = None
    node: str | None = None
    nodes: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Allocation:
    def __init__(self, nodes: list[str], nodes_per_trial: int):
        if nodes_per_trial < 1:
            raise UserError(f"nodes per trial must be at least 1, got {nodes_per_trial}")
        if not nodes:
            raise UserError("the allocation has no nodes")
        if nodes_per_trial > len(nodes):
            raise UserError(f"nodes per trial ({nodes_per_trial}) is more than the {len(nodes)} nodes available")
        seen: set[str] = set()
        for node in nodes:
            if node in seen:
                raise UserError(f"node {node} appears twice in the node list")
            seen.add(node)
        count = len(nodes) // nodes_per_trial
        self.nodes_per_trial = nodes_per_trial
        self._slices: dict[int, Slice] = {
            i: Slice(i, tuple(nodes[i * nodes_per_trial:(i + 1) * nodes_per_trial])) for i in range(count)}
        self._spares: list[str] = list(nodes[count * nodes_per_trial:])
        self._excluded: dict[str, str] = {}
        self._retired: list[int] = []
        self.events: list[Event] = [Event("slice", i, nodes=s.hostlist) for i, s in self._slices.items()]
        if self._spares:
            self.events.append(Event("spares", nodes=hostlist.compress(self._spares)))

    @property
    def slices(self) -> list[Slice]:
        """The slices in service, by index."""
        return [self._slices[i] for i in sorted(self._slices)]

    @property
    def spares(self) -> list[str]:
        return list(self._spares)

    @property
    def excluded(self) -> dict[str, str]:
        """Excluded nodes and why."""
        return dict(self._excluded)

    @property
    def retired(self) -> list[int]:
        return list(self._retired)

    def slice(self, index: int) -> Slice:
        return self._slices[index]

    def slice_of(self, node: str) -> Slice | None:
        for item in self._slices.values():
            if node in item.nodes:
                return item
        return None

    def exclude(self, node: str, reason: str) -> list[Event]:
        """Take `node` out of service; returns (and records) the events it caused.

        Call it while the node's slice runs no trial (after that trial ended): the
        slice's membership changes at once. Excluding a node twice does nothing.
        """
        if node in self._excluded:
            return []
        owner = self.slice_of(node)
        if owner is None and node not in self._spares:
            raise ValueError(f"node {node} is not part of this allocation")
        self._excluded[node] = reason
        new = [Event("exclude", owner.index if owner else None, node=node, reason=reason)]
        if owner is None:
            self._spares.remove(node)
        elif self._spares:
            spare = self._spares.pop(0)
            nodes = tuple(spare if n == node else n for n in owner.nodes)
            self._slices[owner.index] = Slice(owner.index, nodes)
            new.append(Event("replace", owner.index, node=spare, nodes=hostlist.compress(nodes),
                             reason=f"in place of {node}"))
        else:
            healthy = [n for n in owner.nodes if n != node]
            del self._slices[owner.index]
            self._retired.append(owner.index)
            self._spares.extend(healthy)
            new.append(Event("retire", owner.index, nodes=hostlist.compress(healthy) if healthy else None,
                             reason=f"no spare node to replace {node}"))
        self.events.extend(new)
        return new


def discover_nodes(site: SiteConfig, nodes: int | None,
                   environ: Mapping[str, str] | None = None) -> list[str]:
    """The node names the manager may use.

    Inside a Slurm allocation: the allocation's nodes (the first `nodes` of them
    when a count is given). Anywhere else (the local site, a dry run on a
    laptop, tests that run the manager outside an allocation): the first
    `nodes` names of the site's node pattern.
    """
    environ = os.environ if environ is None else environ
    if nodes is not None and nodes < 1:
        raise UserError(f"--nodes must be at least 1, got {nodes}")
    job_nodes = environ.get("SLURM_JOB_NODELIST") if site.scheduler == "slurm" else None
    if job_nodes:
        names = hostlist.expand(job_nodes)
        if nodes is not None and nodes > len(names):
            raise UserError(f"--nodes {nodes} is more than the {len(names)} nodes of Slurm job "
                            f"{environ.get('SLURM_JOB_ID', '?')} ({job_nodes})")
        return names[:nodes] if nodes is not None else names
    if nodes is None:
        raise UserError(f"outside a Slurm allocation the number of nodes must be given (--nodes) for site {site.name}")
    names = hostlist.expand(site.node_pattern)
    if nodes > len(names):
        raise UserError(f"--nodes {nodes} is more than the {len(names)} nodes of {site.name}'s "
                        f"node_pattern {site.node_pattern} ({site.origin})")
    return names[:nodes]
