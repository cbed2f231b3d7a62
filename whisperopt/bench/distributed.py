"""``whisperopt bench --ray``: the bench's steps (``steps``) run by ``RayExecutor``, their work spread over a Ray
cluster (``local.LocalExecutor`` runs the same worker processes here).

The work is Ray tasks, each holding ``--threads`` CPUs of one node (so no two timed tasks share cores):

* **build** — one per recipe and node, pinned to the node: the artifact is built (or found in that node's cache) by
  the same worker process as locally, with the same manifest and fidelity gate;
* **shard** — a recipe × a slice of the utterances still unmeasured: the same ``run`` worker process as locally; a
  Ray *streaming generator* that yields each row the moment the worker has written it, then the worker's resource
  slice and result;
* **final** — per recipe, after its shards: the fidelity probes and the throughput and packed passes, which need
  every row.

The driver appends each row to the same fsync'ed rows file as the local executor does, so a driver that dies loses no
row it had received and a re-run measures only the rest. A task whose worker process dies (SIGKILL, the node lost)
is retried by Ray; a streaming generator's retry replays its outputs and Ray drops those already delivered, and the
driver keeps one row per utterance id in any case. Every row names its node and CPU model (see ``report.summary``
for speed-ups across hardware).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from ..cluster import alive_nodes, connect, ray_error, ray_module, this_node
from ..errors import WhisperoptError
from ..recipes import Recipe
from .records import WorkerResult, failure
from .results import append_row, read_rows, recipe_paths
from .steps import Executor, Outcome, RecipeRun, merged_result, run_worker, worker_env
from .worker import WorkerJob

RETRIES = 3  # tries after the first, per task whose worker process died
DEFAULT_SHARD = 25  # utterances per task: fewer tasks cost less start-up, more spread the work wider
LOG_TAIL = 64 * 1024


class WorkerCrashed(RuntimeError):
    """A task's worker process died without a result: Ray runs the task again (``retry_exceptions``)."""


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-LOG_TAIL:].decode(errors="replace")


def _on_node(job: dict, model_spec: str, tmp: Path) -> tuple[WorkerJob, dict]:
    """This job on the node it runs on: the model resolved here (a hub id, size name, wheel or synthetic spec gives
    the same weights everywhere), worker settings for the task's CPUs."""
    from ..models import resolve_model

    job = WorkerJob.from_dict(job)
    model = resolve_model(model_spec)
    return replace(job, model_dir=str(model.path)), worker_env(job.threads)


def build_task(job: dict, model_spec: str) -> WorkerResult:
    """Build (or reuse) one recipe's artifact on this node. Returns the worker's build result and the node."""
    ray = ray_module()
    with tempfile.TemporaryDirectory(prefix="whisperopt-ray-build-") as tmp:
        node_job, env = _on_node(job, model_spec, Path(tmp))
        built = run_worker("build", node_job, Path(tmp) / "build.log", env)
        built["log"] = _tail(Path(tmp) / "build.log")
    built.update(node=this_node(ray), node_id=ray.get_runtime_context().get_node_id())
    return built


def shard_task(job: dict, model_spec: str, artifacts: dict, reference: bytes | None, rows: list[dict] | None):
    """Measure ``job.ids`` on this node (a streaming generator): yields {"row"} per utterance as the worker writes
    it, then {"slice"} (if it measured any), then {"result"}. ``rows``: the recipe's rows so far, for the final
    task, whose worker then measures nothing and runs the probes, throughput and packed passes only."""
    ray = ray_module()
    node, node_id = this_node(ray), ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory(prefix="whisperopt-ray-shard-") as tmp:
        tmp = Path(tmp)
        log = tmp / "run.log"
        job, env = _on_node(job, model_spec, tmp)
        artifact_dir = artifacts.get(node_id)
        if artifact_dir is None:  # a node that joined the cluster after the builds: build here first
            built = run_worker("build", job, log, env)
            if not built.get("ok"):
                raise WhisperoptError(f"build on node {node}: {built['error']}")
            artifact_dir = built["artifact_dir"]
        rows_path, slices_path, ref_path = tmp / "rows.jsonl", tmp / "slices.jsonl", tmp / "reference.npz"
        rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows or []))
        if reference is not None:
            ref_path.write_bytes(reference)
        job = replace(job, artifact_dir=artifact_dir, rows_path=str(rows_path), slices_path=str(slices_path),
                      reference_path=str(ref_path) if reference is not None else None, node=node)
        done: dict = {}
        worker = threading.Thread(target=lambda: done.update(result=run_worker("run", job, log, env)), daemon=True)
        worker.start()
        offset = rows_path.stat().st_size  # rows handed in are not streamed back
        while True:
            running = worker.is_alive()
            with open(rows_path, "rb") as f:
                f.seek(offset)
                data = f.read()
            whole = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next look
            offset += len(whole)
            for line in whole.splitlines():
                if line.strip():
                    yield {"row": json.loads(line)}
            if not running:
                break
            time.sleep(0.2)
        result = done["result"]
        if not result.get("ok"):
            if result.get("crashed"):
                raise WorkerCrashed(f"worker on node {node}: {result['error']}")
            raise WhisperoptError(f"node {node}: {result['error']}")
        for resource_slice in read_rows(slices_path, key=None):
            yield {"slice": resource_slice}
        yield {"result": result, "node": node, "log": _tail(log)}


def _append_log(path: Path, title: str, text: str) -> None:
    """A task's worker log, copied from its node into the recipe's log here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"\n=== {title} ===\n{text}")


def _shards(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _error(exc: BaseException) -> str:
    """One line for a task's failure (a Ray error wraps the task's own exception), at most 500 characters."""
    return ray_error(exc)[:500]


class _Recipe:
    """The driver's record of one recipe's distributed run."""

    def __init__(self, run: RecipeRun, artifacts: dict[str, str]):
        self.run = run
        self.artifacts = artifacts  # node id -> artifact directory there
        self.shards_left, self.errors, self.nodes = 0, [], set()
        self.results: list[WorkerResult] = []
        self.measured = len(run.done)
        self.final: WorkerResult | None = None
        self.seen: set[str] = set()  # utterance ids in its rows file

    def outcome(self) -> Outcome:
        result = failure(self.errors[0]) if self.errors else merged_result(self.results, self.final)
        return Outcome(self.run, result, {"ray": {"nodes": sorted(n for n in self.nodes if n),
                                                  "shards": len(self.results)}})


class RayExecutor(Executor):
    """The steps' builds and runs as Ray tasks on the cluster ``cfg.ray``: builds pinned to every node, runs as
    shards spread over the nodes, then a final task per recipe; results as the local executor's."""

    def start(self) -> None:
        cfg = self.cfg
        self.ray = connect(cfg.ray, self.log)
        gpus = 1 if cfg.device == "cuda" else 0
        self.nodes = alive_nodes(self.ray, cfg.threads, gpus)
        self.log(f"ray: {len(self.nodes)} node(s) with {cfg.threads} CPU(s) per task: "
                 + ", ".join(f"{n['name']} ({n['cpus']} CPUs)" for n in self.nodes))
        self.task = {"num_cpus": cfg.threads, "num_gpus": gpus}
        self.artifacts: dict[str, dict[str, str]] = {}  # recipe -> node id -> artifact directory there

    def build(self, jobs: list[tuple[Recipe, WorkerJob]]) -> Iterator[tuple[Recipe, WorkerResult]]:
        """On the first node, then on the others (a shared cache makes those hits)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        build_remote = self.ray.remote(build_task)
        builds: dict[str, dict[str, WorkerResult]] = {r.name: {} for r, _ in jobs}
        for wave in (self.nodes[:1], self.nodes[1:]):
            refs = {}
            for recipe, job in jobs:
                for node in wave:
                    strategy = NodeAffinitySchedulingStrategy(node["id"], soft=False)
                    ref = build_remote.options(**self.task, scheduling_strategy=strategy).remote(job.to_dict(),
                                                                                              self.cfg.model)
                    refs[ref] = (recipe, node)
            if refs:
                self.log(f"build {len(refs)} artifact(s) on {len(wave)} node(s) ...")
            for ref, (recipe, node) in refs.items():
                try:
                    built = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    built = failure(_error(exc), log="")
                builds[recipe.name][node["id"]] = built
                _append_log(recipe_paths(self.out_dir, recipe.name)["log"], f"build on node {node['name']}",
                            built.get("log", ""))
        for recipe, _ in jobs:
            failed = {nid: b for nid, b in builds[recipe.name].items() if not b.get("ok")}
            if failed:
                nid, b = next(iter(failed.items()))
                name = next(n["name"] for n in self.nodes if n["id"] == nid)
                yield recipe, {**b, "where": f"on node {name}"}
                continue
            first = builds[recipe.name][self.nodes[0]["id"]]
            hits = sum(b["cache_hit"] for b in builds[recipe.name].values())
            self.log(f"      {recipe.name}: built on {len(self.nodes) - hits} node(s), cached on {hits} -> "
                     f"{first['artifact_dir']}")
            self.artifacts[recipe.name] = {nid: b["artifact_dir"] for nid, b in builds[recipe.name].items()}
            yield recipe, first

    def measure(self, runs: Iterable[RecipeRun]) -> Iterator[Outcome]:
        """Every recipe's shards at once (Ray places them where CPUs are free); each recipe's final task when its
        shards are over. Rows are appended here, fsync'ed, as the tasks stream them."""
        runs = list(runs)
        if not runs:
            return
        ray, cfg = self.ray, self.cfg
        ref_path = runs[0].job.reference_path
        self.reference = ray.put(Path(ref_path).read_bytes()) \
            if cfg.fidelity_utterances and ref_path and Path(ref_path).exists() else None
        self.shard_remote = ray.remote(shard_task).options(**self.task, max_retries=RETRIES,
                                                            retry_exceptions=[WorkerCrashed],
                                                            scheduling_strategy="SPREAD")  # the nodes share the load
        size = cfg.shard_size or DEFAULT_SHARD
        state: dict = {}  # generator -> (recipe record, kind)
        pending, records = [], []
        for run in runs:
            rec = _Recipe(run, self.artifacts[run.recipe.name])
            job = {**run.job.to_dict(), "fidelity_utterances": 0, "throughput_batches": [], "pack_gap": None}
            todo = [i for i in run.wanted if i not in run.done]
            for ids in _shards(todo, size):
                gen = self.shard_remote.remote({**job, "ids": ids}, cfg.model, rec.artifacts, None, None)
                state[gen] = (rec, "shard")
                pending.append(gen)
                rec.shards_left += 1
            records.append(rec)
            if not todo:
                yield from self._shards_over(rec, state, pending)
        if pending:
            self.log(f"ray: {sum(r.shards_left for r in records)} shard task(s) of up to {size} utterances")
        yield from self._stream(state, pending)

    def _stream(self, state: dict, pending: list) -> Iterator[Outcome]:
        """Wait on the tasks' streams until all are over; yield each recipe's outcome as it ends."""
        ray, files = self.ray, {}
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for gen in ready:
                    rec, kind = state[gen]
                    try:
                        item = ray.get(next(gen))
                    except StopIteration:
                        if kind == "shard":
                            yield from self._shard_ended(rec, state, pending)
                        continue
                    except ray.exceptions.RayError as exc:  # failed after its retries; the other shards go on
                        rec.errors.append(_error(exc))
                        self.log(f"fail  {rec.run.recipe.name} ({kind} task): {rec.errors[-1]}")
                        if kind == "shard":
                            yield from self._shard_ended(rec, state, pending)
                        else:
                            yield rec.outcome()
                        continue
                    pending.append(gen)
                    if _take(item, rec, kind, files, self.progress) == "final":
                        yield rec.outcome()
        except BaseException:
            for gen in state:
                try:
                    ray.cancel(gen, force=True)
                except Exception:  # noqa: BLE001 - best effort: the job's end stops them anyway
                    pass
            raise
        finally:
            for f in files.values():
                f.close()

    def _shard_ended(self, rec: _Recipe, state: dict, pending: list) -> Iterator[Outcome]:
        rec.shards_left -= 1
        if rec.shards_left == 0:
            yield from self._shards_over(rec, state, pending)

    def _shards_over(self, rec: _Recipe, state: dict, pending: list) -> Iterator[Outcome]:
        """A recipe's shards are over: start its final task (probes, throughput, packed) if it needs one, else its
        outcome is known."""
        cfg = self.cfg
        if rec.errors or not (cfg.fidelity_utterances or cfg.throughput_batches or cfg.pack):
            yield rec.outcome()
            return
        job = {**rec.run.job.to_dict(), "ids": []}
        gen = self.shard_remote.remote(job, cfg.model, rec.artifacts, self.reference, read_rows(rec.run.paths["rows"]))
        state[gen] = (rec, "final")
        pending.append(gen)


def _take(item: dict, rec: _Recipe, kind: str, files: dict, progress) -> str | None:
    """One streamed output of a task: a row (appended, fsync'ed, once per utterance), a resource slice, or a result.
    Returns "final" when it was the final task's result (the recipe's outcome is then known)."""
    run = rec.run
    name = run.recipe.name
    if "row" in item:
        if name not in files:  # opened at its first row, kept open; RayExecutor._stream closes it
            rec.seen = {r["id"] for r in read_rows(run.paths["rows"])}
            files[name] = open(run.paths["rows"], "a", encoding="utf-8")  # noqa: SIM115
        row = item["row"]
        if row.get("id") in rec.seen:  # a retried task's replay; Ray normally drops these itself
            return None
        append_row(files[name], row)
        rec.seen.add(row["id"])
        rec.measured += 1
        rec.nodes.add(row.get("node"))
        if progress is not None:
            progress.update(run.bar, completed=min(rec.measured, len(run.wanted)))
    elif "slice" in item:
        with open(run.paths["slices"], "a", encoding="utf-8") as f:
            append_row(f, item["slice"])
    elif "result" in item:
        _append_log(run.paths["log"], f"{kind} task on node {item['node']}", item["log"])
        if kind == "final":
            rec.final = item["result"]
            return "final"
        rec.results.append(item["result"])
        rec.nodes.add(item["node"])
    return None
