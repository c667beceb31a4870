import numpy as np
import pytest

from molpipe.runtime.nonfinite import all_finite, first_nonfinite


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None])
def test_all_finite_agrees_with_numpy_wherever_the_bad_value_is(dtype, bad):
    rng = np.random.default_rng(0)
    for n in (1, 7, 4097):
        a = (rng.standard_normal(n) * 1e30).astype(dtype)
        a[rng.integers(n)] = np.finfo(dtype).max      # the largest finite value is finite
        if bad is not None:
            a[rng.integers(n)] = bad
        for view in (a, a.reshape(1, -1), a[::2]):
            assert all_finite(view) == bool(np.isfinite(view).all())


def test_all_finite_on_arrays_that_are_not_floats():
    assert all_finite(np.arange(5)) and all_finite(np.zeros(0, np.float32))


def test_first_nonfinite_skips_the_inputs_a_stage_passes_through():
    h = np.array([1.0, np.nan])
    out = {"H": h, "MX": np.ones(3)}
    assert first_nonfinite(out) == "H"
    assert first_nonfinite(out, {"H": h}) is None          # H was checked where it was made
    assert first_nonfinite(out, {"H": h.copy()}) == "H"    # a new array is checked
    out["MX"][1] = np.inf
    assert first_nonfinite(out, {"H": h}) == "MX"
