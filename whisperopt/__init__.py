"""whisperopt: build, benchmark and compare optimised variants of any Whisper checkpoint."""

__version__ = "0.1.0"
