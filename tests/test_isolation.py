"""tests/conftest.py keeps the suite out of the user's caches."""


def test_the_session_never_writes_the_users_cache(isolated_caches):
    """Stores are built under the session's temporary directory."""
    from pathlib import Path

    from molpipe.data.store import default_cache_root

    root = default_cache_root()
    assert root.is_relative_to(isolated_caches) and not root.is_relative_to(Path.home() / ".cache")
