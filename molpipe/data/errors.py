"""DataError: a bad input file, reported as one clear line (file, column/row, what to do)."""


class DataError(Exception):
    """An input that cannot be read; ``str(err)`` names the file and what to do about it."""
