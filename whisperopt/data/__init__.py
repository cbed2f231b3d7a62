"""Datasets and audio decoding."""

from .audio import SAMPLE_RATE, load_audio
from .datasets import Dataset, Utterance, load_dataset, load_librispeech_dir, load_manifest

__all__ = ["SAMPLE_RATE", "load_audio", "Dataset", "Utterance", "load_dataset", "load_librispeech_dir", "load_manifest"]
