"""Numerical fidelity of a recipe against the torch-fp32 reference on the same checkpoint and inputs.

* encoder error: relative L2 error ||E_recipe - E_ref|| / ||E_ref|| of the encoder's last hidden state
* teacher-forced agreement: the decoder is fed the reference transcript's tokens; the share of positions where the
  recipe's top-1 next token equals the reference model's top-1 next token
"""

from __future__ import annotations

import numpy as np


def relative_l2(reference: np.ndarray, other: np.ndarray) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs {other.shape}")
    denom = np.linalg.norm(reference)
    return float(np.linalg.norm(other - reference) / denom) if denom > 0 else float(np.linalg.norm(other))


def top1_agreement(reference: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    """(matching positions, positions)."""
    reference = np.asarray(reference)
    other = np.asarray(other)
    if reference.shape != other.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs {other.shape}")
    return int((reference == other).sum()), int(reference.size)


def summarise(encoder_errors: list[float], matches: int, positions: int) -> dict:
    return {
        "encoder_rel_error": float(np.mean(encoder_errors)) if encoder_errors else None,
        "encoder_rel_error_max": float(np.max(encoder_errors)) if encoder_errors else None,
        "teacher_forced_agreement": matches / positions if positions else None,
        "teacher_forced_positions": positions,
    }
