"""numba kernels: each op_fwd beside its op_bwd; arrays in, arrays out."""
