"""``whisperopt build``: recipe artifacts built (or cached ones checked) without a bench
(``recipes.artifacts.build_recipes``)."""

from __future__ import annotations

from ..errors import WhisperoptError
from .common import recipe_options, stderr_line


def add_parser(sub) -> None:
    bu = sub.add_parser("build", help="build (or reuse) recipe artifacts without benchmarking")
    bu.add_argument("--model", required=True)
    bu.add_argument("--recipes", required=True)
    bu.add_argument("--option", action="append", default=[])
    bu.add_argument("--rebuild", action="store_true", help="build again even if a cached artifact is intact (a "
                    "cached one is always checked against its recorded sizes and sha256 digests)")
    bu.set_defaults(func=run)


def run(args) -> int:
    from ..models import resolve_model
    from ..recipes import parse_recipe_list
    from ..recipes.artifacts import build_recipes

    model = resolve_model(args.model)
    if model.exported:
        raise WhisperoptError(f"{args.model} is a whisperopt export of {model.exported}: its artifact is built already; "
                              "use it with --model in transcribe, bench or serve")
    recipes = parse_recipe_list(args.recipes)
    build_recipes(recipes, model.path, recipe_options(args.option, recipes), rebuild=args.rebuild, log=print,
                  error=stderr_line)
    return 0
