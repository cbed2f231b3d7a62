"""Wall time of one bench: the local runner, then --ray on a local 1-node (2 CPUs) and 2-node (1 CPU each) cluster
(ray.cluster_utils on 127.0.0.1). Prints one JSON line per run; results in /tmp/b15/. README: Scale out on Ray."""
import json
import os
import subprocess
import sys
import time

from ray.cluster_utils import Cluster

ARGS = ["bench", "--model", "tiny.en", "--recipes", "torch-fp32,ct2-int8", "--limit", "20", "--threads", "1",
        "--fidelity-utterances", "0"]


def run(name, extra):
    os.makedirs("/tmp/b15", exist_ok=True)
    out = f"/tmp/b15/{name}"
    subprocess.run(["rm", "-rf", out])
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "whisperopt.cli", *ARGS, "--out", out, *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t
    s = json.load(open(f"{out}/summary.json"))
    ev = {x["recipe"]: round(x["eval_s"], 1) for x in s["recipes"]}
    segs = {x["recipe"]: x.get("processes") for x in s["recipes"]}
    loads = []
    for rec in ev:
        for line in open(f"{out}/{rec}.segments.jsonl"):
            loads.append(json.loads(line)["load_s"])
    print(json.dumps({"run": name, "rc": r.returncode, "wall_s": round(wall, 1), "eval_s": ev, "tasks": segs,
                      "sum_eval": round(sum(ev.values()), 1), "median_load_s": sorted(loads)[len(loads)//2]}), flush=True)
    if r.returncode:
        print(r.stdout[-2000:], r.stderr[-2000:])

run("local", [])
for name, cpus in (("ray1", [2]), ("ray2", [1, 1])):
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus[0], "include_dashboard": False})
    for n in cpus[1:]:
        c.add_node(num_cpus=n)
    c.wait_for_nodes()
    run(name, ["--ray", c.address, "--shard-size", "5"])
    c.shutdown()
