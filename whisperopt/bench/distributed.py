"""``whisperopt bench --ray``: the local runner's benchmark, its work spread over a Ray cluster.

The work is Ray tasks, each holding ``--threads`` CPUs of one node (so no two timed tasks share cores):

* **build** — one per recipe and node, pinned to the node: the artifact is built (or found in that node's cache) by
  the same worker process as locally, with the same manifest and fidelity gate;
* **shard** — a recipe × a slice of the utterances still unmeasured: the same ``run`` worker process as locally; a
  Ray *streaming generator* that yields each row the moment the worker has written it, then the worker's resource
  segment and result;
* **final** — per recipe, after its shards: the fidelity probes and the throughput and packed passes, which need
  every row.

The driver appends each row to the same fsync'ed rows file as the local runner does, so a driver that dies loses no
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
from dataclasses import replace
from pathlib import Path

from ..cluster import alive_nodes, connect, ray_module, this_node
from ..errors import WhisperoptError
from ..files import atomic_write_json
from .results import append_row, read_rows, read_status, recipe_paths, repair_rows
from .worker import Job

RETRIES = 3  # tries after the first, per task whose worker process died
DEFAULT_SHARD = 25  # utterances per task: fewer tasks cost less start-up, more spread the work wider
LOG_TAIL = 64 * 1024
SEGMENT_KEYS = ("utterances", "resumed_from", "load_s", "load_peak_ram_mb", "peak_ram_mb", "run_ram_mb",
                "peak_vram_mb", "cpu_s", "wall_s")


class WorkerCrashed(RuntimeError):
    """A task's worker process died without a result: Ray runs the task again (``retry_exceptions``)."""


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-LOG_TAIL:].decode(errors="replace")


def _on_node(job: dict, model_spec: str, tmp: Path) -> tuple[Job, dict]:
    """This job on the node it runs on: the model resolved here (a hub id, size name, wheel or synthetic spec gives
    the same weights everywhere), worker settings for the task's CPUs."""
    from ..models import resolve_model
    from .runner import worker_env

    job = Job.from_dict(job)
    model = resolve_model(model_spec)
    return replace(job, model_dir=str(model.path)), worker_env(job.threads)


def build_task(job: dict, model_spec: str) -> dict:
    """Build (or reuse) one recipe's artifact on this node. Returns the worker's build result and the node."""
    from .runner import run_worker

    ray = ray_module()
    with tempfile.TemporaryDirectory(prefix="whisperopt-ray-build-") as tmp:
        node_job, env = _on_node(job, model_spec, Path(tmp))
        built = run_worker("build", node_job, Path(tmp) / "build.log", env)
        built["log"] = _tail(Path(tmp) / "build.log")
    built.update(node=this_node(ray), node_id=ray.get_runtime_context().get_node_id())
    return built


def shard_task(job: dict, model_spec: str, artifacts: dict, reference: bytes | None, rows: list[dict] | None):
    """Measure ``job.ids`` on this node (a streaming generator): yields {"row"} per utterance as the worker writes
    it, then {"segment"} (if it measured any), then {"result"}. ``rows``: the recipe's rows so far, for the final
    task, whose worker then measures nothing and runs the probes, throughput and packed passes only."""
    from .runner import run_worker

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
        rows_path, segments_path, ref_path = tmp / "rows.jsonl", tmp / "segments.jsonl", tmp / "reference.npz"
        rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows or []))
        if reference is not None:
            ref_path.write_bytes(reference)
        job = replace(job, artifact_dir=artifact_dir, rows_path=str(rows_path), segments_path=str(segments_path),
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
        for segment in read_rows(segments_path, key=None):
            yield {"segment": segment}
        yield {"result": result, "node": node, "log": _tail(log)}


def _append_log(path: Path, title: str, text: str) -> None:
    """A task's worker log, copied from its node into the recipe's log here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"\n=== {title} ===\n{text}")


def _shards(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _error(exc: BaseException) -> str:
    """One line for a task's failure (a Ray error wraps the task's own exception)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return (text[-1] if text else type(cause).__name__)[:500]


class _Recipe:
    """The driver's record of one recipe's distributed run."""

    def __init__(self, recipe, options: dict, built: dict, paths: dict, total: int, done: int):
        self.recipe, self.options, self.built, self.paths = recipe, options, built, paths
        self.shards_left, self.results, self.errors, self.nodes = 0, [], [], set()
        self.total, self.measured = total, done
        self.final: dict | None = None
        self.bar = None  # its progress bar
        self.artifacts: dict[str, str] = {}  # node id -> artifact directory there
        self.seen: set[str] = set()  # utterance ids in its rows file


def run_on_ray(cfg, recipes, options: dict, dataset, out_dir: Path, base_job: Job, make_reference, progress,
               log) -> None:
    """Steps 1-3 of the runner (build, reference, run) on the Ray cluster ``cfg.ray``; results as the local runner's."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .runner import available

    ray = connect(cfg.ray, log)
    gpus = 1 if cfg.device == "cuda" else 0
    nodes = alive_nodes(ray, cfg.threads, gpus)
    log(f"ray: {len(nodes)} node(s) with {cfg.threads} CPU(s) per task: "
        + ", ".join(f"{n['name']} ({n['cpus']} CPUs)" for n in nodes))
    task = {"num_cpus": cfg.threads, "num_gpus": gpus}
    build_remote = ray.remote(build_task)
    shard_remote = ray.remote(shard_task).options(**task, max_retries=RETRIES, retry_exceptions=[WorkerCrashed],
                                                  scheduling_strategy="SPREAD")  # the nodes share the load
    base = base_job.to_dict()

    # 1. build: on the first node, then on the others (a shared cache makes those hits)
    runnable = available(recipes, cfg.device, out_dir, log)
    builds: dict[str, dict[str, dict]] = {r.name: {} for r in runnable}
    for wave in (nodes[:1], nodes[1:]):
        refs = {}
        for recipe in runnable:
            for node in wave:
                job = {**base, "recipe": recipe.name, "options": options[recipe.name]}
                strategy = NodeAffinitySchedulingStrategy(node["id"], soft=False)
                refs[build_remote.options(**task, scheduling_strategy=strategy).remote(job, cfg.model)] = \
                    (recipe, node)
        if refs:
            log(f"build {len(refs)} artifact(s) on {len(wave)} node(s) ...")
        for ref, (recipe, node) in refs.items():
            try:
                built = ray.get(ref)
            except ray.exceptions.RayError as exc:
                built = {"ok": False, "error": _error(exc), "log": ""}
            builds[recipe.name][node["id"]] = built
            _append_log(recipe_paths(out_dir, recipe.name)["log"], f"build on node {node['name']}", built.get("log", ""))
    live = []
    for recipe in runnable:
        paths = recipe_paths(out_dir, recipe.name)
        failed = {nid: b for nid, b in builds[recipe.name].items() if not b.get("ok")}
        if failed:
            nid, b = next(iter(failed.items()))
            name = next(n["name"] for n in nodes if n["id"] == nid)
            log(f"fail  {recipe.name} (build on node {name}): {b['error']}")
            atomic_write_json(paths["status"], {"recipe": recipe.name, "status": "failed", "stage": "build",
                                                "error": f"build on node {name}: {b['error']}"})
            continue
        first = builds[recipe.name][nodes[0]["id"]]
        hits = sum(b["cache_hit"] for b in builds[recipe.name].values())
        log(f"      {recipe.name}: built on {len(nodes) - hits} node(s), cached on {hits} -> {first['artifact_dir']}")
        live.append((recipe, first))

    # 2. fidelity reference (the baseline on this machine's CPU, once per results directory)
    if live and cfg.fidelity_utterances:
        make_reference()
    ref_path = Path(base_job.reference_path)
    reference = ray.put(ref_path.read_bytes()) if cfg.fidelity_utterances and ref_path.exists() else None

    # 3. run: every recipe's shards at once; Ray places them where CPUs are free
    wanted = [u.id for u in dataset.utterances]
    size = cfg.shard_size or DEFAULT_SHARD
    state: dict = {}  # generator -> (recipe record, kind)
    records = []
    for recipe, built in live:
        paths = recipe_paths(out_dir, recipe.name)
        repair_rows(paths["rows"])  # a torn last row (the driver killed mid-write) is dropped and measured again
        done = {r["id"] for r in read_rows(paths["rows"])} & set(wanted)
        previous = read_status(paths["status"])
        if len(done) == len(wanted) and previous.get("status") == "ok" and cfg.extra_passes_done(previous):
            log(f"done  {recipe.name}: all {len(wanted)} utterances already measured (delete its rows to re-measure)")
            continue
        rec = _Recipe(recipe, options[recipe.name], built, paths, len(wanted), len(done))
        rec.bar = progress.add_task(recipe.name, total=len(wanted), completed=len(done)) if progress else None
        rec.artifacts = {nid: b["artifact_dir"] for nid, b in builds[recipe.name].items()}
        job = {**base, "recipe": recipe.name, "options": options[recipe.name], "fidelity_utterances": 0,
               "throughput_batches": [], "pack_gap": None}
        todo = [i for i in wanted if i not in done]
        for ids in _shards(todo, size):
            state[shard_remote.remote({**job, "ids": ids}, cfg.model, rec.artifacts, None, None)] = (rec, "shard")
            rec.shards_left += 1
        records.append(rec)
        if not todo:
            _finish_shards(rec, cfg, state, shard_remote, base, reference)
    if state:
        log(f"ray: {sum(r.shards_left for r in records)} shard task(s) of up to {size} utterances")
    files = {}
    try:
        pending = list(state)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for gen in ready:
                rec, kind = state[gen]
                try:
                    item = ray.get(next(gen))
                except StopIteration:
                    if kind == "shard":
                        rec.shards_left -= 1
                        if rec.shards_left == 0:
                            pending += _finish_shards(rec, cfg, state, shard_remote, base, reference)
                    continue
                except ray.exceptions.RayError as exc:  # failed after its retries; the other shards go on
                    rec.errors.append(_error(exc))
                    log(f"fail  {rec.recipe.name} ({kind} task): {rec.errors[-1]}")
                    if kind == "shard":
                        rec.shards_left -= 1
                        if rec.shards_left == 0:
                            pending += _finish_shards(rec, cfg, state, shard_remote, base, reference)
                    continue
                pending.append(gen)
                _take(item, rec, kind, files, progress)
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


def _finish_shards(rec: _Recipe, cfg, state: dict, shard_remote, base: dict, reference) -> list:
    """A recipe's shards are over: start its final task (probes, throughput, packed) if it needs one, else write its
    status. Returns the new generators to wait on."""
    if rec.errors or not (cfg.fidelity_utterances or cfg.throughput_batches or cfg.pack):
        _write_status(rec)
        return []
    rows = read_rows(rec.paths["rows"])
    job = {**base, "recipe": rec.recipe.name, "options": rec.options, "ids": []}
    gen = shard_remote.remote(job, cfg.model, rec.artifacts, reference, rows)
    state[gen] = (rec, "final")
    return [gen]


def _take(item: dict, rec: _Recipe, kind: str, files: dict, progress) -> None:
    """One streamed output of a task: a row (appended, fsync'ed, once per utterance), a segment, or a result."""
    name = rec.recipe.name
    if "row" in item:
        if name not in files:  # opened at its first row, kept open; run_on_ray closes it
            rec.seen = {r["id"] for r in read_rows(rec.paths["rows"])}
            files[name] = open(rec.paths["rows"], "a", encoding="utf-8")  # noqa: SIM115
        row = item["row"]
        if row.get("id") in rec.seen:  # a retried task's replay; Ray normally drops these itself
            return
        append_row(files[name], row)
        rec.seen.add(row["id"])
        rec.measured += 1
        rec.nodes.add(row.get("node"))
        if progress is not None:
            progress.update(rec.bar, completed=min(rec.measured, rec.total))
    elif "segment" in item:
        with open(rec.paths["segments"], "a", encoding="utf-8") as f:
            append_row(f, item["segment"])
    elif "result" in item:
        _append_log(rec.paths["log"], f"{kind} task on node {item['node']}", item["log"])
        if kind == "final":
            rec.final = item["result"]
            _write_status(rec)
        else:
            rec.results.append(item["result"])
            rec.nodes.add(item["node"])


def _write_status(rec: _Recipe) -> None:
    """The recipe's status file, as the local runner writes it, from its shard results and its final task's."""
    recipe, built = rec.recipe, rec.built
    status = {"recipe": recipe.name, "engine": recipe.engine, "options": rec.options,
              "artifact_dir": built["artifact_dir"], "size_bytes": built["size_bytes"],
              "build_s": built["build_s"], "cache_hit": built["cache_hit"],
              "manifest": built["manifest"], "description": recipe.description,
              "baseline": recipe.baseline, "component_baseline": recipe.component_baseline}
    if rec.errors:
        status.update(status="failed", stage="run", error=rec.errors[0])
    else:
        info = {}
        for result in rec.results + ([rec.final] if rec.final else []):
            extra = {k: v for k, v in result.items() if k != "ok"}
            if result is rec.final:  # measured nothing: its resource figures are not the run's
                extra = {k: v for k, v in extra.items() if k not in SEGMENT_KEYS}
            info.update(extra)
        info["utterances"] = sum(r.get("utterances", 0) for r in rec.results)
        status.update(status="ok", **info)
    status["ray"] = {"nodes": sorted(n for n in rec.nodes if n), "shards": len(rec.results)}
    atomic_write_json(rec.paths["status"], status)

