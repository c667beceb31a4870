"""A service's defaults, importable without the service (the CLI's options read them)."""

PUBLISH_EVERY = 0.5     # seconds of training between the versions predictions use
REPLAY_EPOCHS = 30      # epochs over the observed rows after the last new one
SNAPSHOT_EVERY = 60.0   # seconds between snapshots (model/ + checkpoint)
