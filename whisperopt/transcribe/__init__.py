"""Transcription of real audio: segments, output writers."""
