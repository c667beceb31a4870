"""Transfer: a run that starts from a trained model's parameters (``--from-model RUN_DIR``),
some of its stages frozen (``--freeze embed,message,update``).

What is copied and what is not:

- every parameter of the source model (read through ``molpipe.io.model.load_model``: its
  checksum and every array header checked, nothing unpickled) whose stage, name and shape
  the new network also has is copied into it, before the optimizers are made;
- the readout's last layer (``readout.W_2``, ``readout.b_2``: the head, one output per
  target) is copied only when the new run has the source's targets, by name and in order;
  for other targets it keeps the new network's fresh initialization (from ``--seed``);
- the loss stage's buffers (target mean and scale, the additive baseline) are never copied:
  they were fitted on the new training split before the network was built;
- an array the new network has in another shape or the source lacks (a ring stage the
  source did not have, another ``--aggregation``) keeps its fresh initialization; the
  report lists every such array.

The featurizer (version and atom / bond widths), the hidden size and the propagation kind
must match: otherwise no stage could be copied, and the error names both models' values.
A frozen stage gets no optimizer: the pipeline still runs its forward and backward (its
gradient is computed and dropped), its parameters stay as copied.
"""

from __future__ import annotations

from molpipe.io.model import ModelError, load_model

#: the readout's last layer: one column (and bias) per target
HEAD = ("readout.W_2", "readout.b_2")


def _check_compatible(source: dict, network, store, path: str) -> None:
    """ModelError naming both values when the source model cannot seed ``network``."""
    want = network.config
    pairs = [("featurizer version", source.get("featurizer_version"),
              store.meta.get("featurizer_version"), "rebuild one of them with this molpipe"),
             ("atom features", source["atom_dim"], store.atom_dim, "another featurizer"),
             ("bond features", source["bond_dim"], store.bond_dim, "another featurizer"),
             ("hidden size", source["network"]["hidden"], want.hidden,
              f"give --hidden {source['network']['hidden']}"),
             ("propagation", source["network"].get("propagate", "split"), want.propagate,
              f"give --propagate {source['network'].get('propagate', 'split')}")]
    for what, theirs, ours, fix in pairs:
        if theirs != ours:
            raise ModelError(f"--from-model {path}: its {what} is {theirs}, this run's "
                             f"{ours}; the parameters cannot be reused ({fix})")


def start_from(network, path: str, store, targets: list[str]) -> dict:
    """Copy ``path``'s parameters into ``network`` (see the module docstring); returns what
    was done, for report.json: the source's targets, and the arrays copied and kept fresh."""
    source_net, source = load_model(path)
    _check_compatible(source, network, store, path)
    same_targets = list(source["targets"]) == list(targets)
    theirs = source_net.state_dict()
    copied, fresh = [], []
    for name, stage in network.stages.items():
        for pname, arr in stage.params.items():
            key = f"{name}.{pname}"
            src = theirs.get(key)
            if src is None or src.shape != arr.shape or (key in HEAD and not same_targets):
                fresh.append(key)
                continue
            arr[...] = src.astype(arr.dtype, copy=False)
            copied.append(key)
    if not copied:
        raise ModelError(f"--from-model {path}: no parameter of it fits this network")
    return {"path": str(path), "source_targets": list(source["targets"]),
            "head": "copied" if same_targets else "reinitialized",
            "copied": copied, "reinitialized": fresh}


def trainable_stages(network) -> list[str]:
    """The network's stages that have parameters (the ones ``--freeze`` may name)."""
    return [name for name, stage in network.stages.items() if stage.params]


def check_freeze(network, freeze) -> None:
    """ValueError listing the network's stages when ``freeze`` names one it lacks."""
    stages = trainable_stages(network)
    for name in freeze:
        if name not in stages:
            raise ValueError(f"--freeze {name!r}: this network has no stage {name!r} with "
                             f"parameters; its stages: {', '.join(stages)}")

