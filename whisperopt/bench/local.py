"""The local executor: every worker step in a subprocess on this machine, one recipe after another (see
``steps`` for the steps, ``distributed`` for the same steps on a Ray cluster); a build whose artifact is already in
the cache, intact, is answered here without one (``worker.cached_build``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..recipes import Recipe
from .records import WorkerResult
from .results import read_rows, recipe_paths
from .steps import Executor, Outcome, RecipeRun, run_worker, worker_env
from .worker import WorkerJob, cached_build


class LocalExecutor(Executor):
    """Builds and runs each recipe in its own worker process here, with ``--threads`` threads."""

    def start(self) -> None:
        self.env = worker_env(self.cfg.threads)

    def build(self, jobs: list[tuple[Recipe, WorkerJob]]) -> Iterator[tuple[Recipe, WorkerResult]]:
        for recipe, job in jobs:
            self.log(f"build {recipe.name} ...")
            built = cached_build(job) or run_worker("build", job, recipe_paths(self.out_dir, recipe.name)["log"],
                                                    self.env)
            if built.get("ok"):
                for note in built.get("notes", []):
                    self.log(f"      {note}")
                how = "cached" if built["cache_hit"] else f"built in {built['build_s']:.1f} s"
                self.log(f"      {recipe.name}: {how} -> {built['artifact_dir']}")
            yield recipe, built

    def measure(self, runs: Iterable[RecipeRun]) -> Iterator[Outcome]:
        for run in runs:
            def poll(run=run):
                if self.progress is not None:
                    self.progress.update(run.bar, completed=len(read_rows(run.paths["rows"])))

            result = run_worker("run", run.worker_job(), run.paths["log"], self.env, poll)
            if not result.get("ok"):
                self.log(f"fail  {run.recipe.name}: {result['error']}")
            yield Outcome(run, result)
