"""Fixtures of the service tests: a small untrained logS model started in ``tmp_path``, the app
around it (token ``TOKEN``) driven by FastAPI's ``TestClient``, and the helpers they share."""

import dataclasses
import socket
import threading
import time
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from molpipe.serve.app import Limits, create_app  # noqa: E402
from molpipe.serve.build import untrained  # noqa: E402
from molpipe.training.settings import DEFAULTS  # noqa: E402

TOKEN = "t0ken"
TARGETS = ["logS"]
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "ClC(Cl)Cl", "c1ccncc1"]
SMALL = dataclasses.replace(DEFAULTS, hidden=32)      # a small network: quick to train


def auth(token: str = TOKEN) -> dict:
    """The header a write needs."""
    return {"Authorization": f"Bearer {token}"}


def rows(n: int, start: int = 0) -> list[dict]:
    """``n`` valid /observe rows (SMILES cycled, values distinct)."""
    return [{"smiles": SMILES[(start + i) % len(SMILES)], "logS": -0.5 * ((start + i) % 7)}
            for i in range(n)]


def wait_for(check, timeout: float = 30.0, every: float = 0.1):
    """Poll ``check()`` until it returns a true value (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture
def make_model(tmp_path):
    """Factory of started untrained models in ``tmp_path`` (all stopped after the test)."""
    made = []

    def make(**kw):
        kw = {"publish_every": 0.1, "snapshot_every": 3600.0, **kw}
        out = tmp_path / f"srv{len(made)}"
        model = untrained(TARGETS, "regression", out, SMALL, **kw).start()
        made.append(model)
        return model

    yield make
    for model in made:
        model.stop(snapshot=False)


@pytest.fixture
def model(make_model):
    """A started untrained logS model."""
    return make_model()


@pytest.fixture
def make_client(make_model):
    """Factory of TestClients of ``create_app`` (token ``TOKEN``) around a new model."""
    clients = []

    def make(limits: Limits = Limits(), token: str | None = TOKEN, **model_kw):
        online = make_model(**model_kw)
        client = TestClient(create_app(online, token=token, limits=limits, stop_on_exit=False))
        client.__enter__()
        client.model = online
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    """TestClient of the app around ``model`` with token ``TOKEN`` and default limits."""
    return make_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_on_loopback(app, **config):
    """The port of ``app`` served by uvicorn on 127.0.0.1 in a thread (stopped after)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", **config))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
    assert not thread.is_alive(), "uvicorn did not stop"
