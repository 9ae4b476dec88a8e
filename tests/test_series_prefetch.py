"""The series' prefetch plan: which proposals are computed ahead, claimed once, and
kept within the memory bound (no threads of napari; the claims are checked across
threads)."""

from __future__ import annotations

import threading

import numpy as np

from napari_focus.series import ImageQueue, PrefetchCache, Status


def test_prefetch_plans_the_next_two_and_never_twice():
    queue = ImageQueue.from_names([f"k{i}" for i in range(6)])
    cache = PrefetchCache(capacity=4, lookahead=2)
    assert cache.window(queue, 4) == ["k4", "k5"] and queue.index == 0
    assert cache.plan(queue) == ["k0", "k1", "k2"] and cache.in_flight == frozenset()
    jobs = cache.schedule(queue)
    assert [key for key, _ in jobs] == ["k0", "k1", "k2"]  # current first
    assert cache.schedule(queue) == []
    assert cache.mark_in_flight("k1") is None
    tickets = dict(jobs)
    assert cache.store("k1", "p1", tickets["k1"]) and cache.get("k1") == "p1"
    assert cache.schedule(queue) == []  # k1 done, k0/k2 in flight

    queue.mark("k0", Status.PROPOSED)
    assert cache.store("k0", "p0", tickets["k0"])
    assert cache.take("k0") == "p0" and cache.get("k0") is None
    queue.next()
    assert [key for key, _ in cache.schedule(queue)] == ["k3"]  # window k1, k2, k3
    assert cache.in_flight == {"k2", "k3"}
    assert cache.schedule(queue) == []

    queue.mark("k1", Status.PROPOSED)  # shown: no longer wanted even after invalidation
    cache.invalidate("k1")
    assert cache.schedule(queue) == []
    cache.invalidate("k2")  # the image changed while computing: result refused
    assert not cache.store("k2", "old", tickets["k2"])
    assert [key for key, _ in cache.schedule(queue)] == ["k2"]


def test_prefetch_respects_its_memory_bound_and_drops_stale_results():
    queue = ImageQueue.from_names([f"k{i}" for i in range(10)])
    cache = PrefetchCache(capacity=2, lookahead=2)
    jobs = cache.schedule(queue)
    assert [key for key, _ in jobs] == ["k0", "k1"]  # capacity counts in-flight work
    for key, ticket in jobs:
        cache.store(key, key.upper(), ticket)
    assert cache.schedule(queue) == [] and len(cache) == 2

    queue.jump(5)  # the user jumped away: old results make room, newest window first
    jobs = cache.schedule(queue)
    assert [key for key, _ in jobs] == ["k5", "k6"] and len(cache) == 0
    cache.clear()  # e.g. the model changed
    assert not cache.store("k5", "stale", jobs[0][1])
    fresh = cache.schedule(queue)
    assert [key for key, _ in fresh] == ["k5", "k6"]
    assert not cache.store("k5", "stale", jobs[0][1])  # an old ticket is refused
    assert cache.store("k5", "new", fresh[0][1]) and cache.get("k5") == "new"
    cache.fail("k6", fresh[1][1])
    assert cache.in_flight == frozenset()
    assert [key for key, _ in cache.schedule(queue)] == ["k7"]  # k6 failed: not retried
    assert cache.mark_in_flight("k6") is not None  # unless asked explicitly


def test_prefetch_random_walk_never_computes_a_shown_image_twice():
    rng = np.random.default_rng(7)
    queue = ImageQueue.from_names([f"k{i}" for i in range(12)])
    cache = PrefetchCache(capacity=4, lookahead=2)
    running: dict[str, int] = {}
    shown: set[str] = set()
    computed: dict[str, int] = {}
    for _ in range(600):
        action = rng.integers(6)
        if action == 0:
            queue.next()
        elif action == 1:
            queue.previous()
        elif action == 2:
            queue.jump(int(rng.integers(len(queue))))
        elif action == 3 and running:
            key = sorted(running)[int(rng.integers(len(running)))]
            cache.store(key, f"P{key}", running.pop(key))
        elif action == 4:
            key = queue.current.key
            if cache.take(key) is not None:
                shown.add(key)
        for key, ticket in cache.schedule(queue, wanted=lambda item: True):
            assert key not in running and key not in shown and key not in cache
            running[key] = ticket
            computed[key] = computed.get(key, 0) + 1
        assert len(cache) + len(cache.in_flight) <= cache.capacity
        assert set(cache.in_flight) == set(running)
    assert len(shown) > 5 and all(count >= 1 for count in computed.values())


def test_prefetch_claims_are_exclusive_across_threads():
    cache = PrefetchCache()
    barrier = threading.Barrier(8)
    tickets: list[int | None] = []

    def claim() -> None:
        barrier.wait()
        tickets.append(cache.mark_in_flight("same"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(t is not None for t in tickets) == 1
