"""molpipe: graph neural networks on molecules, trained with asynchronous model-parallel pipelining."""

__version__ = "0.1.0"
