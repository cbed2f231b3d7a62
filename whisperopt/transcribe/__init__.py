"""Transcription of real audio: long-form decoding with any recipe, segments, output writers."""

from .longform import Transcriber, transcribe
from .options import MODES, TranscribeOptions, TranscriptionInfo
from .result import Segment, TranscriptResult
from .segments import Vocabulary, compression_ratio, split_window
from .writers import FORMATS, write_outputs

__all__ = ["FORMATS", "MODES", "Segment", "TranscribeOptions", "Transcriber", "TranscriptResult", "TranscriptionInfo",
           "Vocabulary", "compression_ratio", "split_window", "transcribe", "write_outputs"]
