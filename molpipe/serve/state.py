"""A service's state across restarts: what a snapshot's checkpoint holds (``capture``, at a
drain point of the live pipeline), how a restart takes it back (``restore``), and the journal
rows it had not folded yet, which it folds again (``replay_journal``).

Each takes the ``OnlineModel`` whose state it is.
"""

from __future__ import annotations

import numpy as np

from molpipe.io.checkpoint import CheckpointError, checkpoints, load_checkpoint


def capture(model) -> dict:
    """The state at a drain point (loop thread): no training in flight, updates applied."""
    version = model.live.version
    served = {}
    for stage, (params, buffers) in model.live.published(version).items():
        served.update({f"{stage}.{k}": v for k, v in params.items()})
        served.update({f"{stage}.{k}": v for k, v in buffers.items()})
    arrays = {f"net/{s}.{k}": v.copy() for s, d in model._params.items() for k, v in d.items()}
    arrays.update({f"net/{s}.{k}": v.copy() for s, d in model._buffers.items()
                   for k, v in d.items()})
    scalars: dict = {}
    for name, opt in model.optimizers.items():
        for k, v in opt.state_dict().items():
            if isinstance(v, np.ndarray):
                arrays[f"opt/{name}/{k}"] = v
            else:
                scalars.setdefault(name, {})[k] = v
    arrays["serve/folded"] = np.array(model.folded, np.int64)
    state = {"version": version, "epochs": model.epochs,
             "epochs_since_new": model.epochs_since_new,
             "n_mols_trained": model.n_mols_trained, "history": list(model.history),
             "rng": model.rng.bit_generator.state, "fit_scaling": model.fit_scaling,
             "optimizers": scalars, "settings": model.settings,
             "journal_last_seq": model.journal.last_seq}
    return {"model": served, "arrays": arrays, "state": state}


def restore(model) -> None:
    """Continue from the newest checkpoint of ``out`` (none: a new service)."""
    if not checkpoints(model.out / "checkpoints"):   # (a kill inside the first one's write
        return                                        # leaves only its .tmp: a new start)
    state, arrays, path = load_checkpoint(model.out)   # CheckpointError if all damaged
    try:
        model.network.load_state_dict({k[4:]: v for k, v in arrays.items()
                                      if k.startswith("net/")})
        for name, opt in model.optimizers.items():
            prefix = f"opt/{name}/"
            opt.load_state_dict({**state["optimizers"].get(name, {}),
                                 **{k[len(prefix):]: v for k, v in arrays.items()
                                    if k.startswith(prefix)}})
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: does not fit this model ({err}); serve from "
                              "another --out directory") from None
    model.folded = arrays["serve/folded"].tolist()
    model.epochs, model.epochs_since_new = state["epochs"], state["epochs_since_new"]
    model._marked = model.epochs
    model.n_mols_trained, model.history = state["n_mols_trained"], state["history"]
    model.rng.bit_generator.state = state["rng"]
    model.fit_scaling = state["fit_scaling"]
    model._restored_version = int(state["version"])
    model.n_snapshots = int(path.name.split("-")[1])
    model.restored_from = str(path)

def replay_journal(model, chunk: int = 512) -> None:
    """Journal rows not folded before the restart are new again (first); the rows folded
    join the replay pool (then). Runs beside the service: a long journal does not keep it
    from answering."""
    done = set(model.folded)
    old, new = [], []
    for seq, smiles, y in model.journal.rows():
        (old if seq in done else new).append((seq, smiles, y))
    for lo in range(0, len(new), chunk):
        if model._stopping.is_set():
            return
        part = new[lo:lo + chunk]
        graphs, kept, _ = model.featurize([s for _, s, _ in part])
        if kept:
            model._submit([part[i][0] for i in kept], graphs,
                          np.array([part[i][2] for i in kept], np.float64))
    for lo in range(0, len(old), chunk):
        if model._stopping.is_set():
            return
        part = old[lo:lo + chunk]
        graphs, kept, _ = model.featurize([s for _, s, _ in part])
        model._add_to_pool(graphs, np.array([part[i][2] for i in kept]))
        model.live.wake()
