"""Which proposals to compute ahead, and a bounded cache of the results; no threads here.

The caller (a napari worker in the widget) loops::

    for key, ticket in cache.schedule(queue):      # marks them in flight
        start_worker(key, ticket)                  # -> on return: cache.store(key, p, ticket)
    ...
    prediction = cache.take(queue.current.key)     # shown: leaves the cache

Guarantees: a key is never handed out while it is in flight or cached, and never again
after its result was stored unless it is :meth:`invalidate`-d (image or model changed),
evicted unused, or its computation :meth:`fail`-ed. Results of computations started
before :meth:`clear` or :meth:`invalidate` are dropped on :meth:`store` (tickets); any
other result is kept when it arrives, even if the user moved on meanwhile.

:class:`JobBoard` holds the claimed jobs not started yet, nearest first: the worker takes
one at a time, so when the user moves, the plan is redone (:meth:`JobBoard.replace`,
:meth:`PrefetchCache.release` for the jobs no longer wanted) and the image on screen is
computed next, without stopping the computation that is running.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .queue import ImageQueue, QueueItem, Status


def needs_proposal(item: QueueItem) -> bool:
    """Default wanted-predicate: only items nobody has looked at yet."""
    return item.status is Status.PENDING


class PrefetchCache:
    """Plans prefetching for a queue and keeps at most ``capacity`` predictions.

    ``lookahead`` items after the current one (the ones :meth:`ImageQueue.next` reaches)
    are prefetched; the current item itself is planned first when it still needs one.
    In-flight computations count against ``capacity``, so at most ``capacity`` results
    can exist at once. Thread-safe (one re-entrant lock).
    """

    def __init__(self, capacity: int = 4, lookahead: int = 2) -> None:
        if capacity < 1 or lookahead < 0:
            raise ValueError("capacity must be >= 1 and lookahead >= 0")
        self.capacity = capacity
        self.lookahead = lookahead
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, Any] = OrderedDict()  # oldest stored first
        self._in_flight: dict[str, int] = {}  # key -> ticket
        self._done: set[str] = set()  # stored at some point and not invalidated since
        self._failed: set[str] = set()
        self._window: list[str] = []  # keys of the last plan's window, protected from eviction
        self._tickets = itertools.count(1)

    # --- planning -----------------------------------------------------------------------

    def window(self, queue: ImageQueue, index: int | None = None) -> list[str]:
        """Keys of the current item and the ``lookahead`` items :meth:`ImageQueue.next`
        would reach from ``index`` (default: the queue's current index)."""
        if not len(queue):
            return []
        start = queue.index if index is None else index % len(queue)
        indices = [start, *queue.upcoming(self.lookahead, start=start)]
        return [queue[i].key for i in indices]

    def plan(
        self,
        queue: ImageQueue,
        index: int | None = None,
        *,
        wanted: Callable[[QueueItem], bool] = needs_proposal,
    ) -> list[str]:
        """Keys to compute now, nearest first, without marking anything: wanted items of
        the window that are not cached, in flight, done or failed, as many as
        ``capacity`` leaves room for after evicting results outside the window."""
        with self._lock:
            window = self.window(queue, index)
            self._window = window
            candidates = [
                key
                for key in window
                if wanted(queue.item(key))
                and key not in self._cache
                and key not in self._in_flight
                and key not in self._done
                and key not in self._failed
            ]
            self._evict(extra=len(candidates))
            room = self.capacity - len(self._cache) - len(self._in_flight)
            return candidates[: max(room, 0)]

    def schedule(
        self,
        queue: ImageQueue,
        index: int | None = None,
        *,
        wanted: Callable[[QueueItem], bool] = needs_proposal,
    ) -> list[tuple[str, int]]:
        """:meth:`plan` and :meth:`mark_in_flight` in one step: ``(key, ticket)`` pairs."""
        with self._lock:
            return [
                (key, ticket)
                for key in self.plan(queue, index, wanted=wanted)
                if (ticket := self.mark_in_flight(key)) is not None
            ]

    def mark_in_flight(self, key: str) -> int | None:
        """Claim ``key`` for computing; returns its ticket, or None if it is already in
        flight, cached or done (the caller must then not compute it)."""
        with self._lock:
            if key in self._in_flight or key in self._cache or key in self._done:
                return None
            self._failed.discard(key)
            ticket = next(self._tickets)
            self._in_flight[key] = ticket
            return ticket

    # --- results ------------------------------------------------------------------------

    def store(self, key: str, prediction: Any, ticket: int | None = None) -> bool:
        """Keep a finished prediction. Dropped (returns False) when ``key`` is not in
        flight any more (cleared/invalidated meanwhile) or ``ticket`` is stale."""
        with self._lock:
            expected = self._in_flight.get(key)
            if expected is None or (ticket is not None and ticket != expected):
                return False
            del self._in_flight[key]
            self._cache[key] = prediction
            self._done.add(key)
            self._evict()
            return key in self._cache

    def fail(self, key: str, ticket: int | None = None) -> None:
        """The computation of ``key`` failed: not in flight, and not planned again (an
        explicit :meth:`mark_in_flight` may still retry it)."""
        with self._lock:
            expected = self._in_flight.get(key)
            if expected is not None and (ticket is None or ticket == expected):
                del self._in_flight[key]
                self._failed.add(key)

    def release(self, *keys: str) -> None:
        """Give up claims that were never started (re-planned away): not failed, not
        done; they may be planned again."""
        with self._lock:
            for key in keys:
                self._in_flight.pop(key, None)

    def get(self, key: str) -> Any | None:
        with self._lock:
            return self._cache.get(key)

    def take(self, key: str) -> Any | None:
        """Get and remove the prediction of ``key`` (it stays done: not recomputed)."""
        with self._lock:
            return self._cache.pop(key, None)

    def discard(self, *keys: str) -> None:
        """Drop cached predictions; they stay done (not recomputed)."""
        with self._lock:
            for key in keys:
                self._cache.pop(key, None)

    def invalidate(self, *keys: str) -> None:
        """Forget everything about ``keys`` (the image changed): cached results are
        dropped, in-flight results will be refused, and they may be planned again."""
        with self._lock:
            for key in keys:
                self._cache.pop(key, None)
                self._in_flight.pop(key, None)
                self._done.discard(key)
                self._failed.discard(key)

    def clear(self) -> None:
        """Forget everything (the model or task changed)."""
        with self._lock:
            self.invalidate(*self._cache, *self._in_flight, *self._done, *self._failed)

    # --- introspection ------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._cache

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    @property
    def in_flight(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._in_flight)

    @property
    def cached(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._cache)

    def _evict(self, extra: int = 0) -> None:
        """Drop the oldest results outside the window until cached + in flight + extra
        fit ``capacity``; then, if still over, the oldest inside it. An evicted unused
        result is no longer done, so it can be planned again when the user returns."""
        over = len(self._cache) + len(self._in_flight) + extra - self.capacity
        if over <= 0:
            return
        outside = [k for k in self._cache if k not in self._window]
        inside = [k for k in self._cache if k in self._window]
        for key in outside[:over]:
            del self._cache[key]
            self._done.discard(key)
            over -= 1
        if len(self._cache) + len(self._in_flight) > self.capacity:
            for key in inside[: len(self._cache) + len(self._in_flight) - self.capacity]:
                del self._cache[key]
                self._done.discard(key)


class JobBoard:
    """Claimed jobs ``(key, ticket, source)`` waiting for the worker, nearest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[tuple[str, int, Any]] = []
        self._running: str | None = None

    def replace(self, jobs: list[tuple[str, int, Any]]) -> list[tuple[str, int, Any]]:
        """Set the pending jobs; returns the ones dropped (to release their claims)."""
        with self._lock:
            keep = {key for key, _, _ in jobs}
            dropped = [job for job in self._jobs if job[0] not in keep]
            self._jobs = list(jobs)
            return dropped

    def pending(self) -> list[tuple[str, int, Any]]:
        with self._lock:
            return list(self._jobs)

    def take(self) -> tuple[str, int, Any] | None:
        """The next job (called by the worker thread), or None when there is none."""
        with self._lock:
            if not self._jobs:
                self._running = None
                return None
            job = self._jobs.pop(0)
            self._running = job[0]
            return job

    @property
    def running(self) -> str | None:
        """Key of the job the worker took last and has not finished."""
        with self._lock:
            return self._running

    def done(self, key: str) -> None:
        with self._lock:
            if self._running == key:
                self._running = None
