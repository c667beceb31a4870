"""The HTTP face of an ``OnlineModel``: FastAPI routes, served by uvicorn (``pip install
'molpipe[serve]'``).

Reads (``/predict``, ``/status``, ``/metrics``, ``/draw``, the page at ``/``) are open; writes
(``/observe``, ``/snapshot``, ``/training``) need ``Authorization: Bearer <token>`` when the
service has a token. Bodies are read by the app itself, with limits, so that every hostile
body gets a 4xx with a message: over ``max_body_bytes`` or ``max_molecules`` → 413; more
rows waiting to be trained on than the model's ``max_pending`` → 429 (nothing kept); not JSON,
NaN/Infinity, too deep, wrong types, unknown targets, SMILES over ``max_smiles_chars`` → 422. A
molecule that cannot be read gets its error inside a 200 answer; the others are answered.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from molpipe.serve.metrics import prometheus_text
from molpipe.serve.online import Busy, OnlineModel

#: largest absolute target value /observe accepts (a measurement, not an overflow)
MAX_VALUE = 1e12


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 << 20
    max_molecules: int = 10_000        # SMILES of one /predict, rows of one /observe
    max_smiles_chars: int = 2_000
    predict_timeout: float = 60.0


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


async def _body(request: Request, limits: Limits):
    """The request's JSON, read up to ``max_body_bytes``."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
        raise BadRequest(413, f"body of {size} bytes is over the limit of "
                              f"{limits.max_body_bytes} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.max_body_bytes:
            raise BadRequest(413, f"body is over the limit of {limits.max_body_bytes} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest(422, "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(422, f"body is not JSON: {err}") from None


def _not_unicode(s: str) -> bool:
    """True for a string with a lone surrogate (``"\\ud800"`` in JSON): not UTF-8."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _smiles_list(doc, limits: Limits) -> list[str]:
    if not isinstance(doc, dict) or "smiles" not in doc:
        raise BadRequest(422, 'expected {"smiles": ["CCO", ...]}')
    smiles = doc["smiles"]
    if isinstance(smiles, str):
        smiles = [smiles]
    if not isinstance(smiles, list):
        raise BadRequest(422, '"smiles" must be a list of strings')
    if len(smiles) > limits.max_molecules:
        raise BadRequest(413, f"{len(smiles)} molecules in one request, the limit is "
                              f"{limits.max_molecules}")
    for i, s in enumerate(smiles):
        if not isinstance(s, str):
            raise BadRequest(422, f"smiles[{i}] is a {type(s).__name__}, not a string")
        _check_smiles(s, f"smiles[{i}]", limits)
    return smiles


def _check_smiles(s: str, where: str, limits: Limits) -> None:
    if len(s) > limits.max_smiles_chars:
        raise BadRequest(422, f"{where} has {len(s)} characters, the limit is "
                              f"{limits.max_smiles_chars}")
    if _not_unicode(s):
        raise BadRequest(422, f"{where} is not valid Unicode (a lone surrogate)")


def _rows(doc, model: OnlineModel, limits: Limits) -> list[tuple[str, list]]:
    """``(smiles, values)`` of an /observe body; 4xx naming the row and key."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise BadRequest(422, 'expected {"rows": [{"smiles": "CCO", "<target>": 1.0}, ...]}')
    rows = doc["rows"]
    if len(rows) > limits.max_molecules:
        raise BadRequest(413, f"{len(rows)} rows in one request, the limit is "
                              f"{limits.max_molecules}")
    targets, out = model.targets, []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(422, f"rows[{i}] is a {type(row).__name__}, not an object")
        smiles = row.get("smiles")
        if not isinstance(smiles, str) or not smiles:
            raise BadRequest(422, f'rows[{i}] has no "smiles" string')
        _check_smiles(smiles, f"rows[{i}].smiles", limits)
        unknown = [k for k in row if k != "smiles" and k not in targets]
        if unknown:
            raise BadRequest(422, f"rows[{i}]: unknown target {str(unknown[0])[:80]!r}; the "
                                  f"model's targets are {', '.join(targets)}")
        values = []
        for t in targets:
            v = row.get(t)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise BadRequest(422, f"rows[{i}].{t} is a {type(v).__name__}, not a number")
            if v is not None and (abs(v) > MAX_VALUE or not math.isfinite(v)):  # big ints first
                raise BadRequest(422, f"rows[{i}].{t} = {v!r:.40} is not a finite number "
                                      f"within ±{MAX_VALUE:g}")
            if v is not None and model.task == "classification" and v not in (0, 1):
                raise BadRequest(422, f"rows[{i}].{t} = {v!r} is not a class label (0 or 1)")
            values.append(float("nan") if v is None else float(v))
        if all(math.isnan(v) for v in values):
            raise BadRequest(422, f"rows[{i}] has no value for any target "
                                  f"({', '.join(targets)})")
        out.append((smiles, values))
    return out


def predict_answer(model: OnlineModel, smiles: list[str], domain: bool, timeout: float) -> dict:
    """The /predict answer: per molecule its prediction per target or its error."""
    graphs, kept, errors = model.featurize(smiles)
    version, P = model.predict_graphs(graphs, timeout)
    similarity = reasons = None
    if domain and model.predictor.domain is not None:
        from molpipe.chem.featurize import parse_smiles

        mols = [parse_smiles(smiles[i]) for i in kept]
        similarity, reasons = model.predictor.domain.check(mols)
    results = []
    for i, s in enumerate(smiles):
        results.append({"smiles": s, "prediction": None, "uncertainty": None,
                        "error": errors[i] or None})
    for j, i in enumerate(kept):
        row = P[j]
        if not all(math.isfinite(v) for v in row):
            results[i]["error"] = "prediction is not finite"
            continue
        results[i]["prediction"] = dict(zip(model.targets, map(float, row)))
        if similarity is not None:
            results[i]["similarity"] = float(similarity[j])
            results[i]["in_domain"] = not reasons[j]
            results[i]["domain_note"] = reasons[j] or None
    return {"model_version": version, "task": model.task, "targets": model.targets,
            "results": results}


def draw_svg(smiles: str, width: int = 240, height: int = 180) -> str | None:
    """An RDKit drawing of ``smiles`` as SVG (None when it does not parse)."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    drawer.drawOptions().clearBackground = False
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def create_app(model: OnlineModel, token: str | None = None, limits: Limits = Limits(),
               stop_on_exit: bool = True) -> FastAPI:
    """The service's app around a started ``model`` (stopped, with a snapshot, on shutdown)."""

    @asynccontextmanager
    async def lifespan(app):
        yield
        if stop_on_exit:
            await run_in_threadpool(model.stop)

    app = FastAPI(title="molpipe", lifespan=lifespan,
                  description="Predictions from a model that learns while it serves.")

    def authorize(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise BadRequest(401, "this endpoint needs the header Authorization: Bearer <token>")

    @app.exception_handler(BadRequest)
    async def bad_request(request, exc: BadRequest):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def failure(request, exc: Exception):      # never dies on a request
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"},
                            status_code=500)

    def alive() -> None:
        if model.error is not None:
            raise BadRequest(503, f"the model's pipeline has stopped: {model.error}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return resources.files("molpipe.serve").joinpath("page.html").read_text("utf-8")

    @app.post("/predict", summary="Predict molecules from the current model",
              openapi_extra=_body_schema({"smiles": ["CCO", "c1ccccc1O"], "domain": False}))
    async def predict(request: Request):
        doc = await _body(request, limits)
        smiles = _smiles_list(doc, limits)
        alive()
        domain = bool(doc.get("domain", False))
        t0 = time.perf_counter()
        answer = await run_in_threadpool(predict_answer, model, smiles, domain,
                                         limits.predict_timeout)
        model.requests.add("predict", time.perf_counter() - t0, len(smiles))
        return answer

    @app.post("/observe", status_code=202, summary="Add measurements (journaled, then trained on)",
              openapi_extra=_body_schema({"rows": [{"smiles": "CCO", model.targets[0]: 1.0}]}))
    async def observe(request: Request):
        authorize(request)
        rows = _rows(await _body(request, limits), model, limits)
        alive()
        t0 = time.perf_counter()
        try:
            receipt = await run_in_threadpool(model.observe, rows)
        except Busy as err:                    # back-pressure: nothing was journaled
            return JSONResponse({"detail": str(err)}, status_code=429,
                                headers={"Retry-After": "1"})
        model.requests.add("observe", time.perf_counter() - t0, len(rows))
        return JSONResponse(receipt, status_code=202)

    @app.get("/status", summary="Model version, training progress, rows, metrics over time")
    def status():
        return model.status()

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    def metrics():
        return PlainTextResponse(prometheus_text(model.status()),
                                 media_type="text/plain; version=0.0.4")

    @app.post("/snapshot", summary="Write model/ and a checkpoint now")
    async def snapshot(request: Request):
        authorize(request)
        alive()
        return await run_in_threadpool(model.snapshot)

    @app.post("/training", summary="Pause or resume training (predictions go on)",
              openapi_extra=_body_schema({"running": False}))
    async def training(request: Request):
        authorize(request)
        doc = await _body(request, limits)
        if not isinstance(doc, dict) or not isinstance(doc.get("running"), bool):
            raise BadRequest(422, 'expected {"running": true} or {"running": false}')
        model.set_training(doc["running"])
        return {"training": model.training}

    @app.get("/draw", summary="An RDKit drawing of a molecule (SVG)")
    def draw(smiles: str, width: int = 240, height: int = 180):
        if len(smiles) > limits.max_smiles_chars:
            raise BadRequest(422, f"smiles has {len(smiles)} characters, the limit is "
                                  f"{limits.max_smiles_chars}")
        svg = draw_svg(smiles, max(50, min(width, 1000)), max(50, min(height, 1000)))
        if svg is None:
            raise BadRequest(422, f"cannot read SMILES {smiles[:80]!r}")
        return Response(svg, media_type="image/svg+xml")

    return app


def _body_schema(example: dict) -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object"}, "example": example}}}}
