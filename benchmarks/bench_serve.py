"""`molpipe serve` measured from outside: predictions under load, online learning, durability.

    python benchmarks/bench_serve.py [--quick] [--seconds 20] [--out benchmarks/results/serve.json]

Every server is a ``python cli.py serve ...`` subprocess (no shell: its pid is the server's)
on 127.0.0.1 and a free port; the clients are threads of this process speaking HTTP/1.1
with keep-alive (``http.client``). Every phase is bounded in requests and seconds, and
every subprocess is killed at the end, on error too.

1. Prediction under load, ``serve esol --epochs 1000`` (training all along): (a) 16 clients
   posting 64 distinct ESOL SMILES a request for ``--seconds``: molecules/s answered, latency
   p50/p99; (b) the same with training paused (POST /training); (c) training again, one
   client, one molecule a request, back to back: latency p50/p90/p99 and the training
   molecules/s meanwhile (``molecules_trained`` of /status over time); (d) ``molpipe train
   esol --epochs 5`` after it, in the same sitting: serving training / plain training.
2. Online learning, ``serve --target measured_log_solubility`` (untrained): ESOL rows in a
   seeded order, one POST /observe a row at ``--rate`` rows/s by the clock; /status every
   2 s. Prequential RMSE (last 200 rows) over time, when it first falls below 1.0.
3. Durability, ``serve --target ... --out DIR --snapshot-every S``: 4 clients post 1-8 rows
   a request while the server is SIGKILLed at ``--kills`` seeded random moments and
   restarted on the same DIR; after each restart every acknowledged seq must be in
   journal.jsonl with its SMILES; after a graceful stop (SIGINT) the last checkpoint's
   ``serve/folded`` must hold every journal seq exactly once. Exit status 1 if not. Each
   client posts every ``--observe-interval`` s, slow enough that rows are folded and
   checkpoints written between kills; ``flood`` repeats it with the clients back to back.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serve_harness import (CLI, EXTRA_ARGS, NETWORK_ERRORS, TARGET,  # noqa: E402
                                      Client, Server, esol_rows, pct, training_rate)


# -- 1. predictions under load -------------------------------------------------------------
def load(server: Server, smiles: list[str], clients: int, batch: int, seconds: float,
         max_requests: int) -> dict:
    """``clients`` threads posting ``batch`` SMILES a request (consecutive windows of the
    list, cycled) until ``seconds`` pass or ``max_requests`` are sent."""
    lock, counter = threading.Lock(), itertools.count()
    lat, tally = [], Counter()
    s0, ts0 = server.status(), time.perf_counter()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def worker() -> None:
        client = Client(server)
        while time.perf_counter() < deadline:
            r = next(counter)
            if r >= max_requests:
                break
            lo = r * batch
            body = {"smiles": [smiles[(lo + m) % len(smiles)] for m in range(batch)]}
            t = time.perf_counter()
            try:
                code, doc = client.call("POST", "/predict", body)
            except NETWORK_ERRORS:
                with lock:
                    tally["network_errors"] += 1
                continue
            dt = time.perf_counter() - t
            with lock:
                if code != 200:
                    tally[f"http_{code}"] += 1
                    continue
                lat.append(dt)
                ok = sum(1 for x in doc["results"] if x["prediction"] is not None)
                tally["answered"] += ok
                tally["molecule_errors"] += len(doc["results"]) - ok
                tally["versions"] = max(tally["versions"], doc["model_version"])
        client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    wall = time.perf_counter() - t0
    s1, ts1 = server.status(), time.perf_counter()
    return {"clients": clients, "batch": batch, "seconds": round(wall, 2),
            "requests": len(lat), "molecules_per_second": round(tally["answered"] / wall, 1),
            "requests_per_second": round(len(lat) / wall, 2), **pct(lat, (50, 90, 99)),
            "molecule_errors": tally["molecule_errors"],
            "network_errors": tally["network_errors"],
            "http_errors": {k: v for k, v in tally.items() if k.startswith("http_")},
            "training": s1["training"],
            "training_molecules_per_second": round(training_rate(s0, ts0, s1, ts1), 1),
            "model_versions": [s0["model_version"], s1["model_version"]]}


def phase_predict(args, tmp: Path) -> dict:
    smiles = sorted({s for s, _ in esol_rows()})
    server = Server(["esol", "--epochs", "1000", "--out", str(tmp / "p1")], tmp / "p1.log")
    server.start()
    ready, _ = server.wait_ready(until=lambda st: st["instances_trained"] > 0)
    out = {"command": "molpipe serve esol --epochs 1000", "seconds_to_training": round(ready, 2)}
    N, cap = args.seconds, args.max_requests
    idle0, ti0 = server.status(), time.perf_counter()
    time.sleep(min(N, 5.0))
    out["idle"] = {"training_molecules_per_second": round(
        training_rate(idle0, ti0, server.status(), time.perf_counter()), 1)}
    out["a_training"] = load(server, smiles, 16, 64, N, cap)
    ctl = Client(server)
    ctl.call("POST", "/training", {"running": False})
    time.sleep(1.0)                               # instances in flight finish
    out["b_paused"] = load(server, smiles, 16, 64, N, cap)
    ctl.call("POST", "/training", {"running": True})
    time.sleep(1.0)
    out["c_single"] = load(server, smiles, 1, 1, N, cap)
    out["server_requests"] = server.status()["requests"]
    server.cleanup()

    run = tmp / "train"
    t = time.perf_counter()
    subprocess.run([sys.executable, str(CLI), "train", "esol", "--epochs", str(args.train_epochs),
                    "--quiet", "--out", str(run)], cwd=REPO, check=True, timeout=900,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = json.loads((run / "report.json").read_text())
    plain = report["train_molecules_per_second"]
    out["d_train"] = {"command": f"molpipe train esol --epochs {args.train_epochs} --quiet",
                      "wall_seconds": round(time.perf_counter() - t, 1),
                      "train_molecules_per_second": round(plain, 1)}
    out["serving_over_train"] = {
        k: round(out[k]["training_molecules_per_second"] / plain, 3)
        for k in ("idle", "a_training", "c_single")}
    return out


# -- 2. online learning ---------------------------------------------------------------------
def phase_online(args, tmp: Path) -> dict:
    rows = esol_rows()
    order = np.random.default_rng(args.seed).permutation(len(rows))[:args.rows or None]
    server = Server(["--target", TARGET, "--out", str(tmp / "p2")], tmp / "p2.log")
    server.start()
    ready, _ = server.wait_ready()
    samples, stop = [], threading.Event()
    wall0 = time.time()
    t0 = time.perf_counter() + 0.5

    def sampler() -> None:
        client = Client(server, timeout=10.0)
        for k in itertools.count(1):
            if stop.wait(max(0.0, t0 + 2.0 * k - time.perf_counter())):
                return
            try:
                code, st = client.call("GET", "/status")
            except NETWORK_ERRORS:
                continue
            if code == 200:
                samples.append({"t": round(time.perf_counter() - t0, 2),
                                "observed": st["rows"]["observed"],
                                "folded": st["rows"]["folded"],
                                "rmse": st["prequential"]["last"][TARGET],
                                "molecules_trained": st["molecules_trained"]})

    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    client, lat, lags, failed = Client(server), [], [], 0
    s_begin, ts_begin = server.status(), time.perf_counter()
    for i, idx in enumerate(order):
        due = t0 + i / args.rate
        time.sleep(max(0.0, due - time.perf_counter()))
        t = time.perf_counter()
        lags.append(t - due)
        smiles, y = rows[idx]
        try:
            code, _ = client.call("POST", "/observe", {"rows": [{"smiles": smiles, TARGET: y}]})
            failed += code != 202
        except NETWORK_ERRORS:
            failed += 1
        lat.append(time.perf_counter() - t)
    t_end = time.perf_counter()
    s_end = server.status()
    settle = time.perf_counter() + 60.0
    while server.status()["rows"]["pending"] and time.perf_counter() < settle:
        time.sleep(0.2)
    stop.set()
    sampling.join(15)
    final = server.status()
    server.cleanup()

    curve = [{"rows": c["rows"], "t": round(c["t"] - wall0 - 0.5, 2),
              "rmse": c["error"][TARGET]} for c in final["prequential"]["curve"]]
    below = [c for c in curve if c["rmse"] is not None and c["rmse"] < 1.0]
    above = [c for c in curve if c["rmse"] is None or c["rmse"] >= 1.0]
    stays = [c for c in curve if not above or c["rows"] > above[-1]["rows"]]
    return {"command": f"molpipe serve --target {TARGET}", "rows": len(order),
            "rate": args.rate, "seconds_to_ready": round(ready, 2),
            "stream_seconds": round(t_end - t0, 2),
            "observe_latency": pct(lat, (50, 90, 99)),
            "max_lag_behind_clock_s": round(max(lags), 3), "failed": failed,
            "final_rmse_last200": final["prequential"]["last"][TARGET],
            "rmse_at_stream_end": s_end["prequential"]["last"][TARGET],
            "first_below_1": below[0] if below else None,
            "below_1_from": stays[0] if stays and below else None,
            "training_molecules_per_second": round(
                training_rate(s_begin, ts_begin, s_end, t_end), 1),
            "rows_end": final["rows"], "samples": samples, "curve": curve}


# -- 3. durability ------------------------------------------------------------------------
def read_journal(path: Path) -> tuple[dict[int, str], list[int]]:
    """{seq: smiles} and the seqs in file order; a torn last line (a write going on) is
    left out."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.split("\n")[:-1]                # the part after the last newline: torn
    order = []
    by_seq: dict[int, str] = {}
    for line in lines:
        doc = json.loads(line)
        order.append(doc["seq"])
        by_seq[doc["seq"]] = doc["smiles"]
    return by_seq, order


def newest_checkpoint(out_dir: Path) -> dict | None:
    """Name, version and rows folded of the checkpoint a restart resumes from."""
    from molpipe.io.checkpoint import CheckpointError, load_checkpoint

    try:
        state, arrays, path = load_checkpoint(out_dir)
    except CheckpointError:
        return None
    return {"name": path.name, "version": state["version"],
            "folded": int(arrays["serve/folded"].size)}


def check_acked(acked: dict[int, str], journal: dict[int, str]) -> dict:
    missing = [s for s in acked if s not in journal]
    wrong = [s for s in acked if s in journal and journal[s] != acked[s]]
    return {"acknowledged": len(acked), "journal_rows": len(journal),
            "missing": len(missing), "wrong_smiles": len(wrong),
            "examples": (missing + wrong)[:5]}


def phase_durability(args, tmp: Path, name: str = "durability", interval: float | None = None,
                     n_kills: int | None = None) -> dict:
    """Kill and restart under 4 clients, each posting a request every ``interval`` s (0:
    back to back); check the journal after every restart and the checkpoint at the end."""
    interval = args.observe_interval if interval is None else interval
    n_kills = args.kills if n_kills is None else n_kills
    rows = esol_rows()
    rng = np.random.default_rng(args.seed + 1)
    out_dir = tmp / name
    server = Server(["--target", TARGET, "--out", str(out_dir),
                     "--snapshot-every", str(args.snapshot_every)], tmp / f"{name}.log")
    lock, stop = threading.Lock(), threading.Event()
    acked: dict[int, str] = {}
    tally = Counter()
    deadline = time.perf_counter() + args.durability_seconds

    def poster(i: int) -> None:
        r = np.random.default_rng(args.seed + 100 + i)
        client = Client(server, timeout=30.0)
        due = time.perf_counter()
        while not stop.is_set() and time.perf_counter() < deadline:
            due += interval
            time.sleep(max(0.0, due - time.perf_counter()))
            with lock:
                if tally["rows_sent"] >= args.max_rows:
                    break
            batch = [rows[j] for j in r.integers(0, len(rows), int(r.integers(1, 9)))]
            body = {"rows": [{"smiles": s, TARGET: y} for s, y in batch]}
            with lock:
                tally["rows_sent"] += len(batch)
            try:
                code, doc = client.call("POST", "/observe", body)
            except NETWORK_ERRORS:
                with lock:
                    tally["network_errors"] += 1
                time.sleep(0.05)
                continue
            if code != 202:
                with lock:
                    tally[f"http_{code}"] += 1
                time.sleep(0.05)
                continue
            bad = {x["row"] for x in doc["rejected"]}
            kept = [s for j, (s, _) in enumerate(batch) if j not in bad]
            first, last = doc["seqs"] if doc["seqs"] else (1, 0)
            with lock:
                tally["receipts"] += 1
                if len(kept) != doc["accepted"] or last - first + 1 != doc["accepted"]:
                    tally["bad_receipts"] += 1
                for seq, s in zip(range(first, last + 1), kept):
                    tally["acked_twice"] += seq in acked
                    acked[seq] = s

    server.start()
    ready, _ = server.wait_ready()
    restarts, kills, refused = [], [], []
    threads = [threading.Thread(target=poster, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    for k in range(n_kills):
        wait = float(rng.uniform(*args.kill_window))
        time.sleep(wait)
        try:
            st = server.status()
            before = {"rows": st["rows"], "instances_trained": st["instances_trained"],
                      "snapshots": st["snapshots"], "in_flight": st["in_flight"]}
        except (RuntimeError, *NETWORK_ERRORS):
            before = None
        server.sigkill()
        with lock:
            n_acked = len(acked)
        kills.append({"after_s": round(wait, 2), "acknowledged": n_acked,
                      "status_before": before, "checkpoint": newest_checkpoint(out_dir)})
        server.start()
        try:
            seconds, st = server.wait_ready()
        except RuntimeError as err:
            # the one refusal seen so far: a kill inside the first checkpoint write leaves
            # only checkpoints/epoch-0001.tmp, which the restore takes for a checkpoint
            orphans = sorted((out_dir / "checkpoints").glob("epoch-*.tmp"))
            refused.append({"kill": k + 1, "error": str(err)[-400:],
                            "orphans": [o.name for o in orphans]})
            if not orphans or any(p.suffix != ".tmp"
                                  for p in (out_dir / "checkpoints").glob("epoch-*")):
                raise
            for o in orphans:                  # what an operator would do, then go on
                shutil.rmtree(o)
            print(f"  {name} restart {k + 1} REFUSED ({len(orphans)} orphaned .tmp checkpoint); "
                  "removed it and restarted", flush=True)
            server.start()
            seconds, st = server.wait_ready()
        with lock:
            seen = dict(acked)
        journal, order = read_journal(out_dir / "journal.jsonl")
        check = check_acked(seen, journal)
        restarts.append({"seconds_to_status": round(seconds, 2),
                         "rows_observed": st["rows"]["observed"],
                         "rows_folded_at_ready": st["rows"]["folded"],
                         "version_at_ready": st["model_version"], **check})
        print(f"  {name} restart {k + 1}: {seconds:.2f} s, {check['acknowledged']} acknowledged, "
              f"{check['journal_rows']} in the journal, {check['missing']} missing",
              flush=True)
    time.sleep(float(rng.uniform(*args.kill_window)))
    stop.set()
    for t in threads:
        t.join(60)
    settle = time.perf_counter() + 120.0
    pending = server.status()["rows"]["pending"]
    while pending and time.perf_counter() < settle:
        time.sleep(0.2)
        pending = server.status()["rows"]["pending"]
    code = server.interrupt()
    server.cleanup()

    from molpipe.io.checkpoint import load_checkpoint

    _, arrays, path = load_checkpoint(out_dir)
    folded = arrays["serve/folded"].tolist()
    journal, order = read_journal(out_dir / "journal.jsonl")
    counts = Counter(folded)
    dup = sorted(s for s, c in counts.items() if c > 1)
    missing_folded = sorted(s for s in journal if s not in counts)
    extra_folded = sorted(s for s in counts if s not in journal)
    final = check_acked(acked, journal)
    contiguous = order == list(range(1, len(order) + 1))
    result = {
        "command": f"molpipe serve --target {TARGET} --out DIR --snapshot-every "
                   f"{args.snapshot_every:g}",
        "clients": 4, "seconds_between_requests": interval,
        "kills_with_a_checkpoint": sum(x["checkpoint"] is not None for x in kills),
        "seconds_to_ready": round(ready, 2), "kills": kills, "restarts": restarts,
        "restart_seconds": [r["seconds_to_status"] for r in restarts],
        "restarts_refused": refused, "requests": dict(tally),
        "pending_at_sigint": pending, "exit_code_sigint": code,
        "checkpoint": path.name, "acknowledged": len(acked), "journal_rows": len(journal),
        "journal_contiguous": contiguous, "folded": len(folded),
        "folded_duplicates": len(dup), "journal_not_folded": len(missing_folded),
        "folded_not_in_journal": len(extra_folded),
        "acknowledged_missing": final["missing"], "acknowledged_wrong_smiles":
            final["wrong_smiles"],
        "examples": {"duplicates": dup[:10], "journal_not_folded": missing_folded[:10],
                     "folded_not_in_journal": extra_folded[:10]}}
    failures = [name for name, bad in (
        ("acknowledged row missing after a restart", any(r["missing"] or r["wrong_smiles"]
                                                         for r in restarts)),
        ("acknowledged row missing at the end", final["missing"] or final["wrong_smiles"]),
        ("journal seqs not 1..N in order", not contiguous),
        ("seq folded twice", dup), ("journal seq not folded", missing_folded),
        ("folded seq not in the journal", extra_folded),
        ("bad receipt", tally["bad_receipts"] or tally["acked_twice"]),
        ("graceful stop failed", code != 0),
        ("restart refused", refused)) if bad]
    result["failures"] = failures
    result["ok"] = not failures
    return result


# -- the run ------------------------------------------------------------------------------
def machine() -> dict:
    def git(*a):
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True,
                              text=True).stdout.strip()

    import numpy

    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "platform": platform.platform(), "molpipe_commit": git("rev-parse", "HEAD"),
            "modified": git("status", "--porcelain", "--", "molpipe").splitlines(),
            "loadavg_start": os.getloadavg()}


def summary(res: dict) -> None:
    rows = []
    p = res.get("predict")
    if p:
        for k, name in (("a_training", "predict 16x64, training"),
                        ("b_paused", "predict 16x64, paused")):
            x = p[k]
            rows.append((name, f"{x['molecules_per_second']:,.0f} mol/s · p50 {x['p50_ms']} ms"
                               f" · p99 {x['p99_ms']} ms · training "
                               f"{x['training_molecules_per_second']:,.0f} mol/s"))
        x = p["c_single"]
        rows.append(("predict 1x1, training", f"p50 {x['p50_ms']} · p90 {x['p90_ms']} · p99 "
                                              f"{x['p99_ms']} ms · {x['requests_per_second']}"
                                              f" req/s"))
        r = p["serving_over_train"]
        idle, plain = (p["idle"]["training_molecules_per_second"],
                       p["d_train"]["train_molecules_per_second"])
        rows.append(("training mol/s", f"idle {idle:,.0f} · during 1x1 "
                                       f"{x['training_molecules_per_second']:,.0f} · "
                                       f"molpipe train {plain:,.0f}"))
        rows.append(("serving / train", f"idle {r['idle']} · 16x64 {r['a_training']} · "
                                        f"1x1 {r['c_single']}"))
    o = res.get("online")
    if o:
        f1 = o["first_below_1"]
        rows.append(("online RMSE last 200", f"final {o['final_rmse_last200']:.3f} · first < 1.0 "
                     + (f"at {f1['t']} s, row {f1['rows']}" if f1 else "never")
                     + f" · training {o['training_molecules_per_second']:,.0f} mol/s"))
    for name in ("durability", "flood"):
        d = res.get(name)
        if not d:
            continue
        rows.append((name, f"{'OK' if d['ok'] else 'FAILED'} · {len(d['restarts'])} restarts "
                           f"({len(d['restarts_refused'])} refused, "
                           f"{d['kills_with_a_checkpoint']} from a checkpoint) · acked "
                           f"{d['acknowledged']} · journal {d['journal_rows']} · folded "
                           f"{d['folded']} · dup {d['folded_duplicates']} · missing "
                           f"{d['journal_not_folded'] + d['acknowledged_missing']}"))
        rs = d["restart_seconds"]
        if rs:
            rows.append(("  restart to /status", f"median {np.median(rs):.2f} s · max "
                                                 f"{max(rs):.2f} s · journal at the last "
                                                 f"{d['restarts'][-1]['journal_rows']} rows"))
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:{width}s}  {b}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run of every phase")
    ap.add_argument("--serve-args", default="",
                    help="more options of every molpipe serve, e.g. '--featurize-jobs 0'")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of each load test")
    ap.add_argument("--rate", type=float, default=20.0, help="rows/s streamed to /observe")
    ap.add_argument("--rows", type=int, default=0, help="rows to stream (0: all of ESOL)")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--snapshot-every", type=float, default=2.0,
                    help="the durability server's --snapshot-every (checkpoints between kills)")
    ap.add_argument("--observe-interval", type=float, default=0.25,
                    help="durability: seconds between one client's requests (0: back to back)")
    ap.add_argument("--flood-kills", type=int, default=4,
                    help="flood: the durability test with clients back to back, this many kills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phases", default="predict,online,durability,flood")
    ap.add_argument("--keep", action="store_true", help="keep the servers' directories")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/serve.json")
    args = ap.parse_args(argv)
    EXTRA_ARGS[:] = shlex.split(args.serve_args)
    args.max_requests, args.max_rows, args.train_epochs = 200_000, 500_000, 5
    args.kill_window, args.durability_seconds = (1.0, 6.0), 900.0
    if args.quick:
        args.seconds, args.rows, args.kills = min(args.seconds, 3.0), args.rows or 60, 3
        args.flood_kills = min(args.flood_kills, 2)
        args.kill_window, args.train_epochs = (0.5, 2.0), 2

    tmp = Path(tempfile.mkdtemp(prefix="molpipe-serve-bench-"))
    res: dict = {"machine": machine(), "quick": args.quick,
                 "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    res["settings"]["kill_window"] = list(args.kill_window)
    phases = {"predict": phase_predict, "online": phase_online,
              "durability": phase_durability,
              "flood": lambda a, t: phase_durability(a, t, "flood", 0.0, a.flood_kills)}
    try:
        for name in args.phases.split(","):
            print(f"{name} ...", flush=True)
            t = time.perf_counter()
            res[name] = phases[name](args, tmp)
            res[name]["phase_seconds"] = round(time.perf_counter() - t, 1)
            res[name]["loadavg_end"] = os.getloadavg()
    finally:
        for s in Server.all:
            s.cleanup()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    res["settings"]["out"] = str(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    summary(res)
    failed = [f"{name}: {'; '.join(res[name]['failures'])}" for name in ("durability", "flood")
              if name in res and not res[name]["ok"]]
    for line in failed:
        print(f"durability check FAILED, {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
