"""The one exception type the CLI turns into a one-line error message."""


class WhisperoptError(Exception):
    """A user-facing error: bad input, missing engine, unreachable download. Printed without a traceback."""


def first_line(exc: BaseException, default: str = "") -> str:
    """The first line of ``exc``'s message (an engine's can run to pages), or ``default`` when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else default


def described(exc: BaseException) -> str:
    """``Type: first line`` of an exception someone else's code raised (``Type`` alone when it says nothing)."""
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
