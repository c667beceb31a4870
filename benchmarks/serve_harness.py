"""The outside of a ``molpipe serve`` for benchmarks/bench_serve.py: the server as a
subprocess (``Server``: start, wait until /status answers, SIGKILL, SIGINT, clean up) and a
keep-alive HTTP client of it (``Client``), on 127.0.0.1 and a free port only."""

from __future__ import annotations

import csv
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXTRA_ARGS: list[str] = []      # more options of every server (bench_serve --serve-args)
CLI = REPO / "cli.py"
ESOL = REPO / "datasets" / "esol.csv"
TARGET = "measured_log_solubility"
NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)
IDLE = 3.0          # seconds after which a keep-alive connection is opened anew (uvicorn: 5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``molpipe serve`` subprocess at a time; ``start`` again restarts on a new port."""

    all: list["Server"] = []

    def __init__(self, args: list[str], log: Path):
        self.args, self.log, self.proc, self.port = args, log, None, None
        Server.all.append(self)

    def start(self) -> None:
        self.port = free_port()
        with open(self.log, "a") as log:
            log.write(f"\n--- start, port {self.port}\n")
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, str(CLI), "serve", *self.args, *EXTRA_ARGS,
                 "--port", str(self.port)],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.t_start = time.perf_counter()

    def wait_ready(self, timeout: float = 180.0, until=None) -> tuple[float, dict]:
        """Seconds from ``start`` until /status answers (and ``until(status)`` holds)."""
        client = Client(self, timeout=5.0)
        deadline = self.t_start + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: "
                                   f"{self.tail()}")
            try:
                code, st = client.call("GET", "/status")
                if code == 200 and (until is None or until(st)):
                    return time.perf_counter() - self.t_start, st
            except NETWORK_ERRORS:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout:g} s: {self.tail()}")

    def status(self) -> dict:
        code, st = Client(self, timeout=30.0).call("GET", "/status")
        if code != 200:
            raise RuntimeError(f"/status answered {code}")
        return st

    def sigkill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def interrupt(self, timeout: float = 120.0) -> int | None:
        """SIGINT, then the exit code (None: still running after ``timeout``)."""
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        try:                      # anything the server started in its own session
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def tail(self, n: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class Client:
    """A keep-alive connection to a ``Server``'s current port (reconnects after errors)."""

    def __init__(self, server: Server, timeout: float = 60.0):
        self.server, self.timeout, self.conn, self.port = server, timeout, None, None
        self.used = 0.0

    def call(self, method: str, path: str, doc=None) -> tuple[int, dict | None]:
        stale = time.perf_counter() - self.used > IDLE   # the server may have closed it
        if self.conn is None or self.port != self.server.port or stale:
            self.close()
            self.port = self.server.port
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                   timeout=self.timeout)
        body = None if doc is None else json.dumps(doc).encode()
        try:
            self.conn.request(method, path, body, {"Content-Type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
            self.used = time.perf_counter()
            return r.status, (json.loads(data) if data else None)
        except NETWORK_ERRORS:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def esol_rows() -> list[tuple[str, float]]:
    with open(ESOL, newline="") as f:
        return [(r["smiles"].strip(), float(r[TARGET])) for r in csv.DictReader(f)]


def pct(values, qs) -> dict:
    a = np.asarray(values, float) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 2) if a.size else None for q in qs}


def training_rate(s0: dict, t0: float, s1: dict, t1: float) -> float:
    return (s1["molecules_trained"] - s0["molecules_trained"]) / max(t1 - t0, 1e-9)
