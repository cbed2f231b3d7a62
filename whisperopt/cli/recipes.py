"""``whisperopt recipes``: every recipe and whether it can run here (a table, or JSON for scripts)."""

from __future__ import annotations

from .common import DEVICES, console


def add_parser(sub) -> None:
    rc = sub.add_parser("recipes", help="list recipes and whether they can run here")
    rc.add_argument("--device", default="auto", choices=DEVICES)
    rc.add_argument("--json", action="store_true", help="print a JSON list instead: each recipe's engine, description, "
                    "devices, availability here (and why not) and its options (name, default, choices)")
    rc.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from ..metrics.hardware import resolve_device
    from ..recipes import all_recipes, recipe_record

    device = resolve_device(args.device)
    if args.json:  # for scripts: only the JSON document on stdout
        import json

        print(json.dumps([recipe_record(r, device) for r in all_recipes().values()], indent=1, default=str))
        return 0
    table = Table(title=f"recipes (availability on {device})")
    for col in ("recipe", "engine", "available", "description"):
        table.add_column(col)
    for r in all_recipes().values():
        reason = r.unavailable_reason(device)
        table.add_row(r.name, r.engine, "yes" if not reason else f"no: {reason}", r.description)
    console().print(table)
    return 0
