"""The service never dies on input: thousands of seeded hostile bodies (bad SMILES, bad
numbers, deep and giant JSON, wrong types at every level, broken bytes) get a 2xx or a 4xx
with a message, never a 5xx, and the model goes on answering; then raw requests, lying
Content-Lengths and chunked bodies over the limit against a real uvicorn on loopback."""

import http.client
import json
import math
import random
import socket
import time

import pytest

from molpipe.serve.app import Limits, create_app
from tests.serve.conftest import TOKEN, auth, uvicorn_on_loopback

pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

N_BODIES = 3000              # through the TestClient
N_RAW = 200                  # through a socket to uvicorn
VALID = ["CCO", "c1ccccc1O", "CC(=O)O", "C", "[Na+].[Cl-]", "ClC(Cl)Cl"]
SMILES_BITS = ["C", "c", "1", "(", ")", "[", "]", "=", "#", "@", "+", "-", "%", "/", "\\",
               ".", "*", "N", "O", "n", "H", "Cl", "Br", "%99", ":", "$", "~", "0"]
# JSON text of numbers and of everything that is not a number (parse_constant and the int
# digit limit are exercised here)
NUMBERS = ["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "-0", "-0.0", "0",
           "1e308", "5e-324", "1e12", "1e13", "-1e12", "1" * 4000, "-" + "9" * 4299,
           "1" * 5000, "1.5", "3", "01", "1.", ".5", "+1", "0x10", "1e", "--1"]
OTHERS = ["null", "true", "false", '""', '"1.0"', "[]", "{}", "[1]", '{"a": 1}', '"CCO"']


# -- the generator of hostile bodies ----------------------------------------------------------
def _smiles(rng: random.Random) -> str:
    """A string of JSON: a SMILES that is hostile one way or another."""
    kind = rng.randrange(12)
    if kind == 0:
        return json.dumps(bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
                          .decode("latin-1"))
    if kind == 1:                          # any code point, lone surrogates included
        text = "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(1, 20)))
        return json.dumps(text, ensure_ascii=rng.random() < 0.5)   # raw: surrogates as bytes
    if kind == 2:
        return json.dumps(rng.choice(["C", "(", "[", "1", "c1"]) * rng.choice([1999, 2000, 2001,
                                                                              5000, 50_000]))
    if kind == 3:
        k = rng.randrange(1, 600)
        return json.dumps("C" + "(C" * k + ")" * rng.choice([k, k - 1, k + 1]))
    if kind == 4:
        return json.dumps(rng.choice(["", " ", "\n", "\x00", "C\x00C", "\t", "\u200b",
                                      "\ufeffCCO", "CCO\n", "C C", "\\ud800"]))
    if kind == 5:
        return rng.choice(['"\\ud800"', '"C\\udfff"', '"\\udc00\\ud800"', '"\\u0000"'])
    if kind == 6:
        return json.dumps("".join(rng.choice(SMILES_BITS) for _ in range(rng.randrange(60))))
    if kind == 7:
        return json.dumps(rng.choice(["[999999C]", "[C+99]", "[Na+++++]", "[C@@@@H]", "C1" * 500,
                                      "c1" * 300, "[U]" * 100, "C" * 499, "C" * 501,
                                      "[Xe].[Xe].[Xe]", "*", "[*]", "C%99C%99", "C=C=C=C"]))
    if kind == 8:                          # not a string at all
        return rng.choice(NUMBERS + OTHERS)
    return json.dumps(rng.choice(VALID))


def _value(rng: random.Random) -> str:
    return rng.choice(NUMBERS + OTHERS) if rng.random() < 0.8 else f"{rng.uniform(-9, 3):.3f}"


def _deep(rng: random.Random) -> str:
    n = rng.choice([10, 500, 1000, 5000, 100_000])
    kind = rng.randrange(4)
    if kind == 0:
        return "[" * n
    if kind == 1:
        return '{"smiles": ' + "[" * n + "]" * n + "}"
    if kind == 2:
        return '{"a":' * n + "1" + "}" * n
    return '{"rows": [' + '{"smiles": ' * min(n, 2000) + "1" + "}" * min(n, 2000) + "]}"


def _predict(rng: random.Random) -> str:
    kind = rng.randrange(8)
    many = ", ".join(_smiles(rng) for _ in range(rng.randrange(9)))
    if kind <= 2:
        return '{"smiles": [%s]}' % many
    if kind == 3:
        return '{"smiles": %s}' % _smiles(rng)
    if kind == 4:
        return '{"smiles": [%s], "domain": %s}' % (many, rng.choice(NUMBERS + OTHERS))
    if kind == 5:                          # duplicate keys: the last one counts
        return '{"smiles": ["CCO"], "smiles": %s}' % _smiles(rng)
    if kind == 6:
        return rng.choice(["[]", "null", '"CCO"', "1", '{"smile": ["CCO"]}', '{"smiles": null}',
                           '{"smiles": {"0": "CCO"}}', '{"smiles": [["CCO"]]}', "{}"])
    return '{"smiles": [%s]}' % ", ".join([_smiles(rng)] * rng.choice([2, 20, 10_001]))


def _row(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind <= 3:
        return '{"smiles": %s, "logS": %s}' % (_smiles(rng), _value(rng))
    if kind == 4:
        return '{"smiles": %s, %s: %s}' % (_smiles(rng), _smiles(rng), _value(rng))
    if kind == 5:
        return '{"smiles": "CCO", "logS": 1, "logS": %s, "smiles": %s}' % (_value(rng),
                                                                            _smiles(rng))
    if kind == 6:
        return rng.choice(['["CCO", 1.0]', '"CCO"', "null", "1", "{}", '{"smiles": null}',
                           '{"logS": 1}', '{"smiles": ["CCO"], "logS": 1}'])
    return '{"smiles": %s, "logS": null}' % _smiles(rng)


def _observe(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind <= 3:
        return '{"rows": [%s]}' % ", ".join(_row(rng) for _ in range(rng.randrange(1, 6)))
    if kind == 4:
        return rng.choice(['{"rows": "CCO"}', '{"rows": null}', '{"rows": {}}', '{"rows": 1}',
                           "[]", '{"row": []}', "null", '{"rows": [[]]}', '{"rows": [null]}'])
    return '{"rows": [%s]}' % ", ".join([_row(rng)] * rng.choice([3, 10_001]))


def _training(rng: random.Random) -> str:
    return '{"running": %s}' % rng.choice(NUMBERS + OTHERS + ['"false"', "[false]", "true",
                                                              "false"])


def _damage(rng: random.Random, text: str) -> bytes:
    """``text`` as bytes, sometimes truncated, with invalid UTF-8, or replaced by noise."""
    data = text.encode("utf-8", "surrogatepass")
    kind = rng.randrange(10)
    if kind == 0 and data:
        return data[:rng.randrange(len(data))]
    if kind == 1:
        at = rng.randrange(len(data) + 1)
        bad = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xfe\xff"])
        return data[:at] + bad + data[at:]
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    if kind == 3:
        return rng.choice([b"", b" ", b"\x00", b"\xef\xbb\xbf" + data, text.encode("utf-16"),
                           text.encode("utf-32"), b"\n" * 1000])
    return data


def hostile_bodies(n: int, seed: int = 0, snapshots: int = 40) -> list[tuple[str, bytes]]:
    """``n`` (route, body) pairs: most to /predict and /observe, some to /training, a few
    (at most ``snapshots``) to /snapshot."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        route = rng.choices(["/predict", "/observe", "/training", "/snapshot"],
                            [45, 45, 8, 2])[0]
        if route == "/snapshot" and snapshots == 0:
            route = "/training"
        snapshots -= route == "/snapshot"
        if rng.random() < 0.06:
            text = _deep(rng)
        else:
            text = {"/predict": _predict, "/observe": _observe, "/training": _training,
                    "/snapshot": _training}[route](rng)
        out.append((route, _damage(rng, text)))
    return out


# -- checks ---------------------------------------------------------------------------------
def _bad_answer(status: int, body: bytes) -> str | None:
    """Why an answer breaks the rule (None when it keeps it)."""
    if status >= 500:
        return f"{status} {body[:300]!r}"
    if 400 <= status < 500:
        try:
            detail = json.loads(body)["detail"]
        except (ValueError, KeyError, TypeError):
            return f"{status} without a JSON detail: {body[:300]!r}"
        if not (isinstance(detail, str) and detail.strip()):
            return f"{status} with an empty detail: {body[:300]!r}"
    return None


def _still_serves(predict, status) -> None:
    code, doc = predict({"smiles": ["CCO", "c1ccccc1O"]})
    assert code == 200, doc
    assert [r["error"] for r in doc["results"]] == [None, None]
    assert all(math.isfinite(r["prediction"]["logS"]) for r in doc["results"])
    st = status()
    assert st["error"] is None, st["error"]


def test_hostile_bodies_never_kill_the_service(make_model):
    model = make_model()
    bodies = hostile_bodies(N_BODIES)
    failures, codes = [], {}
    t0 = time.perf_counter()
    with TestClient(create_app(model, token=TOKEN, stop_on_exit=False),
                    raise_server_exceptions=False) as client:
        for route, body in bodies:
            headers = auth() if route != "/predict" else {}
            r = client.post(route, content=body, headers=headers)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if why := _bad_answer(r.status_code, r.content):
                failures.append(f"{route} {body[:120]!r}: {why}")
        client.post("/training", json={"running": True}, headers=auth())

        def predict(doc):
            r = client.post("/predict", json=doc)
            return r.status_code, r.json()

        _still_serves(predict, lambda: client.get("/status").json())
        before = client.get("/status").json()["rows"]["observed"]
        r = client.post("/observe", json={"rows": [{"smiles": "CCO", "logS": -0.3}]},
                        headers=auth())
        assert r.status_code == 202 and r.json()["seqs"] == [before + 1] * 2
    seconds = time.perf_counter() - t0

    assert not failures, f"{len(failures)} of {len(bodies)} broke the rule:\n" + \
        "\n".join(failures[:15])
    assert codes.get(200, 0) + codes.get(202, 0) > 100, codes     # some were fine
    assert sum(n for c, n in codes.items() if 400 <= c < 500) > N_BODIES / 2, codes
    assert seconds < 120, f"{seconds:.0f} s for {N_BODIES} bodies"


# -- a real uvicorn ---------------------------------------------------------------------------
LIMIT = 64 << 10


@pytest.fixture
def server(make_model):
    """(port, model) of the app served by uvicorn on 127.0.0.1 in a thread."""
    model = make_model()
    app = create_app(model, token=TOKEN, limits=Limits(max_body_bytes=LIMIT),
                     stop_on_exit=False)
    with uvicorn_on_loopback(app, timeout_keep_alive=2) as port:
        yield port, model


def _request(port: int, route: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", route, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _raw(port: int, data: bytes, timeout: float = 3.0) -> tuple[int | None, bytes]:
    """Send ``data`` as it is; (status or None when no answer came in ``timeout``, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass                                # the server answered and closed first
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
                head, sep, rest = got.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if sep and length and len(rest) >= length[0]:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    if not got.startswith(b"HTTP/1.1 "):
        return None, got
    head, _, rest = got.partition(b"\r\n\r\n")
    return int(head[9:12]), rest


def test_real_server_survives_raw_hostile_requests(server):
    port, model = server
    t0 = time.perf_counter()
    failures = []
    for route, body in hostile_bodies(N_RAW - 20, seed=1, snapshots=3):
        headers = {"Content-Type": "application/json", **(auth() if route != "/predict" else {})}
        status, answer = _request(port, route, body, headers)
        if why := _bad_answer(status, answer):
            failures.append(f"{route} {body[:120]!r}: {why}")

    head = f"Authorization: Bearer {TOKEN}\r\nHost: 127.0.0.1\r\n".encode()
    # a Content-Length that lies (more than is sent): no answer, or a 4xx; never a 5xx
    for route in ("/predict", "/observe"):
        status, answer = _raw(port, b"POST " + route.encode() + b" HTTP/1.1\r\n" + head +
                              b"Content-Length: 5000\r\n\r\n" + b'{"smiles": ["CCO"]}',
                              timeout=1.0)
        assert status is None or 400 <= status < 500, (route, status, answer)
    # a Content-Length over the limit: 413 before the body is read
    status, answer = _raw(port, b"POST /predict HTTP/1.1\r\n" + head +
                          f"Content-Length: {LIMIT * 100}\r\n\r\n".encode() + b"{")
    assert status == 413 and _bad_answer(status, answer) is None, answer
    # a chunked body over the limit: 413 while it is read
    chunk = b'["' + b"C" * 8190 + b'"],'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // 8000 + 4))
    for route in ("/predict", "/observe", "/training"):
        status, answer = _raw(port, b"POST " + route.encode() + b" HTTP/1.1\r\n" + head +
                              b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
        assert status == 413 and _bad_answer(status, answer) is None, (route, status, answer)
    # requests that are not HTTP: whatever uvicorn says, it is not a 5xx
    for data in (b"\x16\x03\x01\x02\x00\x01\x00", b"GET\r\n\r\n",
                 b"POST /predict HTTP/9.9\r\n\r\n",
                 b"POST /predict HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                 b"POST /predict HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                 b"POST /predict HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
                 b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        status, answer = _raw(port, data, timeout=1.0)
        assert status is None or status < 500, (data[:60], status, answer)

    def predict(doc):
        status, answer = _request(port, "/predict", json.dumps(doc).encode(), {})
        return status, json.loads(answer)

    def status():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/status")
        doc = json.loads(conn.getresponse().read())
        conn.close()
        return doc

    _still_serves(predict, status)
    assert not failures, f"{len(failures)} broke the rule:\n" + "\n".join(failures[:15])
    assert time.perf_counter() - t0 < 90
