"""Progress of long work: a bar on a terminal, plain lines on stderr elsewhere (CI, nohup, notebooks).

Shape legend: none.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional

__all__ = ["Progress", "PROGRESS_SECONDS"]

PROGRESS_SECONDS = 10.0  # without a terminal, a plain progress line at most this often


class Progress:
    """Counts steps of ``total`` (or an unknown number). On a terminal a tqdm bar; elsewhere a line
    ``"<label>: <done>/<total> <unit> ... <note>"`` on stderr at most every :data:`PROGRESS_SECONDS`
    (``every_step``: each step, for a few long steps), and with ``final_line`` one at the end.
    ``enabled=False`` prints nothing."""

    def __init__(
        self,
        label: str,
        total: Optional[int] = None,
        unit: str = "steps",
        every_step: bool = False,
        enabled: bool = True,
        final_line: bool = False,
    ) -> None:
        self.label, self.total, self.unit, self.every_step, self.enabled = label, total, unit, every_step, enabled
        self.final_line, self.shown_done = final_line, 0
        self.done, self.start = 0, time.perf_counter()
        self.shown = self.start
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit=unit, file=sys.stderr, leave=False)

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def step(self, n: int = 1, note: str = "") -> None:
        """``n`` more steps done; ``note`` (e.g. the loss) goes on the bar or the line."""
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(n)
            return
        if self.every_step or time.perf_counter() - self.shown >= PROGRESS_SECONDS:
            self._line(note)

    def _line(self, note: str = "") -> None:
        now = time.perf_counter()
        of = f"/{self.total}" if self.total else ""
        rate = self.done / max(now - self.start, 1e-9)
        line = f"{self.label}: {self.done}{of} {self.unit}, {now - self.start:.1f} s ({rate:.1f}/s)"
        print(f"{line} {note}".rstrip(), file=sys.stderr, flush=True)
        self.shown, self.shown_done = now, self.done

    def close(self) -> None:
        """End the bar; with ``final_line``, a last plain line unless the last step was shown already."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.final_line and self.shown_done != self.done:
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def iterate(self, items: Iterable, total: Optional[int] = None) -> Iterator:
        """``items``, counting one step per item."""
        with self:
            for item in items:
                yield item
                self.step()
