"""The national five-level 好差评 scale: stable codes for events, Chinese labels for people."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    """One level of the scale; ``score`` 5 is best, 1 worst."""

    code: str
    label: str
    score: int

    @property
    def is_poor(self) -> bool:
        """True for the two lowest levels (差评), which open a follow-up."""
        return self.score <= 2


LEVELS: tuple[Level, ...] = (
    Level("very_satisfied", "非常满意", 5),
    Level("satisfied", "满意", 4),
    Level("basically_satisfied", "基本满意", 3),
    Level("dissatisfied", "不满意", 2),
    Level("very_dissatisfied", "非常不满意", 1),
)
BY_CODE: dict[str, Level] = {level.code: level for level in LEVELS}
