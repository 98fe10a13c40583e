"""A stage stopwatch: `with clock('detect'): ...` adds the time to a Timings."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from swapcli.core.options import Timings


class Clock:
    def __init__(self, timings: Timings | None = None) -> None:
        self.timings = timings or Timings()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings.add(stage, time.perf_counter() - start)
