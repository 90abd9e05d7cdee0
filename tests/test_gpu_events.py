"""medcot.gpu_events: GpuEvents' contract with a GPU generator, Stop flags across a fork, a worker's start-up.

Plain generators stand in for the one spaces returns; spaces itself runs in tests/test_zerogpu_space.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from medcot import gpu_events

# -- GpuEvents -------------------------------------------------------------------------------------------------------


class SlowGpu:
    """A GPU generator as spaces' behaves: each event after `delay`; its close waits for the worker (`close_delay`)."""

    def __init__(self, events: int = 3, delay: float = 0.0, close_delay: float = 0.0) -> None:
        self.events, self.delay, self.close_delay = events, delay, close_delay
        self.started = threading.Event()
        self.closed_in: list[str] = []
        self.slots: list[int] = []

    def __call__(self, slot: int) -> Iterator[int]:
        self.slots.append(slot)
        self.started.set()
        try:
            for i in range(self.events):
                time.sleep(self.delay)
                yield i
        finally:
            time.sleep(self.close_delay)
            self.closed_in.append(threading.current_thread().name)


def test_events_pass_through_in_order_and_the_slot_is_given_back() -> None:
    flags = gpu_events.StopFlags(size=1)
    gpu = SlowGpu()
    assert list(gpu_events.GpuEvents(gpu, threading.Event(), flags)) == [0, 1, 2]
    deadline = time.monotonic() + 5
    while flags.take() == -1 and time.monotonic() < deadline:  # given back once the driving thread is done too
        time.sleep(0.01)
    assert gpu.slots == [0]


def test_a_request_stopped_before_its_turn_never_asks_for_a_gpu() -> None:
    cancel = threading.Event()
    cancel.set()
    gpu = SlowGpu()
    assert list(gpu_events.GpuEvents(gpu, cancel, gpu_events.StopFlags())) == []
    time.sleep(0.1)
    assert not gpu.started.is_set()


def test_stop_while_waiting_ends_the_reader_at_once_and_the_close_runs_in_the_driving_thread() -> None:
    flags = gpu_events.StopFlags()
    cancel = threading.Event()
    gpu = SlowGpu(events=2, delay=2.0, close_delay=0.5)  # the GPU is still being waited for
    events = gpu_events.GpuEvents(gpu, cancel, flags)
    reader = iter(events)
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    assert list(reader) == []
    assert time.monotonic() - started < 0.2 + 3 * gpu_events.POLL_S
    assert flags.is_set(gpu.slots[0])  # the worker's generation would stop at its next token
    deadline = time.monotonic() + 10
    while not gpu.closed_in and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gpu.closed_in == ["medcot-gpu"]


def test_closing_the_reader_early_stops_the_gpu_generator() -> None:
    gpu = SlowGpu(events=1000, delay=0.01)
    cancel = threading.Event()
    reader = iter(gpu_events.GpuEvents(gpu, cancel, gpu_events.StopFlags()))
    assert next(reader) == 0
    started = time.monotonic()
    reader.close()  # what a garbage-collected or closed stream does: returns at once
    assert time.monotonic() - started < 0.1 and cancel.is_set()
    deadline = time.monotonic() + 5
    while not gpu.closed_in and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gpu.closed_in == ["medcot-gpu"]


def test_a_failure_of_the_gpu_generator_reaches_the_reader() -> None:
    def failing(slot: int) -> Iterator[int]:
        yield 1
        raise RuntimeError("worker error")

    reader = iter(gpu_events.GpuEvents(failing, threading.Event(), gpu_events.StopFlags()))
    assert next(reader) == 1
    with pytest.raises(RuntimeError, match="worker error"):
        next(reader)


def test_stop_flags_are_seen_by_a_forked_process() -> None:
    import multiprocessing

    flags = gpu_events.StopFlags(size=4)
    slot = flags.take()
    seen = multiprocessing.get_context("fork").Value("b", 0)

    def child() -> None:  # the worker's side: a request's cancel event set by the watch over its slot
        cancel, done = threading.Event(), threading.Event()
        threading.Timer(5, done.set).start()
        flags.watch(slot, cancel, done)
        seen.value = 1 if cancel.is_set() else 2

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()  # forked after the flags were made, as spaces forks its workers
    time.sleep(0.2)
    flags.set(slot)
    process.join(10)
    assert seen.value == 1


def test_a_forked_worker_reports_its_start_up_once() -> None:
    import multiprocessing

    reported = multiprocessing.get_context("fork").Array("d", [-1.0, -1.0])

    def worker() -> None:
        time.sleep(0.2)
        first, second = gpu_events.worker_started(), gpu_events.worker_started()
        reported[0] = first.startup_s if first.startup_s is not None else -2.0
        reported[1] = second.startup_s if second.startup_s is not None else -2.0

    process = multiprocessing.get_context("fork").Process(target=worker)
    process.start()
    process.join(10)
    assert 0.2 <= reported[0] < 5 and reported[1] == -2.0  # the second request of a worker: reused, no start-up
