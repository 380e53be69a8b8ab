"""Exponential restart/reconnect backoff with jitter that starts over after a quiet spell."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays growing by ``factor`` up to ``maximum``, reset after ``reset_after`` quiet seconds.

    Time is passed in (``now``) so the policy stays pure and testable without a clock.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.1,
        reset_after: float = 60.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.reset_after = reset_after
        self._rand = rand
        self._attempts = 0
        self._last: float | None = None

    @property
    def attempts(self) -> int:
        return self._attempts

    def next_delay(self, now: float) -> float:
        """The delay before the next try, counting this call as one more failure."""
        if self._last is not None and now - self._last > self.reset_after:
            self._attempts = 0
        self._last = now
        base = min(self.maximum, self.initial * self.factor**self._attempts)
        self._attempts += 1
        # spread retries of many clients; never below initial, never above maximum
        spread = base * self.jitter * (2 * self._rand() - 1)
        return max(self.initial, min(self.maximum, base + spread))

    def reset(self) -> None:
        self._attempts = 0
        self._last = None
