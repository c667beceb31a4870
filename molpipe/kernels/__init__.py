"""numba kernels: pure functions on arrays and scalars, each ``op_fwd`` beside its ``op_bwd``.

numba's ``np.dot`` calls scipy's BLAS; importing it here loads that library as soon as the
kernels are imported, so that a later ``threadpoolctl.threadpool_limits(1)`` (one BLAS thread
per worker) sees it and limits it. A BLAS library loaded after the limit was set keeps its
default thread count, which is ruinous on a busy machine (10-100x slower small matmuls).
``one_blas_thread()`` sets that limit; it finds the loaded libraries once per process, not
once per pipeline run (a scan of every loaded library: a few ms per epoch).
"""

from functools import lru_cache

import scipy.linalg.cython_blas  # noqa: F401  (see above)
from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _blas_libraries() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread():
    """Context manager (or, unused as one, a limit until ``.unregister()``): one thread for
    every BLAS library loaded when the kernels were imported."""
    return _blas_libraries().limit(limits=1)
