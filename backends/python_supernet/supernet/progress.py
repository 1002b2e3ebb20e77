"""A dependency-free progress bar for long CPU work (training, calibration, profiling)."""
from __future__ import annotations

import sys
import time


class Progress:
    """Redraws one line on a terminal; elsewhere (CI logs) prints a line every ``every_s``."""

    def __init__(self, total: int, label: str, stream=None, every_s: float = 10.0):
        self.total, self.label, self.done = max(1, total), label, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self.last = time.monotonic()
        self.every_s = every_s

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.tty or now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            frac = min(1.0, self.done / self.total)
            elapsed = now - self.start
            eta = elapsed / frac - elapsed if frac > 0 else 0.0
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            line = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.0f}s eta {eta:4.0f}s {note}"
            self.stream.write(("\r" + line) if self.tty else line + "\n")
            if self.tty and self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
