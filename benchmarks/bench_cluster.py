"""Throughput of `swapcli batch` on this machine: local 1 worker, local N workers, and a Ray cluster
of 1 and 2 nodes on 127.0.0.1 (ray.cluster_utils.Cluster), plus the executor's own cost per task and
per byte on the cluster (a no-op app, and a file sent and received through the object store).

    .venv/bin/python benchmarks/bench_cluster.py [--photos 40] [--clips 4] [--json]

Needs the `cluster` extra. Prints one JSON object (and a table on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


class NoOp:
    def run(self, payload, progress, paths):
        for path in payload:  # touch the (transferred) input, write the output
            data = Path(paths(path[0])).read_bytes()
            Path(paths(path[1])).write_bytes(data)
        return {"ok": True}


def noop_factory(setup, paths):
    return NoOp()


def batch(args: list[str], timeout: float = 900) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "swapcli", "batch", *map(str, args), "--json", "-q"],
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"swapcli batch failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    return {"wall_s": round(wall, 2), "batch_s": summary["seconds"], "workers": summary["workers"],
            "done": summary["done"]}


def executor_cost(address: str, items: int, size: int) -> dict:
    """Seconds per task of a no-op app through RayPool, and per MiB sent and received back."""
    import ray

    from swapcli.pipeline import cluster as cl
    from swapcli.pipeline.executor import Item, Slot

    pool = cl.connect(address)
    try:
        folder = Path(tempfile.mkdtemp())
        specs = pool.plan(0, ["cpu"], items)
        slots = [Slot(label=s.label, setup=None, num_cpus=s.num_cpus) for s in specs]
        small = folder / "small.bin"
        small.write_bytes(b"x")
        out = []

        def run(n: int, src: Path) -> float:
            its = [Item(i, [(str(src), str(folder / f"o{i}.bin"))], send=(str(src),),
                        receive=(str(folder / f"o{i}.bin"),)) for i in range(n)]

            def deliver(item, result, files):
                for final, tmp in files.items():
                    os.replace(tmp, final)
                return result

            start = time.perf_counter()
            pool.run(noop_factory, slots, its, lambda *a: None, deliver=deliver)
            return time.perf_counter() - start

        run(len(slots), small)  # actors up, models (none) loaded
        t_small = run(items, small)
        big = folder / "big.bin"
        big.write_bytes(os.urandom(size))
        t_big = run(4, big)
        t_small4 = run(4, small)
        out = {"slots": len(slots), "s_per_task_marginal": round((t_small - t_small4) / (items - 4), 4),
               "s_run_4_tiny_tasks": round(t_small4, 2),
               "s_per_mib_round_trip": round((t_big - t_small4) / (4 * size / 2**20), 4),
               "mib_per_s_round_trip": round(4 * size / 2**20 / max(1e-9, t_big - t_small4), 1)}
        shutil.rmtree(folder, ignore_errors=True)
        return out
    finally:
        pool.close()
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    from clips import make_clip
    from conftest import PHOTOS
    from ray.cluster_utils import Cluster

    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    src = root / "in"
    src.mkdir()
    faces = [PHOTOS["yaoming"], PHOTOS["t1"]]
    for i in range(args.photos):
        shutil.copy(faces[i % 2], src / f"p{i:03d}.jpg")
    for i in range(args.clips):
        make_clip(src / f"c{i}.mp4", "yaoming", seconds=args.seconds, fps=10, size=(320, 240), motion="zoom",
                  fit="contain")
    in_bytes = sum(p.stat().st_size for p in src.iterdir())
    source = PHOTOS["gdp"]
    results: dict = {"inputs": {"photos": args.photos, "clips": args.clips, "clip_seconds": args.seconds,
                                "bytes": in_bytes}, "cores": os.cpu_count()}
    results["local_1"] = batch([source, src, "-o", root / "l1", "-j", "1", "--device", "cpu"])
    results["local_2"] = batch([source, src, "-o", root / "l2", "-j", "2", "--device", "cpu"])
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2 // nodes, "include_dashboard": False})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=2 // nodes)
        cluster.wait_for_nodes()
        try:
            results[f"ray_{nodes}_node"] = batch([source, src, "-o", root / f"r{nodes}", "--device", "cpu",
                                                 "--cluster", cluster.address])
            if nodes == 2:
                results["ray_2_node_shared_fs"] = batch([source, src, "-o", root / "r2s", "--device", "cpu",
                                                        "--cluster", cluster.address, "--shared-fs"])
                results["executor_cost_2_node"] = executor_cost(cluster.address, 200, 64 << 20)
        finally:
            cluster.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
