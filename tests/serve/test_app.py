"""The routes of ``molpipe.serve.app``: answers, receipts, the token, limits, status, metrics,
snapshots, pausing, docs, drawings; and ``molpipe serve`` refusing a public address without a
token."""

import json
import math
import re
import time

import numpy as np
import pytest

from molpipe.serve.app import MAX_VALUE, Limits
from tests.serve.conftest import SMILES, TOKEN, auth, rows, wait_for

BAD = "C1CC(("                      # RDKit cannot read it
SAMPLE = re.compile(r'^(molpipe_[a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (\S+)$')


def _detail(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.strip(), response.text
    return detail


def _observe(client, body, **kw):
    return client.post("/observe", json=body, headers=auth(), **kw)


# -- /predict -------------------------------------------------------------------------------
def test_predict_answers_every_molecule(client):
    smiles = ["CCO", BAD, "c1ccccc1O", ""]
    r = client.post("/predict", json={"smiles": smiles})

    assert r.status_code == 200, r.text
    doc = r.json()
    assert isinstance(doc["model_version"], int) and doc["model_version"] >= 0
    assert doc["targets"] == ["logS"] and doc["task"] == "regression"
    results = doc["results"]
    assert [x["smiles"] for x in results] == smiles
    for i in (0, 2):
        assert results[i]["error"] is None
        assert math.isfinite(results[i]["prediction"]["logS"])
    for i in (1, 3):
        assert results[i]["prediction"] is None and results[i]["error"]
    assert results[0]["prediction"] != results[2]["prediction"]


def test_predict_of_one_string_and_of_none(client):
    one = client.post("/predict", json={"smiles": "CCO"}).json()["results"]
    none = client.post("/predict", json={"smiles": []})
    assert len(one) == 1 and one[0]["prediction"] is not None
    assert none.status_code == 200 and none.json()["results"] == []


# -- /observe: the token, receipts, the journal ---------------------------------------------
@pytest.mark.parametrize("headers", [{}, auth("wrong"), {"Authorization": TOKEN},
                                     {"Authorization": "Bearer"}, auth(TOKEN + " ")])
def test_observe_needs_the_token(client, headers):
    r = client.post("/observe", json={"rows": rows(1)}, headers=headers)
    assert r.status_code == 401
    assert "token" in _detail(r).lower()
    assert client.get("/status").json()["rows"]["observed"] == 0


@pytest.mark.parametrize("route,body", [("/snapshot", None), ("/training", {"running": False})])
def test_other_writes_need_the_token(client, route, body):
    r = client.post(route, json=body, headers=auth("wrong"))
    assert r.status_code == 401 and _detail(r)
    assert client.get("/status").json()["training"] is True


def test_observe_without_a_token_configured(make_client):
    client = make_client(token=None)
    assert client.post("/observe", json={"rows": rows(2)}).status_code == 202


def test_observe_receipts_are_consecutive_and_journaled(client):
    first = _observe(client, {"rows": rows(3)})
    second = _observe(client, {"rows": [rows(1)[0], {"smiles": BAD, "logS": 1.0},
                                        {"smiles": "CCN", "logS": 2.5}]})

    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": 3, "seqs": [1, 3], "rejected": []}
    receipt = second.json()
    assert second.status_code == 202, second.text
    assert receipt["accepted"] == 2 and receipt["seqs"] == [4, 5]
    [rejected] = receipt["rejected"]
    assert rejected["row"] == 1 and rejected["smiles"] == BAD and rejected["reason"]

    lines = (client.model.out / "journal.jsonl").read_text().splitlines()
    journal = [json.loads(line) for line in lines]
    assert [row["seq"] for row in journal] == [1, 2, 3, 4, 5]
    assert [row["smiles"] for row in journal] == [SMILES[0], SMILES[1], SMILES[2], SMILES[0],
                                                  "CCN"]
    assert [row["y"] for row in journal] == [[0.0], [-0.5], [-1.0], [0.0], [2.5]]
    assert BAD in (client.model.out / "rejects.csv").read_text()


def test_observe_unknown_target_names_it_and_the_known_ones(client):
    r = _observe(client, {"rows": [{"smiles": "CCO", "logS": 1.0},
                                   {"smiles": "CCO", "solubility": 1.0}]})
    assert r.status_code == 422
    detail = _detail(r)
    assert "solubility" in detail and "logS" in detail and "rows[1]" in detail
    assert client.get("/status").json()["rows"]["observed"] == 0     # all or nothing


@pytest.mark.parametrize("value", [
    "NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", '"1.5"', '""', "true", "false",
    "[1.0]", '{"v": 1}', "1e13", "-2e12", "1" + "0" * 400, "-" + "9" * 4000, "1" * 5000],
    ids=lambda v: v if len(v) < 12 else f"{len(v)}-digit int")
def test_observe_rejects_values_that_are_not_finite_numbers(client, value):
    body = '{"rows": [{"smiles": "CCO", "logS": %s}]}' % value
    r = client.post("/observe", content=body, headers={**auth(), "content-type":
                                                       "application/json"})
    assert r.status_code == 422, r.text
    assert _detail(r)
    assert client.get("/status").json()["rows"]["observed"] == 0


def test_observe_accepts_values_up_to_the_limit(client):
    r = _observe(client, {"rows": [{"smiles": "CCO", "logS": MAX_VALUE},
                                   {"smiles": "CCC", "logS": -0.0}, {"smiles": "C", "logS": 3}]})
    assert r.status_code == 202 and r.json()["accepted"] == 3


@pytest.mark.parametrize("body", [
    {"rows": [{"smiles": "CCO"}]}, {"rows": [{"smiles": "CCO", "logS": None}]},
    {"rows": [{"logS": 1.0}]}, {"rows": [{"smiles": 5, "logS": 1.0}]},
    {"rows": [{"smiles": "", "logS": 1.0}]}, {"rows": ["CCO"]}, {"rows": "CCO"}, {"rows": None},
    {"row": []}, [], "rows", None])
def test_observe_rejects_malformed_rows(client, body):
    r = _observe(client, body)
    assert r.status_code == 422, r.text
    assert _detail(r)


@pytest.mark.parametrize("route,body", [
    ("/predict", '{"smiles": ["CCO", "C\\ud800"]}'),
    ("/observe", '{"rows": [{"smiles": "\\udfffC", "logS": 1.0}]}')])
def test_lone_surrogates_are_422_not_500(client, route, body):
    r = client.post(route, content=body, headers=auth())
    assert r.status_code == 422 and "Unicode" in _detail(r)
    assert client.get("/status").json()["rows"]["rejected"] == 0


# -- limits ---------------------------------------------------------------------------------
def test_too_many_molecules_is_413(make_client):
    client = make_client(Limits(max_molecules=5))
    assert client.post("/predict", json={"smiles": ["C"] * 5}).status_code == 200
    r = client.post("/predict", json={"smiles": ["C"] * 6})
    assert r.status_code == 413 and "5" in _detail(r)
    r = _observe(client, {"rows": rows(6)})
    assert r.status_code == 413 and _detail(r)


def test_body_over_the_limit_is_413(make_client):
    client = make_client(Limits(max_body_bytes=1000))
    small = json.dumps({"smiles": ["C" * 50] * 10}).encode()
    big = json.dumps({"smiles": ["C" * 50] * 30}).encode()
    assert len(small) < 1000 < len(big)
    assert client.post("/predict", content=small).status_code == 200

    for route in ("/predict", "/observe", "/training"):
        r = client.post(route, content=big, headers=auth())
        assert r.status_code == 413 and "1000" in _detail(r), (route, r.text)
        # without a Content-Length: streamed (chunked), counted while read
        r = client.post(route, content=iter([big[:600], big[600:]]), headers=auth())
        assert r.status_code == 413 and _detail(r), (route, r.text)


def test_smiles_over_the_limit_is_422(make_client):
    client = make_client(Limits(max_smiles_chars=40))
    ok, long = "C" * 40, "C" * 41
    assert client.post("/predict", json={"smiles": [ok]}).status_code == 200
    r = client.post("/predict", json={"smiles": ["CCO", long]})
    assert r.status_code == 422 and "smiles[1]" in _detail(r) and "40" in _detail(r)
    r = _observe(client, {"rows": [{"smiles": long, "logS": 1.0}]})
    assert r.status_code == 422 and "40" in _detail(r)
    r = client.get("/draw", params={"smiles": long})
    assert r.status_code == 422 and _detail(r)


# -- /status and /metrics -------------------------------------------------------------------
def test_status_counts_rows_and_the_version_grows(client):
    st = client.get("/status").json()
    assert st["rows"] == {"observed": 0, "folded": 0, "pending": 0, "rejected": 0, "pool": 0}
    assert st["error"] is None and st["training"] is True and st["prequential"]["n"] == 0
    version = st["model_version"]

    body = {"rows": rows(12) + [{"smiles": BAD, "logS": 0.0}]}
    assert _observe(client, body).json()["accepted"] == 12

    def settled():
        s = client.get("/status").json()
        return s if s["rows"]["folded"] == 12 and s["model_version"] > version else None

    st = wait_for(settled, timeout=30)
    assert st, client.get("/status").json()
    assert st["rows"] == {"observed": 12, "folded": 12, "pending": 0, "rejected": 1, "pool": 12}
    pre = st["prequential"]
    assert pre["metric"] == "rmse" and pre["n"] == 12
    assert math.isfinite(pre["last"]["logS"]) and pre["last"]["logS"] > 0
    assert st["instances_trained"] > 0 and st["molecules_trained"] >= 12
    assert st["error"] is None


def test_metrics_is_prometheus_text(client):
    client.post("/predict", json={"smiles": ["CCO"]})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE molpipe_model_version gauge" in text
    samples, declared = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:]
            assert kind in ("gauge", "counter"), line
            declared.add(name)
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            assert match.group(1) in declared, line
            samples.setdefault(match.group(1), []).append(float(match.group(4)))
    assert samples["molpipe_model_version"][0] >= 0
    assert samples["molpipe_training"] == [1.0]
    assert samples["molpipe_requests_total"] == [1.0]


# -- /snapshot ------------------------------------------------------------------------------
def test_snapshot_writes_a_model_predict_can_load(client):
    from molpipe.inference.predict import Predictor

    _observe(client, {"rows": rows(8)})
    assert wait_for(lambda: client.get("/status").json()["rows"]["folded"] == 8)
    client.post("/training", json={"running": False}, headers=auth())

    def version():
        return client.get("/status").json()["model_version"]

    def steady() -> bool:
        before = version()
        time.sleep(0.3)
        return version() == before

    assert wait_for(steady, every=0)
    r = client.post("/snapshot", headers=auth())

    assert r.status_code == 200, r.text
    snap = r.json()
    assert snap["snapshot"] == 1 and snap["rows_folded"] == 8
    out = client.model.out
    assert snap["model"] == str(out / "model")
    predictor = Predictor.load(out / "model")
    P, errors = predictor.predict(["CCO", BAD, "c1ccccc1O"])
    assert P.shape == (3, 1) and errors[0] == errors[2] == "" and errors[1]
    assert np.isfinite(P[[0, 2]]).all() and np.isnan(P[1]).all()

    served = client.post("/predict", json={"smiles": ["CCO", "c1ccccc1O"]}).json()
    assert served["model_version"] == snap["version"] > 0     # paused: no newer version
    live = [x["prediction"]["logS"] for x in served["results"]]
    np.testing.assert_allclose(P[[0, 2], 0], live, rtol=1e-4, atol=1e-5)


# -- /training ------------------------------------------------------------------------------
def test_training_pauses_and_resumes(make_client):
    client = make_client(replay_epochs=1_000_000)         # replays for as long as it runs
    _observe(client, {"rows": rows(6)})

    def trained() -> int:
        return client.get("/status").json()["instances_trained"]

    assert wait_for(lambda: trained() > 5), "training did not start"
    r = client.post("/training", json={"running": False}, headers=auth())
    assert r.status_code == 200 and r.json() == {"training": False}
    assert client.get("/status").json()["training"] is False

    def still() -> bool:                  # the instances in flight finish, then nothing
        before = trained()
        time.sleep(0.5)
        return trained() == before

    assert wait_for(still, timeout=20, every=0), "training went on while paused"
    paused = trained()
    time.sleep(1.0)
    assert trained() == paused
    answer = client.post("/predict", json={"smiles": ["CCO"]})   # predictions go on
    assert answer.status_code == 200 and answer.json()["results"][0]["prediction"]

    r = client.post("/training", json={"running": True}, headers=auth())
    assert r.status_code == 200 and r.json() == {"training": True}
    assert wait_for(lambda: trained() > paused + 3), "training did not resume"


@pytest.mark.parametrize("body", [{}, {"running": 1}, {"running": "false"}, {"running": None},
                                  [False], False])
def test_training_needs_a_boolean(client, body):
    r = client.post("/training", json=body, headers=auth())
    assert r.status_code == 422 and "running" in _detail(r)
    assert client.get("/status").json()["training"] is True


# -- docs and drawings ----------------------------------------------------------------------
def test_docs_and_openapi_are_served(client):
    assert client.get("/docs").status_code == 200
    r = client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "post" in paths["/predict"] and "post" in paths["/observe"]
    assert {"/status", "/metrics", "/snapshot", "/training", "/draw"} <= set(paths)


def test_draw_returns_svg(client):
    r = client.get("/draw", params={"smiles": "c1ccccc1O", "width": 300, "height": 200})
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in r.text and "</svg>" in r.text
    r = client.get("/draw", params={"smiles": BAD})
    assert r.status_code == 422 and BAD in _detail(r)


# -- the command line -----------------------------------------------------------------------
def test_serve_refuses_a_public_address_without_a_token(monkeypatch, tmp_path):
    import uvicorn
    from typer.testing import CliRunner

    from cli import app
    from molpipe.serve import build

    bound = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: bound.append((a, kw)))
    monkeypatch.setattr(build, "untrained", lambda *a, **kw: bound.append(a))
    monkeypatch.delenv("MOLPIPE_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--target", "x"])

    assert result.exit_code != 0
    assert "token" in result.output.lower()
    assert bound == [] and not (tmp_path / "runs").exists()


def test_observe_answers_429_and_keeps_nothing_when_too_many_rows_wait(client):
    client.model.set_training(False)
    client.model.max_pending = 2
    assert _observe(client, {"rows": rows(2)}).status_code == 202
    refused = _observe(client, {"rows": rows(1, 2)})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "retry later" in refused.json()["detail"]
    assert client.model.journal.last_seq == 2
    client.model.set_training(True)
