"""Synthetic non-speech for the hard long-form variant: digital silence, recorded-like noise, music-like tones.

Each maker takes a seeded ``numpy.random.Generator`` and a length in samples (16 kHz) and returns float64 samples
in [-1, 1] plus a ``detail`` dict saying how they were made (it goes into the file's sidecar). Same generator state,
same samples. A stretch is at most a minute (960 000 samples, 7.7 MB as float64), so each is made whole.

- silence: every sample 0 (what a muted input, a gap in a stream or a silenced ad break gives);
- noise: Gaussian noise coloured 1/f^alpha (alpha drawn in 0.8-2: pink to brown, like room, fan or traffic
  rumble), rolled off above 6 kHz like a microphone, its level drifting slowly (a cosine-interpolated random walk
  of +-6 dB every ~2 s), with mains hum (50 or 60 Hz and four harmonics) in about half of them; drawn level
  -45 to -33 dBFS RMS, 5-15 dB under LibriSpeech's speech (its files are -29.5 dBFS RMS, median);
- music: a four-chord progression in a drawn key and tempo (72-140 bpm), each chord a triad of harmonic tones
  (six partials decaying 0.6 per partial, none above 7.5 kHz) struck on every beat with a drawn decay, a bass note
  on beats 1 and 3 and a short noise tick on each off-beat; drawn level -34 to -26 dBFS RMS, as loud as speech.

Noise and music fade in and out over 50 ms so that no click marks their edges.
"""

from __future__ import annotations

import numpy as np

from ..constants import SAMPLE_RATE

FADE_S = 0.05
NOISE_DBFS = (-45.0, -33.0)
MUSIC_DBFS = (-34.0, -26.0)
_PARTIALS = 6
_NYQUIST_GUARD = 7500.0
# chord roots in semitones above the key and whether the triad is minor: I-V-vi-IV, I-IV-V-I, vi-IV-I-V, ii-V-I-vi
PROGRESSIONS = (((0, False), (7, False), (9, True), (5, False)),
                ((0, False), (5, False), (7, False), (0, False)),
                ((9, True), (5, False), (0, False), (7, False)),
                ((2, True), (7, False), (0, False), (9, True)))


def _scaled(x: np.ndarray, dbfs: float) -> np.ndarray:
    """``x`` at an RMS of ``dbfs``, faded in and out, clipped to [-1, 1]."""
    rms = float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0
    if rms > 0:
        x = x * (10 ** (dbfs / 20) / rms)
    fade = min(int(FADE_S * SAMPLE_RATE), x.size // 2)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    return np.clip(x, -1.0, 1.0)


def silence(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    return np.zeros(n), {"level_dbfs": None}


def _drift(rng: np.random.Generator, n: int, step_s: float = 2.0, depth_db: float = 6.0) -> np.ndarray:
    """A gain that wanders slowly: random dB values ``step_s`` apart, cosine-interpolated between."""
    points = int(np.ceil(n / (step_s * SAMPLE_RATE))) + 1
    db = rng.uniform(-depth_db, depth_db, points)
    pos = np.arange(n) / (step_s * SAMPLE_RATE)
    i = np.minimum(pos.astype(np.int64), points - 2)
    frac = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return 10 ** ((db[i] * (1 - frac) + db[i + 1] * frac) / 20)


def noise(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    alpha = float(rng.uniform(0.8, 2.0))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    shape = np.maximum(f, 40.0) ** (-alpha / 2) / (1 + (f / 6000.0) ** 4)
    x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * shape, n)
    x /= max(float(np.sqrt(np.mean(x ** 2))), 1e-12)
    x *= _drift(rng, n)
    hum_hz = int(rng.choice([50, 60])) if rng.random() < 0.5 else None
    if hum_hz:
        t = np.arange(n) / SAMPLE_RATE
        hum = sum(a * np.sin(2 * np.pi * hum_hz * k * t) for k, a in enumerate((1, .5, .35, .2, .1), 1))
        x += hum / np.sqrt(np.mean(hum ** 2)) * 10 ** (rng.uniform(-12, -6) / 20)
    level = float(rng.uniform(*NOISE_DBFS))
    return _scaled(x, level), {"level_dbfs": round(level, 2), "alpha": round(alpha, 3), "hum_hz": hum_hz}


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _tone(hz: float, t: np.ndarray) -> np.ndarray:
    out = np.zeros_like(t)
    for k in range(1, _PARTIALS + 1):
        if hz * k < _NYQUIST_GUARD:
            out += 0.6 ** (k - 1) * np.sin(2 * np.pi * hz * k * t)
    return out


def music(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    bpm = float(rng.uniform(72, 140))
    key = int(rng.integers(45, 57))  # A2..G#3
    prog = int(rng.integers(len(PROGRESSIONS)))
    decay = float(rng.uniform(0.15, 0.45))  # seconds
    beat = int(round(60 / bpm * SAMPLE_RATE))
    out = np.zeros(n)
    attack, release, tick = int(0.008 * SAMPLE_RATE), int(0.015 * SAMPLE_RATE), int(0.03 * SAMPLE_RATE)
    for b, start in enumerate(range(0, n, beat)):
        length = min(beat, n - start)
        t = np.arange(length) / SAMPLE_RATE
        root, minor = PROGRESSIONS[prog][(b // 4) % 4]
        chord = sum(_tone(_midi_hz(key + 12 + root + step), t) for step in (0, 3 if minor else 4, 7))
        if b % 4 in (0, 2):
            chord = chord + 1.5 * _tone(_midi_hz(key + root - 12), t)
        env = np.exp(-t / decay)
        env[:attack] *= np.linspace(0, 1, attack)[:length]
        if length > release:
            env[-release:] *= np.linspace(1, 0, release)  # silent by the next beat: no click at the boundary
        seg = chord * env
        half = beat // 2
        if length > half + tick:
            seg[half:half + tick] += 2.0 * rng.standard_normal(tick) * np.exp(-np.arange(tick) / (0.006 * SAMPLE_RATE))
        out[start:start + length] = seg
    level = float(rng.uniform(*MUSIC_DBFS))
    return _scaled(out, level), {"level_dbfs": round(level, 2), "bpm": round(bpm, 2), "key_midi": key,
                                 "progression": prog, "decay_s": round(decay, 3)}


MAKERS = {"silence": silence, "noise": noise, "music": music}
