"""The pipeline's defaults, in one place: the runtime's ``Pipeline``, the training engines and
a run's settings (``molpipe.training.settings.TrainConfig``, which ``molpipe train``,
``molpipe bench`` and ``molpipe simulate`` read) all take them from here."""

#: instances in flight at once (measured: benchmarks/README.md, the mak x muf sweep)
MAX_ACTIVE_KEYS = 4
#: instance gradients a worker gathers before it steps its optimizer
MIN_UPDATE_FREQUENCY = 1
#: seconds without any pipeline message before the run is declared stalled
STALL_TIMEOUT = 300.0
#: data-parallel replicas over MPI: a stage sends its parameter change every N of its updates
#: (measured on 2 QM9 replicas, a core each: 1.84x one replica at 2 against 1.70x at 1, and
#: ESOL reached validation RMSE 1.0 in 0.70x one replica's time at both: benchmarks/README.md)
EXCHANGE_EVERY = 2
