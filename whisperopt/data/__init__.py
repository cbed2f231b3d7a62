"""Datasets and audio decoding."""

from .audio import SAMPLE_RATE, load_audio
from .datasets import Dataset, Utterance, has_sound, load_librispeech_dir, load_manifest
from .specs import load_dataset

__all__ = ["SAMPLE_RATE", "load_audio", "Dataset", "Utterance", "has_sound", "load_dataset", "load_librispeech_dir", "load_manifest"]
