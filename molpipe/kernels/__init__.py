"""numba kernels: pure functions on arrays and scalars, each ``op_fwd`` beside its ``op_bwd``."""
