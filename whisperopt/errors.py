"""The one exception type the CLI turns into a one-line error message."""


class WhisperoptError(Exception):
    """A user-facing error: bad input, missing engine, unreachable download. Printed without a traceback."""
