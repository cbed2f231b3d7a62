"""Model resolution: hub ids, local directories, openai-whisper .pt files and synthetic checkpoints."""

from .resolve import ResolvedModel, resolve_model
from .sizes import SIZES, ModelDims, get_dims
from .synthetic import ensure_synthetic, is_synthetic

__all__ = ["ResolvedModel", "resolve_model", "SIZES", "ModelDims", "get_dims", "ensure_synthetic", "is_synthetic"]
