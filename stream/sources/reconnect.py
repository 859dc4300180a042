"""When and how often a live source reconnects: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ReconnectPolicy:
    """When and how often a live source reconnects.

    Attributes
    ----------
    initial_backoff_s : float
        Cap of the first wait, in seconds; it doubles at each failed attempt.
    max_backoff_s : float
        Largest cap of a wait, in seconds.
    max_reconnects : int or None
        Failed attempts in a row before the source fails; None for ever.
    reconnect_at_start : bool
        Also retry when the first connection fails (else a source that never
        played fails at once).
    healthy_after_s : float
        Seconds of audio after which a connection counts as good, and the
        backoff starts again from ``initial_backoff_s``.

    Notes
    -----
    The wait before attempt ``k`` (1-based) is drawn uniformly from
    ``[0, min(max_backoff_s, initial_backoff_s * 2 ** (k - 1))]`` ("full
    jitter", Brooker 2015): many clients of a restarted server do not all come
    back at the same instant, and the first retry is usually immediate.
    """

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_reconnects: int | None = None
    reconnect_at_start: bool = False
    healthy_after_s: float = 10.0

    def __post_init__(self) -> None:
        if self.initial_backoff_s <= 0 or self.max_backoff_s <= 0:
            raise ValueError("backoff: expected positive numbers of seconds")
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError(f"max_reconnects: expected >= 0 or None, got {self.max_reconnects}")

    def backoff_cap_s(self, attempt: int) -> float:
        """Upper bound of the wait before attempt ``attempt`` (1-based), in seconds."""
        exponent = min(max(int(attempt) - 1, 0), 62)
        return min(self.max_backoff_s, self.initial_backoff_s * 2.0**exponent)

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt ``attempt``: uniform in ``[0, backoff_cap_s(attempt)]``."""
        return (rng or random).uniform(0.0, self.backoff_cap_s(attempt))
