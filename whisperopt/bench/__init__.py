"""Benchmark runner: every recipe in its own process, results as rows on disk."""

from .config import BenchConfig
from .runner import run_bench

__all__ = ["BenchConfig", "run_bench"]
