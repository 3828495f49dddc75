"""What the bench reports: the lines of each section, the target checks and the JSON results."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# The width of the table's name column.
NAME_WIDTH = 34


@dataclass
class Check:
    """One target (or a figure reported beside them, with target ``-``)."""

    name: str
    value: float
    target: str
    ok: bool


@dataclass
class Report:
    """Everything the sections measured: JSON results, printed lines and checks."""

    results: dict[str, object] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def line(self, text: str) -> None:
        self.lines.append(text)

    def check(self, name: str, value: float, target: str = "-", ok: bool = True) -> None:
        """Add a check; without ``target`` and ``ok`` it is reported only.

        Raises:
            ValueError: ``name`` is wider than the table's name column (it would shift the row).
        """
        if len(name) > NAME_WIDTH:
            raise ValueError(f"bench check name {name!r} is longer than {NAME_WIDTH} characters")
        self.checks.append(Check(name, float(value), target, ok))

    def at_most(self, name: str, value: float, limit: float) -> None:
        """A target ``value <= limit`` (a value that was not measured, NaN, misses it)."""
        self.check(name, value, f"<= {limit}", value <= limit)

    def at_least(self, name: str, value: float, limit: float) -> None:
        """A target ``value >= limit`` (NaN misses it)."""
        self.check(name, value, f">= {limit}", value >= limit)

    @property
    def missed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def table(self) -> str:
        rows = [f"{'check':<{NAME_WIDTH}} {'value':>14}  {'target':<20} result"]
        for c in self.checks:
            rows.append(
                f"{c.name:<{NAME_WIDTH}} {fmt(c.value):>14}  {c.target:<20} {'ok' if c.ok else 'MISSED'}"
            )
        return "\n".join(rows)

    def to_json(self) -> dict[str, object]:
        return dict(self.results, checks=[asdict(c) for c in self.checks])


def fmt(v: float, unit: str = "") -> str:
    """A value for the table: thousands separators, two decimals for floats, ``n/a`` for NaN."""
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    return f"{v:,.2f}{unit}" if isinstance(v, float) else f"{v:,}{unit}"
