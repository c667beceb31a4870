"""Parameter deltas between data-parallel replicas: every stage sends its own change, no barrier.

Each replica (an MPI rank) trains its own copy of the network on its own share of the data.
A stage's optimizer steps when the stage's own accumulator says so (as in one pipeline);
``DeltaOptimizer`` then hands the change to ``DeltaExchange``, which every ``every`` steps of
that stage sends ``P - base`` (the stage's parameters minus what it last sent or received)
to every other replica with a non-blocking send; a float32 change travels as bfloat16, half
the bytes, with its rounding error kept in ``P - base`` for the next send (measured on 2
replicas of the QM9 model: the exchange moves 270 MB a replica an epoch at every = 1, and
its copies, not the numpy work, were most of its cost). The deltas peers sent are received
whenever one of its stages steps (an ``Improbe`` finds them and starts a non-blocking
receive; nothing waits for a peer, nor for a peer's bytes) and added to a
stage's parameters at that stage's own next step, where the worker's weight stash already
kept the weights that forwards awaiting their backward read (``apply``). An applied
delta moves ``base`` too, so a replica never sends back what it received: in exact arithmetic
every replica ends at the first parameters plus the sum of all replicas' sent deltas.
Optimizer state (Adam's moments) stays on its replica; only parameters travel.

``finish`` closes a run: the rest of every stage's change is sent, exact, with a ``done`` mark, and
the replica applies what its peers sent until every peer's ``done`` has arrived (the one
per-epoch exchange; the run itself never waits).
"""

from __future__ import annotations

import time

import numpy as np

from molpipe.kernels import delta
from molpipe.runtime import wire

TAG_DELTA, TAG_CTRL = 21, 22


class ReplicaStop(RuntimeError):
    """Rank 0 aborted the run, or a peer failed: raised inside a stage step to end the run."""


class DeltaExchange:
    """One replica's side of the exchange.

    ``link``: an ``mpi.Link``; ``peers``: the other replicas' ranks; ``stages``: name ->
    stage (those with parameters take part); ``every``: a stage sends after every ``every``
    of its steps (the staleness knob); ``on_ctrl(src, header, arrays)``: called in the
    worker thread for a control frame that arrives mid-run (it may raise ``ReplicaStop``);
    ``record``: keep the float64 sum of every delta sent (tests).
    """

    def __init__(self, link, peers: list[int], stages: dict, every: int = 1,
                 on_ctrl=None, record: bool = False):
        if every < 1:
            raise ValueError(f"exchange every must be >= 1, got {every}")
        self.link, self.peers, self.every = link, list(peers), every
        self.params = {s: st.params for s, st in stages.items() if st.params}
        self._half = {s: {k for k, p in ps.items()
                          if p.dtype == np.float32 and p.flags.c_contiguous}
                      for s, ps in self.params.items()}
        self.on_ctrl, self.record = on_ctrl, record
        self.run_id, self.gen = 0, 0
        self.base: dict = {}
        self.sent_sum = {s: {k: np.zeros(p.shape) for k, p in ps.items()}
                         for s, ps in self.params.items()} if record else {}
        self.stats = {"frames_sent": 0, "bytes_sent": 0, "frames_applied": 0, "send_seconds": 0.0,
                      "recv_seconds": 0.0, "apply_seconds": 0.0}
        self._steps: dict[str, int] = {}
        self._pending: dict[str, list] = {}
        self._done: dict[int, int] = {}
        self._got: dict[int, int] = {}
        self._n_sent = 0
        self._incoming: list = []           # (request, source, buffer): frames being received
        self._frames: dict = {}             # stage -> [(buffer, views, requests)] of this run

    # -- a run -------------------------------------------------------------------------------
    def begin(self, gen: int, run_id: int) -> None:
        """A new run: the parameters as they are now are what the peers hold too."""
        self.gen, self.run_id = gen, run_id
        self.base = {s: {k: p.copy() for k, p in ps.items()} for s, ps in self.params.items()}
        self._steps = {s: 0 for s in self.params}
        self._pending = {s: [] for s in self.params}
        self._done, self._got, self._n_sent = {}, {p: 0 for p in self.peers}, 0
        self._frames = {}

    def stepped(self, stage: str) -> None:
        """After ``stage``'s optimizer stepped: send its change every ``every`` steps."""
        if stage not in self.params:
            return
        self._steps[stage] += 1
        if self._steps[stage] % self.every == 0:
            self.send(stage)

    def send(self, stage: str, exact: bool = False) -> None:
        """Send ``stage``'s change since its last send (nothing without peers): float32
        parameters as bfloat16, their rounding error kept for the next send
        (``kernels.delta``); ``exact`` (a run's last send) or float64: as they are."""
        if not self.peers:
            return
        t0 = time.perf_counter()
        P, base = self.params[stage], self.base[stage]
        buf, D = self._frame(stage, exact)
        for k, p in P.items():                 # the change, written straight into the frame
            half = D[k].dtype == np.uint16     # bfloat16 bits
            if half:
                delta.encode(p.reshape(-1), base[k].reshape(-1), D[k])
            else:
                np.subtract(p, base[k], out=D[k])
                np.copyto(base[k], p)
            if self.record:
                self.sent_sum[stage][k] += delta.decode(D[k]).reshape(p.shape) if half else D[k]
        reqs = [self.link.send(peer, buf, TAG_DELTA) for peer in self.peers]
        if not exact:                          # (an exact frame goes once a run)
            self._frames.setdefault(stage, []).append((buf, D, reqs))
        self._n_sent += 1
        self.stats["frames_sent"] += len(self.peers)
        self.stats["bytes_sent"] += buf.nbytes * len(self.peers)
        self.stats["send_seconds"] += time.perf_counter() - t0

    def _frame(self, stage: str, exact: bool) -> tuple:
        """A frame for ``stage``'s delta: bfloat16 for its float32 parameters unless
        ``exact``; one of its earlier frames whose sends have all left (header and layout
        are the same within a run), else a new one."""
        frames = [] if exact else self._frames.get(stage, [])
        for i, (buf, D, reqs) in enumerate(frames):
            if all(r.Test() for r in reqs):
                del frames[i]
                return buf, D
        half = () if exact else self._half[stage]
        return wire.frame({"k": "delta", "g": self.gen, "e": self.run_id, "s": stage},
                          {k: (np.uint16, (p.size,)) if k in half else (p.dtype, p.shape)
                           for k, p in self.params[stage].items()})

    def poll(self) -> None:
        """Apply every delta waiting; hand control frames to ``on_ctrl`` (never blocks)."""
        link = self.link
        while True:
            got = link.poll(TAG_CTRL)
            if got is None:
                break
            if self.on_ctrl is not None:
                self.on_ctrl(*got)
        t0 = time.perf_counter()
        while (got := link.post(TAG_DELTA)) is not None:
            self._incoming.append(got)
        if self._incoming:                     # frames arrive while this replica computes
            still = []
            for req, src, buf in self._incoming:
                if req.Test():
                    self._take(src, *wire.unpack(buf))
                else:
                    still.append((req, src, buf))
            self._incoming = still
        self.stats["recv_seconds"] += time.perf_counter() - t0

    def _take(self, src: int, header: dict, arrays: dict) -> None:
        if header.get("g") != self.gen or header.get("e") != self.run_id:
            return                                   # a late frame of an earlier run
        if header["k"] == "done":
            self._done[src] = header["n"]
            return
        self._pending[header["s"]].append(arrays)
        self._got[src] += 1

    def apply(self, stage: str) -> None:
        """Add the peers' deltas of ``stage`` received so far to its parameters (and base).

        Called by the stage's own step, after the worker stashed the weights that forwards
        still waiting for their backward read: a peer's delta then changes the weights
        exactly where a local update does, and weight stashing covers both."""
        pending = self._pending.get(stage)
        if not pending:
            return
        t0 = time.perf_counter()
        P, base = self.params[stage], self.base[stage]
        for arrays in pending:
            for k, d in arrays.items():
                if d.dtype == np.uint16:       # bfloat16 bits
                    delta.add(P[k].reshape(-1), base[k].reshape(-1), d)
                else:
                    P[k] += d
                    base[k] += d
        self.stats["frames_applied"] += len(pending)
        pending.clear()
        self.stats["apply_seconds"] += time.perf_counter() - t0

    def finish(self, timeout: float, max_sleep: float = 2e-4) -> None:
        """Send every stage's unsent change and ``done``; apply the peers' deltas until every
        peer is done. ReplicaStop (from ``on_ctrl``) passes through; TimeoutError names the
        ranks not done after ``timeout`` seconds."""
        for stage, n in self._steps.items():
            if n:                              # the rest, exact: the replicas end as one
                self.send(stage, exact=True)
        buf = wire.pack({"k": "done", "g": self.gen, "e": self.run_id, "n": self._n_sent}, {})
        for peer in self.peers:
            self.link.send(peer, buf, TAG_DELTA)
        deadline, sleep = time.monotonic() + timeout, 0.0
        while not self.all_done():
            before = sum(self._got.values()) + len(self._done)
            self.poll()
            if sum(self._got.values()) + len(self._done) > before:
                sleep = 0.0
                continue
            if time.monotonic() > deadline:
                late = [p for p in self.peers if self._done.get(p) != self._got[p]]
                raise TimeoutError(f"MPI ranks {late} sent no end of run within {timeout:g} s")
            self.link._reap()
            sleep = min(max(2 * sleep, 1e-5), max_sleep)
            time.sleep(sleep)
        for stage in self.params:
            self.apply(stage)

    def discard(self, quiet: float = 0.05) -> int:
        """After an aborted run: drop the deltas still arriving until none came for ``quiet``
        seconds (so that no send is left unmatched when the job ends); how many."""
        n, last = 0, time.monotonic()
        for req, _, _ in self._incoming:      # receives already under way end first
            req.Wait()
            n += 1
        self._incoming = []
        while time.monotonic() - last < quiet:
            if self.link.poll(TAG_DELTA) is None:
                self.link._reap()
                time.sleep(1e-3)
            else:
                n, last = n + 1, time.monotonic()
        return n

    def all_done(self) -> bool:
        return all(self._done.get(p) == self._got[p] for p in self.peers)


class DeltaOptimizer:
    """A stage's optimizer whose steps reach the other replicas: before a step the peers'
    waiting deltas are applied, after it ``DeltaExchange.stepped``; anything else (``lr``,
    ``state_dict``, ...) is the wrapped optimizer's.

    ``momentum_power``: a momentum optimizer (Adam's ``beta1``) steps with ``beta1 **
    momentum_power``: R replicas each see every R-th update, so raising beta1 to the R
    keeps the momentum's memory in updates of the whole group where one replica's is
    (asynchrony adds momentum of its own: Mitliagkas et al. 2016); the stored ``beta1``
    (checkpoints, state) stays the setting's."""

    def __init__(self, optimizer, stage: str, exchange: DeltaExchange, momentum_power: int = 1):
        self.optimizer, self.stage, self.exchange = optimizer, stage, exchange
        self.momentum_power = momentum_power

    def step(self, grads, scale: float) -> None:
        self.exchange.poll()
        self.exchange.apply(self.stage)
        opt = self.optimizer
        if self.momentum_power != 1 and hasattr(opt, "beta1"):
            beta1 = opt.beta1
            opt.beta1 = beta1 ** self.momentum_power
            try:
                opt.step(grads, scale)
            finally:
                opt.beta1 = beta1
        else:
            opt.step(grads, scale)
        self.exchange.stepped(self.stage)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)
