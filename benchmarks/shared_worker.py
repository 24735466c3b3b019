"""The dashboard's shared worker: what a visitor's kernel pays, against doing the work in the kernel.

Runs a SharedWorker (private redis-server + one worker with the tiny pipeline) on a temporary home,
then fresh "visitor" processes that open the home with ``$WORKBENCH_REDIS`` as a Voilà kernel does:

* first generation of a fresh visitor vs its last (the pipeline is preloaded in the worker), and a
  fresh in-process visitor (no worker: it loads torch + the pipeline itself) as the raw baseline;
* a prompt embedding through the worker vs the same encode in-process (model already loaded);
* resident memory of a visitor after a generation and a recommendation, with and without the worker.

Usage: ``python benchmarks/shared_worker.py [--jobs 10]`` (needs redis-server). Prints ratios and figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VISITOR = r"""
import json, os, sys, time, resource
t0 = time.perf_counter()
import workbench
from workbench.generate import GenerationRequest, LoraSpec
wb = workbench.open(sys.argv[1])
jobs = int(sys.argv[2])
times = []
for i in range(jobs):
    req = GenerationRequest(prompt="a lighthouse at dusk", seed=i, steps=8, width=64, height=64, sampler="DDIM",
                            cfg_scale=7.0, loras=[LoraSpec("tiny_watercolor", 0.6)])
    start = time.perf_counter()
    state = wb.queue.wait(wb.queue.submit(req), timeout=600)
    assert state["state"] == "succeeded", state
    times.append(time.perf_counter() - start)
rec = wb.recommend
rec.refresh()  # library vectors (made once, by whoever came first)
embeds = []
for i in range(5):
    start = time.perf_counter()
    rec.embedder.encode([f"watercolor painting of a harbour number {i}"])
    embeds.append(time.perf_counter() - start)
wb.queue.close()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"first_s": times[0], "last_s": times[-1], "process_s": time.perf_counter() - t0,
                  "embed_s": sorted(embeds)[len(embeds) // 2], "max_rss_mb": rss,
                  "torch": "torch" in sys.modules}))
"""


def visitor(home: pathlib.Path, jobs: int, redis_url: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORKBENCH_REDIS", None)
    if redis_url:
        env["WORKBENCH_REDIS"] = redis_url
    out = subprocess.run(
        [sys.executable, "-c", VISITOR, str(home), str(jobs)], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    args = ap.parse_args()

    import workbench
    from workbench.dashboard import SharedWorker
    from workbench.generate import write_tiny_loras
    from workbench.tasks import shared_worker_status

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="wb-bench-shared-"))
    loras = tmp / "loras"
    write_tiny_loras(loras)
    for name in ("home-local", "home-shared"):
        workbench.open(tmp / name).scan([loras], progress=False, workers=1)

    # raw baseline: a visitor that does everything in its own process (what every kernel did before)
    local = visitor(tmp / "home-local", args.jobs, None)

    os.environ["OMP_NUM_THREADS"] = "1"  # the worker computes with the same one thread as the baseline visitor
    worker = SharedWorker(tmp / "home-shared", [loras], cache_dir=tmp / "home-local" / "models").start()
    try:
        deadline = time.monotonic() + 600
        while not any(w.get("pipelines") for w in shared_worker_status(worker.redis_url).get("workers") or []):
            if time.monotonic() > deadline:
                raise SystemExit("the shared worker did not load its pipeline")
            time.sleep(0.2)
        warmup = visitor(tmp / "home-shared", 1, worker.redis_url)  # the first visitor ever embeds the library
        shared = [visitor(tmp / "home-shared", args.jobs, worker.redis_url) for _ in range(2)]
        loads = [w["pipeline_loads"] for w in shared_worker_status(worker.redis_url)["workers"]]
    finally:
        worker.stop()

    print(f"jobs per visitor: {args.jobs} (tiny pipeline, 64 px, 8 DDIM steps, CPU)")
    print(
        f"in-process visitor (baseline): first generation {local['first_s']:.2f} s, last {local['last_s']:.2f} s, "
        f"prompt embedding {local['embed_s'] * 1000:.1f} ms, max RSS {local['max_rss_mb']:.0f} MB, torch={local['torch']}"
    )
    for i, run in enumerate(shared, 1):
        print(
            f"shared-worker visitor {i}: first generation {run['first_s']:.2f} s, last {run['last_s']:.2f} s "
            f"(first/last {run['first_s'] / run['last_s']:.2f}), prompt embedding {run['embed_s'] * 1000:.1f} ms, "
            f"max RSS {run['max_rss_mb']:.0f} MB, torch={run['torch']}"
        )
    best = shared[-1]
    print(f"first generation, fresh visitor: shared/in-process = {best['first_s'] / local['first_s']:.3f}")
    print(f"steady generation (last job): shared/in-process = {best['last_s'] / local['last_s']:.3f}")
    print(f"prompt embedding: worker round trip/in-process = {best['embed_s'] / local['embed_s']:.2f}")
    print(f"visitor memory: shared/in-process = {best['max_rss_mb'] / local['max_rss_mb']:.3f}")
    print(
        f"pipelines loaded by the worker for {len(shared) + 1} visitors: {loads}; warm-up visitor torch={warmup['torch']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
