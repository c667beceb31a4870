"""Training: a run's settings, the session that builds it (data → split → scaling → network →
optimizers → engine), the epoch loop, the engines (reference, sync, async) and metrics."""
