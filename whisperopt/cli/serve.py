"""``whisperopt serve``: an OpenAI-compatible transcription API (``serve``)."""

from __future__ import annotations

from ..constants import MAX_BATCH, MAX_CANDIDATES
from ..errors import WhisperoptError
from ..transcribe.packing import DEFAULT_GAP_S
from .common import (
    DEVICES,
    MODEL_HELP,
    RECIPE_HELP,
    THREADS_HELP,
    add_vad_args,
    check_threads,
    recipe_options,
    vad_values,
)


def add_parser(sub) -> None:
    from ..serve.settings import GRACE_S, UPLOAD_TIMEOUT_S

    sv = sub.add_parser("serve", help="serve an OpenAI-compatible transcription API (POST /v1/audio/transcriptions)",
                        description="OpenAI-compatible speech-to-text server (FastAPI + uvicorn): "
                        "/v1/audio/transcriptions, /v1/audio/translations, /v1/models, /health. Concurrent short "
                        "requests with the same options are decoded together (dynamic batching); a full queue "
                        "answers 503. Needs the serve extra.")
    sv.add_argument("--model", required=True, help=f"{MODEL_HELP}; also the model id clients send (whisper-1 is "
                    "accepted too)")
    sv.add_argument("--recipe", default=None, help=RECIPE_HELP)
    sv.add_argument("--model-id", default=None, help="the model id /v1/models lists and clients send (default: "
                    "--model as given)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                    "any other address needs an API key or --no-auth)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port, printed at start)")
    sv.add_argument("--device", default="auto", choices=DEVICES)
    sv.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    sv.add_argument("--option", action="append", default=[], help="recipe option key=value (repeatable)")
    sv.add_argument("--verify", action="store_true", help="check every file of the model (an export's whole folder, or "
                    "the cached artifact) against its sha256 digests before serving, not only sizes")
    sv.add_argument("--max-batch", type=int, default=8,
                    help=f"short clips (<= 30 s) decoded in one engine call, 1-{MAX_BATCH} (1: no batching)")
    sv.add_argument("--max-wait-ms", type=float, default=20.0,
                    help="how long the oldest waiting clip waits for others to batch with (default 20)")
    sv.add_argument("--max-queue", type=int, default=32,
                    help="requests in progress at once (uploading, waiting or decoding); more are answered 503 "
                    "(default 32)")
    sv.add_argument("--max-file-mb", type=float, default=25.0, help="upload size limit, 413 above (default 25)")
    sv.add_argument("--max-audio-s", type=float, default=3 * 3600.0,
                    help="audio duration limit in seconds, 400 above (default 10800)")
    sv.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/ (default: "
                    "$WHISPEROPT_API_KEY if set); an empty key is an error")
    sv.add_argument("--api-key-file", default=None, metavar="FILE",
                    help="the key from the first line of FILE (keeps it off the process list)")
    sv.add_argument("--no-auth", action="store_true",
                    help="serve without a key on a non-loopback --host (refused otherwise)")
    sv.add_argument("--docs", action="store_true",
                    help="serve /docs, /redoc and /openapi.json (behind the key); off by default")
    sv.add_argument("--upload-timeout", type=float, default=UPLOAD_TIMEOUT_S, metavar="SECONDS",
                    help=f"a request's body must arrive whole within this, else 408 (default {UPLOAD_TIMEOUT_S:g})")
    sv.add_argument("--grace", type=float, default=GRACE_S, metavar="SECONDS",
                    help=f"on SIGTERM / Ctrl-C, requests in flight get this long to finish before they are answered "
                    f"503; then exit 0 (default {GRACE_S:g})")
    sv.add_argument("--pack", action="store_true",
                    help="pack each batch's clips several to a 30-s window (silence between them), decoded with "
                    "timestamps and split back by timestamp: fewer encoder passes per batch")
    sv.add_argument("--pack-gap", type=float, default=DEFAULT_GAP_S, metavar="SECONDS",
                    help=f"with --pack: silence after each packed clip (default {DEFAULT_GAP_S:g})")
    sv.add_argument("--beam-size", type=int, default=1, help=f"beams at temperature 0, 1-{MAX_CANDIDATES} (default 1)")
    add_vad_args(sv, "of every request")
    sv.add_argument("--loop-repeats", type=int, default=None, metavar="N",
                    help="every request: a window whose text says one n-gram N times in a row is decoded again at the "
                    "next temperature, and still looping, cut after N-1 (as transcribe's; off by default)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                    help="uvicorn's log level (info: one access line per request)")
    sv.set_defaults(func=run)


def run(args) -> int:
    from ..metrics.hardware import resolve_device
    from ..recipes import model_recipe

    try:
        from ..serve import ServeSettings, serve
        from ..serve.settings import api_key
    except ImportError as exc:  # fastapi / uvicorn / python-multipart are the `serve` extra
        raise WhisperoptError(f"whisperopt serve needs the serve extra ({exc.name} is missing): "
                              "pip install 'whisperopt[serve]'") from None
    check_threads(args.threads)
    if not 0 <= args.port <= 65535:
        raise WhisperoptError(f"--port must be between 0 and 65535, got {args.port}")
    recipe = model_recipe(args.model, args.recipe)
    settings = ServeSettings(model_id=args.model_id or args.model, recipe=recipe.name, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_file_mb=args.max_file_mb,
                             max_audio_s=args.max_audio_s, api_key=api_key(args.api_key, args.api_key_file),
                             no_auth=args.no_auth, docs=args.docs, upload_timeout=args.upload_timeout,
                             grace=args.grace, beam_size=args.beam_size, pack=args.pack, pack_gap=args.pack_gap,
                             loop_repeats=args.loop_repeats, **vad_values(args))
    settings.check()  # a bad flag fails before the port is bound or the model loads
    serve(settings, args.model, recipe, host=args.host, port=args.port, device=resolve_device(args.device),
          threads=args.threads, recipe_options=recipe_options(args.option, [recipe]).get(recipe.name),
          log_level=args.log_level, verify=args.verify)
    return 0
