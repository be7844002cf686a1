"""Automatic concurrency: doubles while throughput improves, settles on the best level."""

from __future__ import annotations

from batchpredict.worker.tuning import ConcurrencyTuner


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_window(tuner: ConcurrencyTuner, clock: Clock, items_per_second: float) -> None:
    """Feed one measurement window at the given throughput."""
    requests = 2 * tuner.limit
    for _ in range(requests):
        clock.now += 1.0 / requests
        tuner.completed(int(items_per_second / requests))


def test_doubles_while_throughput_improves_then_settles_on_the_best() -> None:
    clock = Clock()
    tuner = ConcurrencyTuner(4, 64, adaptive=True, clock=clock)
    # The server saturates at 8 in flight: 16 is no better, so 8 is kept.
    for rate in (1000, 1800, 1850):
        run_window(tuner, clock, rate)
    assert tuner.settled
    assert tuner.limit == 8


def test_stops_at_the_maximum() -> None:
    clock = Clock()
    tuner = ConcurrencyTuner(16, 32, adaptive=True, clock=clock)
    for rate in (1000, 2000, 4000):
        run_window(tuner, clock, rate)
    assert (tuner.limit, tuner.settled) == (32, True)


def test_a_concurrency_the_user_set_is_kept() -> None:
    clock = Clock()
    tuner = ConcurrencyTuner(3, 64, adaptive=False, clock=clock)
    run_window(tuner, clock, 1000)
    run_window(tuner, clock, 5000)
    assert (tuner.limit, tuner.settled) == (3, True)
