"""Whisper's fixed sizes, one home for every layer (as openai-whisper's ``audio.py`` keeps its own)."""

from __future__ import annotations

SAMPLE_RATE = 16000  # Hz, mono
CHUNK_LENGTH = 30  # seconds of audio per encoder window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480 000 samples per window
HOP_LENGTH = 160  # samples per log-mel frame
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 log-mel frames per window
N_TEXT_CTX = 448  # decoder positions: prompt + generated tokens of one window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 log-mel frames per second; the encoder halves them (conv stride 2)

# The adaptive encoder window (recipe option ``window``; data/features.py ``window_frames``): encode
# max(clip + WINDOW_MARGIN_S, floor) seconds, rounded up to whole seconds, instead of 30 s. ``window=auto`` uses
# WINDOW_AUTO_FLOOR_S. Both chosen on dev-clean (40 utterances, trained tiny.en and base, torch-fp32; never on
# test-clean): see benchmarks/window_sweep.py and README "Adaptive encoder window" for the figures.
WINDOW_FULL = "30"  # the option's default: today's behaviour, every clip in a full 30-s window
WINDOW_AUTO_FLOOR_S = 10
WINDOW_MARGIN_S = 1.0


def prompt_length(multilingual: bool) -> int:
    """Tokens of the forced prefix <|startoftranscript|>[<|lang|><|task|>]<|notimestamps|>."""
    return 4 if multilingual else 2

# the largest values a decode flag takes (bench and transcribe alike): beyond them a request is a typo, not a plan
MAX_CANDIDATES = 64  # beams or sampled candidates per window: each holds its own copy of the encoder output
MAX_BATCH = 64  # windows per engine call (32 minutes of audio)
MAX_NEW_TOKENS = N_TEXT_CTX - prompt_length(True)  # 444: the decoder's positions less the start tokens
