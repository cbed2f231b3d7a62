"""``whisperopt serve``: an OpenAI-compatible transcription server (FastAPI + uvicorn) with dynamic batching.

Names are imported on first use, so that ``serve.settings`` (the CLI's defaults) loads without the serve extra."""

from importlib import import_module

_HOMES = {"ServeSettings": "settings", "create_app": "app", "Batcher": "batcher", "QueuedRequest": "batcher",
          "QueueFull": "batcher", "serve": "server"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
