"""How many measured rounds one measurement may take, and when the gates are looked at.

The harness (``harness.adaptive_rounds``) spends it; kept apart so that its arithmetic is
read on its own.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class RoundBudget:
    """How many measured rounds one measurement may take.

    ``first``: rounds before the first look; ``max_rounds``/``max_seconds``: the budget
    (seconds of measured requests of every engine in the measurement together);
    ``retry``: when a gate is still undecided at the budget, spend it once more.
    """

    first: int = 5
    max_rounds: int = 30
    max_seconds: float = 120.0
    retry: bool = False
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.first < 1 or self.max_rounds < self.first:
            raise ValueError(f"need 1 <= first <= max_rounds, got {self.first}, "
                             f"{self.max_rounds}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds > 0):
            raise ValueError(f"max_seconds must be a finite number > 0, got {self.max_seconds}")

    def next_target(self, done: int, elapsed_s: float, scale: int) -> int:
        """Rounds to reach at the next look (``done`` when the budget is spent)."""
        limit = self.max_rounds * scale
        if elapsed_s >= self.max_seconds * scale:
            return done
        per_round = elapsed_s / max(done, 1)
        fits = int((self.max_seconds * scale - elapsed_s) / per_round) if per_round > 0 \
            else limit
        # Looks at 5, 10, 15, 22, 30 rounds from the default 5: every 5 rounds at first (most
        # gates decide there on a quiet host), then by half, so a long run looks few times.
        return min(limit, done + max(5, done // 2), done + fits)
