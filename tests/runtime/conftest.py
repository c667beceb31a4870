"""Runtime tests: no test may leave a worker thread behind."""

import threading
import time

import pytest


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith("molpipe-worker") and t.is_alive()]


@pytest.fixture(autouse=True)
def no_thread_left():
    yield
    deadline = time.monotonic() + 5.0
    while worker_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker_threads(), "a worker thread outlived its test"
