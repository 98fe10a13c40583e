"""Run an iterator in a background thread, a bounded number of items ahead.

The video pipeline analyses the next batch of frames (decode, detect, track)
while the current one is swapped, blended and encoded: on a GPU the model
calls of one stage overlap the host work of the other. onnxruntime, torch,
cv2 and numpy release the GIL in their heavy calls, so two Python threads do
overlap. Exceptions (and the consumer stopping early) cross over cleanly.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()
EMPTY = object()  # get_until: nothing came and nothing will
POLL_S = 0.1  # how often a blocked put/get looks at its stop condition


def put_until(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put, waiting for room until `stop` is set (then False): a producer thread never blocks
    forever on a consumer that has gone."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def get_until(q: queue.Queue, gone: Callable[[], bool]) -> object:
    """Get, waiting until an item comes or `gone()` says none will (then EMPTY)."""
    while True:
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            if gone():
                return EMPTY


class Prefetch(Iterator[T]):
    """Iterate `source` in a thread, at most `depth` items ahead. Use as a context manager
    (or call close()) so the thread stops when the consumer does."""

    def __init__(self, source: Iterable[T], depth: int = 1, name: str = "swapcli-prefetch") -> None:
        self._source = source
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        return put_until(self._queue, item, self._stop)

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failure(exc))
            return
        self._put(_END)

    def __next__(self) -> T:
        item = get_until(self._queue, lambda: not self._thread.is_alive() and self._queue.empty())
        if item is _END or item is EMPTY:
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.exc
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        close = getattr(self._source, "close", None)
        if close is not None and not self._thread.is_alive():
            close()  # a generator: run its finally blocks (the thread has let go of it)
        self._thread.join(5)

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
