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
# WINDOW_AUTO_FLOOR_S. Chosen on tuning data, never test-clean: the 10 dev-clean utterances with sound (30 of the
# 40 files in ../shared are digital silence) + the first 40 of train-clean-5 (3-16 s), ct2-int8, greedy; word
# errors of 1753 reference words, full window 64 (tiny.en) / 61 (base): no floor and a 1-s margin 750 / - (runaway
# repetition), floor 10 + 1 s 193 / - (one 15.2-s clip in a 17-s window repeats itself: +122), floor 10 + 3 s
# 70 / 57, floor 15 + 2 s 62 / 55, floor 12 + 3 s - / 56, floor 15 + 3 s - / 56, 2 x clip 62 / -. README "Adaptive
# encoder window"; benchmarks/window_sweep.py reproduces a sweep.
WINDOW_FULL = "30"  # the option's default: today's behaviour, every clip in a full 30-s window
WINDOW_AUTO_FLOOR_S = 15
WINDOW_MARGIN_S = 2.0


def prompt_length(multilingual: bool) -> int:
    """Tokens of the forced prefix <|startoftranscript|>[<|lang|><|task|>]<|notimestamps|>."""
    return 4 if multilingual else 2

# the largest values a decode flag takes (bench and transcribe alike): beyond them a request is a typo, not a plan
MAX_CANDIDATES = 64  # beams or sampled candidates per window: each holds its own copy of the encoder output
MAX_BATCH = 64  # windows per engine call (32 minutes of audio)
MAX_NEW_TOKENS = N_TEXT_CTX - prompt_length(True)  # 444: the decoder's positions less the start tokens
