"""``whisperopt serve``: an OpenAI-compatible transcription server (FastAPI + uvicorn) with dynamic batching."""

from .app import ServeSettings, create_app
from .batcher import Batcher, Job, QueueFull
from .server import serve

__all__ = ["Batcher", "Job", "QueueFull", "ServeSettings", "create_app", "serve"]
