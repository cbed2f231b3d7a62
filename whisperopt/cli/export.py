"""``whisperopt export``: one benchmarked recipe as a self-contained directory with a model card (``export``)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
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
    ex.set_defaults(func=run)


def run(args) -> int:
    from ..export import check_repo_id, export_results, push_to_hub

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
