"""Every test session gets its own caches: featurized stores (``MOLPIPE_CACHE``) and
matplotlib's config go under the session's temporary directory, never the user's
``~/.cache``. Run ``python -m pytest -q -m "not slow"`` to leave out the long end-to-end tests."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    saved = {k: os.environ.get(k) for k in ("MOLPIPE_CACHE", "MPLCONFIGDIR")}
    os.environ["MOLPIPE_CACHE"] = str(root / "molpipe")
    os.environ["MPLCONFIGDIR"] = str(root / "matplotlib")
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
