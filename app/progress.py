"""Progress for long commands: a bar per phase on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """One phase's progress: ``with Progress("ingest", total=120) as bar: bar.advance()``.

    On a terminal it redraws one line; elsewhere it prints a plain line at most every
    ``every`` percent, so logs stay readable.
    """

    def __init__(self, phase: str, total: int, *, stream: TextIO | None = None, every: int = 10) -> None:
        self.phase = phase
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._last_pct = -1
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        if not self.tty:
            self.stream.write(f"[{self.phase}] started ({self.total} steps)\n")
            self.stream.flush()
        self._draw()
        return self

    def advance(self, steps: int = 1, note: str = "") -> None:
        """Count ``steps`` more done and redraw."""
        self.done = min(self.total, self.done + steps)
        self._draw(note)

    def _draw(self, note: str = "") -> None:
        pct = int(100 * self.done / self.total)
        elapsed = time.monotonic() - self._started
        if self.tty:
            filled = int(30 * self.done / self.total)
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(
                f"\r{self.phase:<10} [{bar}] {self.done}/{self.total} {elapsed:5.0f}s {note[:40]:<40}"
            )
            self.stream.flush()
        elif self.done and (pct // self.every != self._last_pct // self.every or self.done == self.total):
            self.stream.write(f"[{self.phase}] {self.done}/{self.total} ({pct}%) {elapsed:.0f}s {note}\n")
            self.stream.flush()
        self._last_pct = pct

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self._started
        if self.tty:
            self.stream.write("\n")
        self.stream.write(f"[{self.phase}] done in {elapsed:.1f}s\n")
        self.stream.flush()
