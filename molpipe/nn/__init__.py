"""Stages of the network (parameters + forward/backward over kernels), losses, optimizers.

- ``network``: ``NetworkConfig``, ``build_network(config, d_v, d_e, n_targets, mean, std, seed)``
  -> ``Network`` (``stages``, ``route``, ``path``, ``forward_backward``, ``predict``,
  ``state_dict``/``load_state_dict``).
- stages, in path order: ``embed.EmbedStage``, ``propagate.PropagateStage`` (looped
  ``n_rounds`` times), ``rings.RingStage``, ``readout.ReadoutStage``, ``loss.LossStage``.
- ``optim``: ``Adam`` over one stage's parameters, ``step(grads, scale)``.
"""
