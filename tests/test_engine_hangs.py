"""A thread of the engine that dies must surface as an error, never as a hang (CPU stand-ins for GPU runs)."""

import queue
import threading

import numpy as np
import pytest

from streamsplat_ns.engine import engine as eng
from streamsplat_ns.engine.frames import Frame, _get_alive


def _finishes(fn, timeout=10.0):
    """Run ``fn`` in a thread; returns its exception (or None) if it ended in time, else fails the test."""
    box = {}

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            box["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked forever on a dead producer thread"
    return box.get("e")


def _dead_thread():
    t = threading.Thread(target=lambda: None, name="dead")
    t.start()
    t.join()
    return t


def test_get_alive_raises_for_dead_producer_and_takes_its_last_item():
    q = queue.Queue()
    e = _finishes(lambda: _get_alive(q, _dead_thread(), "the test producer", poll=0.05))
    assert isinstance(e, RuntimeError) and "the test producer (dead)" in str(e)
    q.put("last")
    assert _get_alive(q, _dead_thread(), "x", poll=0.05) == "last"


def test_prefetch_thread_dying_without_end_marker_is_an_error(monkeypatch):
    monkeypatch.setattr(eng._Prefetch, "_run", lambda self: None)  # dies at once, puts nothing
    frames = [Frame(0, "a", np.zeros((4, 4, 3), np.uint8), 0.0)]
    pre = eng._Prefetch(frames, None, (4, 4), pin=False)
    e = _finishes(lambda: list(pre))
    assert isinstance(e, RuntimeError) and "prefetch" in str(e)


def test_video_writer_with_dead_encoder_thread_raises_instead_of_blocking(tmp_path):
    pytest.importorskip("av")
    import torch

    from streamsplat_ns.engine.outputs import HostFrames, VideoWriter

    w = VideoWriter(tmp_path / "v.mp4", 10, 8, 8, queue_size=1)
    w._queue.put(None)  # the encoder thread ends (as if it had died)
    w._thread.join(5)
    w._queue.put("stuck")  # the queue is full and nobody drains it
    e = _finishes(lambda: w.write(HostFrames(torch.zeros(1, 8, 8, 3))))
    assert isinstance(e, RuntimeError) and "encoder thread" in str(e)
    assert _finishes(w.close) is None  # close returns too
