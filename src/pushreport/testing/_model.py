"""Storage against a plain dict model: a hypothesis state machine, random operations, and
the differential check that runs the same operations against several backends."""

from __future__ import annotations

import functools
import itertools
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs
import pluggy
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pushreport_core import (
    ConfigurationError,
    Registration,
    Report,
    StorageUnavailable,
    merge,
    without_token,
)
from pushreport_core.testing import strategies as prs

from .._plugins import collect_storage_factories, make_plugin_manager
from ..storage import Capabilities, ForgetToken, Storage, StorageContext, StorageFactory

__all__ = [
    "StorageMachine",
    "Operation",
    "storage_operations",
    "run_operations",
    "assert_backends_agree",
    "installed_backends",
    "StorageOpener",
    "T0",
]

#: A zero-argument factory: each call opens a new handle on the same store.
StorageOpener = Callable[[], Storage]

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)

# Every machine run gets its own selectors and usernames, so that runs sharing one store
# (a fixture's database lives for the whole test, a run is one hypothesis example) never
# see each other's registrations.
_RUNS = itertools.count(1)
_SELECTORS = 4


def _open(factory: StorageFactory, options: Mapping[str, Any], context: StorageContext) -> Storage:
    return factory(dict(options), context)


def _namespace() -> int:
    return (os.getpid() << 20) ^ next(_RUNS)


def _selectors(ns: int) -> list[str]:
    return [f"{i:x}" * 40 + f":{ns:x}" for i in range(1, _SELECTORS + 1)]


def _usernames(ns: int) -> list[str | None]:
    # Awkward on purpose: a backend must compare usernames exactly.
    return [None, f"alice-{ns}", f"Bob+é/{ns} x&y", f"alice-{ns} "]


_REPORT = prs.reports(selector="0" * 40 + ":0", username=st.none())
#: Tokens the machine's reports share now and then, so that forget_token has work.
_SHARED_TOKENS = ("c2hhcmVkLW9uZQ==", "c2hhcmVkLXR3bw==")


class StorageMachine(RuleBasedStateMachine):
    """A storage backend against a dict folded with :func:`pushreport_core.merge`.

    Rules upsert (times in and out of order), get, find by username, iterate, remove,
    forget a stored token, prune (and its dry run) and reopen; after every step each
    selector reads back exactly as the model says.
    Subclass and set :attr:`make_storage`, or build one with :meth:`for_factory`.
    """

    make_storage: StorageOpener
    reopen_supported: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.ns = _namespace()
        self.selectors = _selectors(self.ns)
        self.usernames = _usernames(self.ns)
        self.model: dict[str, Registration] = {}
        self.storage = type(self).make_storage()
        #: The handle's forget_token, when the backend declares it.
        self.forget = Capabilities.of(self.storage).forget_token

    @classmethod
    def for_factory(
        cls, make_storage: StorageOpener, *, reopen: bool = True
    ) -> type[StorageMachine]:
        """A machine class for *make_storage* (``reopen=False``: never reopen)."""
        return type(
            "StorageMachine",
            (cls,),
            {"make_storage": staticmethod(make_storage), "reopen_supported": reopen},
        )

    def _mine(self, registrations: Iterable[Registration]) -> list[Registration]:
        return [r for r in registrations if r.selector in self.selectors]

    @rule(
        i=st.integers(0, _SELECTORS - 1),
        u=st.integers(0, 3),
        report=_REPORT,
        seconds=st.integers(-(10**6), 10**7),
        micros=st.integers(0, 999_999),
        shared=st.sampled_from((None,) * 6 + ("calls", "msgs")),
        token=st.sampled_from(_SHARED_TOKENS),
    )
    def upsert(
        self,
        i: int,
        u: int,
        report: Report,
        seconds: int,
        micros: int,
        shared: str | None = None,
        token: str = _SHARED_TOKENS[0],
    ) -> None:
        selector = self.selectors[i]
        report = attrs.evolve(report, selector=selector, username=self.usernames[u])
        if shared is not None and getattr(report, f"token_{shared}") is not None:
            # One phone's token under several selectors: what forget_token is for.
            changes: dict[str, Any] = {f"token_{shared}": token}
            report = attrs.evolve(report, **changes)
        self._upsert(report, T0 + timedelta(seconds=seconds, microseconds=micros))

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), seconds=st.integers(-(10**6), 10**7))
    def report_again_without_tokens(self, data: st.DataObject, seconds: int) -> None:
        """The iOS delay at its most extreme, on a stored selector: nothing is erased."""
        selector = data.draw(st.sampled_from(sorted(self.model)), label="selector")
        self._upsert(Report(selector=selector), T0 + timedelta(seconds=seconds))

    def _upsert(self, report: Report, now: datetime) -> None:
        selector = report.selector
        expected = merge(self.model.get(selector), report, now=now)
        returned = self.storage.upsert(report, now=now)
        assert returned == expected, f"upsert returned {returned!r}, expected {expected!r}"
        self.model[selector] = expected

    @rule(i=st.integers(0, _SELECTORS - 1))
    def remove(self, i: int) -> None:
        selector = self.selectors[i]
        removed = self.storage.remove(selector)
        assert removed == (selector in self.model), f"remove({selector!r}) gave {removed}"
        self.model.pop(selector, None)

    def _tokens(self) -> list[str]:
        return sorted(
            {
                t
                for r in self.model.values()
                for t in (r.token_calls, r.token_msgs)
                if t is not None
            }
        )

    # One rule for both, so that they take no more of a run's steps than one rule does:
    # upserts must still meet each other for the merge rule to be tested.
    @rule(data=st.data(), prune=st.sampled_from((False, False, True)))
    def forget_token_or_prune(self, data: st.DataObject, prune: bool) -> None:
        if prune:
            # Cut-offs among the earliest upsert times: a prune takes a few
            # registrations, not all of them, so the other rules find work left.
            self._prune(
                data.draw(st.integers(-(10**6), 0), label="seconds"),
                data.draw(st.booleans(), label="dry_run"),
            )
        elif self._tokens() and self.forget is not None:
            self._forget_token(
                data,
                data.draw(st.sampled_from(("all", "one", "keep")), label="scope"),
                data.draw(st.integers(0, _SELECTORS - 1), label="i"),
            )

    def _forget_token(self, data: st.DataObject, scope: str, i: int) -> None:
        tokens = self._tokens()
        shared = [t for t in _SHARED_TOKENS if t in tokens]
        token = data.draw(st.sampled_from(shared or tokens), label="token")
        named = self.selectors[i]
        if scope == "keep":  # mostly a holder: keeping it must keep it there
            holders = [
                s
                for s in sorted(self.model)
                if token in (self.model[s].token_calls, self.model[s].token_msgs)
            ]
            named = data.draw(st.sampled_from(holders + [named]), label="keep")
        selector = named if scope == "one" else None
        keep = named if scope == "keep" else None
        changed = [
            s
            for s in self._forgetting()(token, selector=selector, keep=keep)
            if s in self.selectors or s == selector
        ]
        expected = []
        for s in sorted(self.model):
            if s == keep or (selector is not None and s != selector):
                continue
            forgotten = without_token(self.model[s], token)
            if forgotten != self.model[s]:
                self.model[s] = forgotten
                expected.append(s)
        assert changed == expected, (
            f"forget_token({token!r}, selector={selector!r}, "
            f"keep={keep!r}) gave {changed!r}, expected {expected!r}"
        )

    def _forgetting(self) -> ForgetToken:
        assert self.forget is not None
        return self.forget

    def _prune(self, seconds: int, dry_run: bool) -> None:
        before = T0 + timedelta(seconds=seconds)
        gone = self._mine(self.storage.prune(before, dry_run=dry_run))
        expected = [self.model[s] for s in sorted(self.model) if self.model[s].last_seen < before]
        assert gone == expected, f"prune({before}, dry_run={dry_run}) gave {gone!r}"
        if not dry_run:
            for registration in expected:
                del self.model[registration.selector]

    @rule(u=st.integers(1, 3))
    def find(self, u: int) -> None:
        username = self.usernames[u]
        found = self._mine(self.storage.find(username=username))
        expected = [
            self.model[s] for s in sorted(self.model) if self.model[s].username == username
        ]
        assert found == expected, f"find(username={username!r}) gave {found!r}"

    @rule()
    def iterate(self) -> None:
        everything = list(self.storage)
        selectors = [r.selector for r in everything]
        assert selectors == sorted(selectors), "iteration is not in selector order"
        assert self._mine(everything) == [self.model[s] for s in sorted(self.model)]

    @precondition(lambda self: self.reopen_supported)
    @rule()
    def reopen(self) -> None:
        self.storage.close()
        self.storage = type(self).make_storage()
        self.forget = Capabilities.of(self.storage).forget_token

    @invariant()
    def every_selector_reads_back_as_the_model_says(self) -> None:
        for selector in self.selectors:
            stored = self.storage.get(selector)
            assert stored == self.model.get(selector), (
                f"get({selector!r}) gave {stored!r}, expected {self.model.get(selector)!r}"
            )

    def teardown(self) -> None:
        try:
            for selector in self.selectors:
                self.storage.remove(selector)
        finally:
            self.storage.close()


# -- the differential check --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Operation:
    """One storage operation: ``upsert``, ``get``, ``find``, ``iterate`` or ``remove``."""

    kind: str
    selector: str = ""
    report: Report | None = None
    now: datetime | None = None
    username: str | None = None


_DIFF_SELECTORS = _selectors(0)
_DIFF_USERNAMES = _usernames(0)


@st.composite
def _operation(draw: Any) -> Operation:
    kind = draw(
        st.sampled_from(("upsert", "upsert", "upsert", "get", "find", "iterate", "remove"))
    )
    selector = draw(st.sampled_from(_DIFF_SELECTORS))
    if kind == "upsert":
        report = attrs.evolve(
            draw(_REPORT), selector=selector, username=draw(st.sampled_from(_DIFF_USERNAMES))
        )
        now = T0 + timedelta(
            seconds=draw(st.integers(-(10**6), 10**7)), microseconds=draw(st.integers(0, 999_999))
        )
        return Operation(kind=kind, selector=selector, report=report, now=now)
    if kind == "find":
        return Operation(kind=kind, username=draw(st.sampled_from(_DIFF_USERNAMES[1:])))
    return Operation(kind=kind, selector=selector)


def storage_operations(max_size: int = 30) -> st.SearchStrategy[list[Operation]]:
    """Random sequences of storage operations on a few selectors and usernames."""
    return st.lists(_operation(), min_size=1, max_size=max_size)


def run_operations(storage: Storage, operations: Sequence[Operation]) -> list[Any]:
    """Run *operations* on *storage*; the result of each, comparable across backends."""
    results: list[Any] = []
    for op in operations:
        if op.kind == "upsert":
            assert op.report is not None and op.now is not None
            results.append(storage.upsert(op.report, now=op.now))
        elif op.kind == "get":
            results.append(storage.get(op.selector))
        elif op.kind == "find":
            results.append(storage.find(username=op.username))
        elif op.kind == "iterate":
            results.append(list(storage))
        elif op.kind == "remove":
            results.append(storage.remove(op.selector))
        else:
            raise ValueError(f"unknown operation {op.kind!r}")
    results.append(("final", list(storage)))
    return results


def assert_backends_agree(
    backends: Mapping[str, StorageOpener], operations: Sequence[Operation]
) -> None:
    """Run *operations* on a fresh store of every backend; every result must agree.

    Raises ``AssertionError`` naming the first operation on which two backends differ.
    """
    if len(backends) < 2:
        raise ValueError("a differential check needs at least two backends")
    outcomes: dict[str, list[Any]] = {}
    for name, make in backends.items():
        storage = make()
        try:
            outcomes[name] = run_operations(storage, operations)
        finally:
            storage.close()
    (first, reference), *others = outcomes.items()
    for name, results in others:
        for index, (a, b) in enumerate(zip(reference, results)):
            if a != b:
                what = operations[index] if index < len(operations) else "the final contents"
                raise AssertionError(
                    f"backends {first!r} and {name!r} disagree on "
                    f"operation {index} ({what!r}): {a!r} != {b!r}"
                )


def installed_backends(
    base_dir: Path,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, StorageOpener]:
    """A factory for every installed storage backend, each storing under *base_dir*.

    Each backend gets its ``options`` table (default: none, so its defaults, relative
    to *base_dir*). A backend that refuses its options (it needs a server address, say)
    or cannot be reached is left out; with *skipped*, its name and the reason are recorded there.
    """
    pm = plugin_manager or make_plugin_manager()
    context = StorageContext(base_dir=base_dir)
    factories: dict[str, StorageOpener] = {}
    for name, factory in sorted(collect_storage_factories(pm).items()):
        own = dict((options or {}).get(name, {}))
        try:
            factory(dict(own), context).close()
        except (ConfigurationError, StorageUnavailable) as e:
            if skipped is not None:
                skipped[name] = str(e)
            continue
        factories[name] = functools.partial(_open, factory, own, context)
    return factories
