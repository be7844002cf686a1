"""Automatic concurrency: start from the model config's hint, then double the requests in
flight while throughput still improves by a margin, and settle on the best level.

Doubling is enough because throughput over concurrency rises then flattens (Little's law):
once the server is saturated, more requests in flight only add latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
# A level must beat the best one by this much to count as an improvement (noise guard).
MARGIN = 1.10
WINDOW_SECONDS = 0.5


class ConcurrencyTuner:
    """Decides the in-flight limit from measured throughput (pure: feed it completions)."""

    def __init__(
        self,
        start: int,
        maximum: int,
        *,
        adaptive: bool,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(1, min(start, maximum))
        self.maximum = maximum
        self.settled = not adaptive or self.limit >= maximum
        self._window, self._clock = window, clock
        self._best_rate = 0.0
        self._best_limit = self.limit
        self._start = clock()
        self._items = self._requests = 0

    def completed(self, items: int) -> None:
        """One request finished with `items` items."""
        if self.settled:
            return
        self._items += items
        self._requests += 1
        elapsed = self._clock() - self._start
        if elapsed < self._window or self._requests < 2 * self.limit:
            return
        rate = self._items / elapsed
        if rate > self._best_rate * MARGIN:
            self._best_rate, self._best_limit = rate, self.limit
            if self.limit < self.maximum:
                self.limit = min(self.maximum, self.limit * 2)
            else:
                self.settled = True
        else:
            self.limit, self.settled = self._best_limit, True
        if self.settled:
            log.info("concurrency settled at %d (%.0f items/s)", self.limit, self._best_rate)
        self._start, self._items, self._requests = self._clock(), 0, 0


class Limiter:
    """A semaphore whose size follows the tuner."""

    def __init__(self, tuner: ConcurrencyTuner) -> None:
        self.tuner = tuner
        self.in_flight = 0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.tuner.limit)
            self.in_flight += 1

    async def release(self, items: int) -> None:
        async with self._changed:
            self.in_flight -= 1
            self.tuner.completed(items)
            self._changed.notify_all()
