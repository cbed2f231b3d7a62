"""The one exception type the CLI turns into a one-line error message."""


class WhisperoptError(Exception):
    """A user-facing error: bad input, missing engine, unreachable download. Printed without a traceback."""


class RecipeUnavailable(WhisperoptError):
    """A recipe cannot run on this machine (engine not installed, device missing); it is reported as skipped."""
