"""Overlap decoding, inference and encoding in ``msaf-hf predict``: a bounded three-stage thread pipeline.

    for item in prefetch(decode(inputs), depth=2):       # decoding runs ahead in a thread, at most 2 items ahead
        result = model(item)                              # inference in the calling thread
        writer.submit(encode, item, result)               # encoding in a thread, in submission order

The engines (PyTorch's oneDNN kernels, OpenVINO, ONNX Runtime) and PIL/PyAV's codecs release the GIL while they
compute, so the three stages run at once; with one thread per stage and FIFO queues the order of the outputs is the
order of the inputs, and the results are those of the sequential loop. ``depth=0`` runs everything in the calling
thread (the sequential path). Queues are bounded, so memory stays at ``depth`` items per stage whatever the input
length; an error in a stage thread is raised in the calling thread.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["OrderedWorker", "measure_latency", "prefetch", "single_image_latency", "throughput_against_latency"]

T = TypeVar("T")
_POLL_S = 0.05


def _put(target: queue.Queue, value: Any, stop: threading.Event) -> bool:
    """Put `value`, giving up (False) once `stop` is set, so that an abandoned producer never blocks forever."""
    while not stop.is_set():
        try:
            target.put(value, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def prefetch(iterable: Iterable[T], depth: int = 2, name: str = "msaf_hf-decode") -> Iterator[T]:
    """Iterate `iterable` in a background thread, at most `depth` items ahead of the consumer (``depth=0``: in the
    calling thread). Exceptions of the iteration are raised in the consumer, at the item where they happened."""
    if depth <= 0:
        yield from iterable
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                if not _put(items, ("item", item), stop):
                    return
            _put(items, ("done", None), stop)
        except BaseException as error:  # handed to the consumer, raised there
            _put(items, ("error", error), stop)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        thread.join()


class OrderedWorker:
    """Run submitted calls one at a time in a background thread, in submission order, with at most `depth` waiting
    (``depth=0``: each call runs at once in the calling thread). The first error stops the worker and is raised by
    the next `submit` or by `close`; calls still queued behind it are dropped."""

    def __init__(self, depth: int = 2, name: str = "msaf_hf-encode") -> None:
        self.depth = depth
        self._error: BaseException | None = None
        self._calls: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._calls = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    def _work(self) -> None:
        assert self._calls is not None
        while True:
            call = self._calls.get()
            if call is None:
                return
            if self._error is None:  # after an error, drain without running, so that submitters never block
                function, args = call
                try:
                    function(*args)
                except BaseException as error:
                    self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        if self._calls is None:
            function(*args)
            return
        self._raise_error()
        self._calls.put((function, args))

    def close(self) -> None:
        """Wait for the submitted calls; raise the first error one of them raised."""
        if self._calls is not None and self._thread is not None:
            self._calls.put(None)
            self._thread.join()
            self._calls = None
        self._raise_error()

    def __enter__(self) -> OrderedWorker:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.close()
        elif self._calls is not None and self._thread is not None:
            self._error = self._error or RuntimeError("abandoned")  # stop running queued calls
            self._calls.put(None)
            self._thread.join()
            self._calls = None


def measure_latency(function: Callable[[], Any], repeats: int = 3) -> float:
    """Median seconds of `repeats` calls after one untimed warm-up call: an engine's single-image latency, the
    reference the pipelined frames/s are compared with."""
    function()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def single_image_latency(segmenter: Any, items: Sequence[Any]) -> float | None:
    """The model's single-image latency (median of 3 after a warm-up) on the first input (a video's first frame),
    the reference of the throughput report; None when no input can be read."""
    for item in items:
        try:
            if item.kind == "video":
                from .video import VideoReader

                with VideoReader(item.path) as reader:
                    image = next(iter(reader), None)
            else:
                from PIL import Image, ImageOps

                with Image.open(item.path) as opened:
                    image = ImageOps.exif_transpose(opened).convert("RGB")
        except (OSError, ValueError):  # PIL.UnidentifiedImageError is an OSError
            continue
        if image is not None:
            return measure_latency(lambda image=image: segmenter.predict([image]))
    return None


def throughput_against_latency(
    per_frame_seconds: Sequence[float], wall_seconds: float, single_image_latency_s: float | None
) -> dict[str, Any]:
    """Frames/s end to end beside what the model's single-image latency allows one image at a time
    (``1 / latency``): their ratio shows what overlapping decode, inference and encode (and batching) gained."""
    if single_image_latency_s is None or not per_frame_seconds or wall_seconds <= 0:
        return {}
    fps = len(per_frame_seconds) / wall_seconds
    return {
        "single_image_latency_ms": 1000.0 * single_image_latency_s,
        "frames_per_s": fps,
        "frames_per_s_over_inverse_latency": fps * single_image_latency_s,
    }
