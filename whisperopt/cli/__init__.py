"""Command line: one module per command, each its sub-parser (``add_parser``) and a ``run`` that checks the flags
and calls the layer that does the work (models, recipes, bench, transcribe, report, export, serve)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .. import __version__
from ..errors import WhisperoptError, described
from ..files import write_failure
from . import bench, build, export, models, recipes, report, serve, transcribe

COMMANDS = (bench, report, export, models, recipes, build, transcribe, serve)  # in `whisperopt --help`'s order


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whisperopt", description="Make Whisper fast and small on your hardware, and "
                                "measure what each optimisation costs.")
    p.add_argument("--version", action="version", version=f"whisperopt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # the program: SIGTERM and SIGHUP stop it like Ctrl-C (workers stopped, files whole, one line)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
    try:
        return args.func(args)
    except WhisperoptError as exc:
        print(f"whisperopt: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`whisperopt report | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        if argv is None:  # the program, not a library call: a second Ctrl-C must not turn this into a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        saved = " (completed utterances are saved; re-run the same command to resume)" if args.command == "bench" \
            else ""
        print(f"whisperopt: interrupted{saved}", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else (an engine's own error, a bug): one line; the traceback on request
        if os.environ.get("WHISPEROPT_TRACEBACK"):
            raise
        # a disk that filled up or turned read-only under a command says so
        err = write_failure(exc, Path(exc.filename).parent if getattr(exc, "filename", None) else None)
        if err is not None:
            print(f"whisperopt: error: {err}", file=sys.stderr)
            return 2
        print(f"whisperopt: error: {described(exc)} (unexpected; set WHISPEROPT_TRACEBACK=1 for the "
              "traceback)", file=sys.stderr)
        return 1


__all__ = ["build_parser", "main"]
