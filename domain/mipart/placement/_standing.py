"""The answer to one question over every node, kept up to date node by node.

kube-scheduler asks filter and prioritize the same question again and again: the pods of one
Deployment share a request shape, and between two of its pods only the nodes that a bind or a
finished pod touched have changed. So the view keeps, per question (request shape, and policy
for a placement), the answer for every node it has judged (the value if the node takes the
request, else why not) and judges again only the nodes marked stale since. What is left per
call is set and dict work that Python does in C: at 5000 nodes the per-node loop this replaced
was most of filter's and prioritize's time (hack/bench/extender_latency.py).

Internal to the placement engine (cluster_view).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from mipart.placement import _reasons as reasons

V = TypeVar("V")

# name -> what the node offers if it takes the request, else why not; called on known nodes.
Judge = Callable[[str], V | str]


@dataclass(frozen=True, slots=True)
class Answer(Generic[V]):
    """For the nodes asked: what each that takes the request offers, and why each other does
    not, apart by whether evicting pods could change it (reasons.UNRESOLVABLE)."""

    fits: dict[str, V]
    rejected: dict[str, str]
    unresolvable: dict[str, str]


class StandingAnswer(Generic[V]):
    """One question's answer on every node judged so far; a changed node is judged again."""

    __slots__ = ("_fits", "_rejected", "_stale", "_unresolvable")

    def __init__(self, nodes: Iterable[str]) -> None:
        self._fits: dict[str, V] = {}
        self._rejected: dict[str, str] = {}
        self._unresolvable: dict[str, str] = {}
        # Nodes not judged since they last changed: every node, at first. A node is judged
        # when it is first asked about, so a question asked of one node (bind) costs one.
        self._stale: set[str] = set(nodes)

    def mark_stale(self, node: str) -> None:
        """The node changed, appeared or went: judge it again before answering for it."""
        self._stale.add(node)
        # Out of the answer at once, so the nodes that fit are only ever fresh ones: then a
        # question asked of exactly them (prioritize after filter) is one dict copy.
        self._fits.pop(node, None)
        self._rejected.pop(node, None)
        self._unresolvable.pop(node, None)

    def answer(
        self, judge: Judge[V], known: Mapping[str, object], asked: Collection[str] | None
    ) -> Answer[V]:
        """The answer for the nodes ``asked`` (None: every known node); a name the view does
        not know is unresolvable. ``known`` is the view's nodes, by name."""
        names = None if asked is None else _as_set(asked)
        if names is None or (len(names) == len(known) and names.issuperset(known)):
            # The usual filter call: kube-scheduler sends every node its own filters passed.
            self._judge(self._stale, judge, known)
            self._stale.clear()
            return Answer(dict(self._fits), dict(self._rejected), dict(self._unresolvable))
        due = self._stale & names
        self._judge(due, judge, known)
        self._stale -= due
        if len(names) == len(self._fits) and names.issuperset(self._fits):
            # The usual prioritize call: the nodes filter kept, and they all still fit.
            return Answer(dict(self._fits), {}, {})
        unresolvable = _restrict(self._unresolvable, names)
        unresolvable.update(dict.fromkeys(names - known.keys(), reasons.UNKNOWN_NODE))
        return Answer(_restrict(self._fits, names), _restrict(self._rejected, names), unresolvable)

    def _judge(self, names: Iterable[str], judge: Judge[V], known: Mapping[str, object]) -> None:
        for name in names:
            if name not in known:
                continue  # the node went
            outcome = judge(name)
            if not isinstance(outcome, str):
                self._fits[name] = outcome
            elif outcome in reasons.UNRESOLVABLE:
                self._unresolvable[name] = outcome
            else:
                self._rejected[name] = outcome


def _as_set(names: Collection[str]) -> set[str] | frozenset[str]:
    return names if isinstance(names, set | frozenset) else set(names)


def _restrict(answers: dict[str, V], names: set[str] | frozenset[str]) -> dict[str, V]:
    return {name: answers[name] for name in answers.keys() & names}
