"""Queue overhead and adapter-switch cost on the tiny random-weight pipeline (CPU, one thread).

Compares N jobs through ``wb.queue`` (persisted, recorded, PNG written, history rows) with the same
N bare ``pipe(...)`` calls in the same process, and measures switching LoRAs between jobs.
Target: queue/bare <= 1.05. Usage: ``python benchmarks/generate.py [--jobs 20] [--steps 20]``.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queue-only", action="store_true", help="skip the adapter-switch measurements")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import workbench
    from workbench.generate import DiffusersBackend, GenerationRequest, LoraSpec, write_tiny_loras

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="wb-bench-gen-"))
    loras = tmp / "loras"
    write_tiny_loras(loras)
    backend = DiffusersBackend("tiny", lora_dirs=[loras], cache_dir=tmp / "cache")
    pipe = backend.pipe
    wb = workbench.open(tmp / "home")
    wb.scan([loras], progress=False, workers=1)
    queue = wb.queue
    queue.set_backend("diffusers", backend)
    req = GenerationRequest(
        prompt="a lighthouse at dusk", seed=1, steps=args.steps, width=args.size, height=args.size, sampler="DDIM"
    )
    backend.submit(req)  # warm-up: scheduler, first call
    pipe.scheduler = backend._scheduler("DDIM")

    def bare(seed: int) -> None:
        pipe(
            prompt=req.prompt,
            num_inference_steps=args.steps,
            guidance_scale=7.0,
            width=args.size,
            height=args.size,
            generator=torch.Generator().manual_seed(seed),
        )

    queue.start()
    rounds = []
    for _ in range(args.rounds):  # interleave to cancel out the load of a shared machine
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(args.jobs):
            bare(i)
        t_bare, c_bare = time.perf_counter() - w0, time.process_time() - c0
        w0, c0 = time.perf_counter(), time.process_time()
        ids = [queue.submit(req.with_seed(i)) for i in range(args.jobs)]
        for jid in ids:
            queue.wait(jid, 600)
        queue.flush()
        t_queue, c_queue = time.perf_counter() - w0, time.process_time() - c0
        rounds.append((t_bare, t_queue, c_bare, c_queue))
    bare_s = statistics.median(r[0] for r in rounds)
    queue_s = statistics.median(r[1] for r in rounds)
    wall_ratio = statistics.median(r[1] / r[0] for r in rounds)
    cpu_ratio = statistics.median(r[3] / r[2] for r in rounds)
    print(
        f"tiny pipeline, {args.size}px, {args.steps} DDIM steps, {args.jobs} jobs, 1 thread, median of {args.rounds} rounds"
    )
    print(f"bare pipeline calls : {bare_s:8.3f} s  ({bare_s / args.jobs * 1000:.1f} ms/image)")
    print(
        f"through the queue   : {queue_s:8.3f} s  ({queue_s / args.jobs * 1000:.1f} ms/image, persisted + PNG + history)"
    )
    print(f"overhead ratio      : {wall_ratio:8.3f}  wall clock, median of per-round ratios (target <= 1.05)")
    print(f"CPU time ratio      : {cpu_ratio:8.3f}  process CPU, all threads (what the queue adds when cores are busy)")
    print(
        "per round (bare s, queue s, bare CPU s, queue CPU s):",
        ", ".join(f"({a:.2f}, {b:.2f}, {c:.2f}, {d:.2f})" for a, b, c, d in rounds),
    )

    if args.queue_only:
        queue.close()
        return 0
    # adapter switching between jobs: same LoRA every job vs alternating two (both cached after first load)
    a, b = LoraSpec("tiny_watercolor", 0.8), LoraSpec("tiny_pixelart", 0.8)
    backend.submit(GenerationRequest.from_dict({**req.to_dict(), "loras": [a.to_dict()]}))
    backend.submit(GenerationRequest.from_dict({**req.to_dict(), "loras": [b.to_dict()]}))

    def run(stacks) -> float:
        t0 = time.perf_counter()
        for s in stacks:
            backend.submit(GenerationRequest.from_dict({**req.to_dict(), "loras": [s.to_dict()]}))
        return (time.perf_counter() - t0) / len(stacks)

    n = max(6, args.jobs // 2)
    same = run([a] * n)
    alternating = run([a if i % 2 else b for i in range(n)])
    t0 = time.perf_counter()
    for _ in range(50):
        backend._activate(GenerationRequest.from_dict({**req.to_dict(), "loras": [a.to_dict()]}))
        backend._activate(GenerationRequest.from_dict({**req.to_dict(), "loras": [b.to_dict()]}))
    set_adapters_ms = (time.perf_counter() - t0) / 100 * 1000
    fresh = DiffusersBackend("tiny", lora_dirs=[loras], cache_dir=tmp / "cache", max_adapters=1, pipeline=pipe)
    fresh._family = backend._family
    pipe.unload_lora_weights()
    t0 = time.perf_counter()
    for i in range(6):
        fresh._activate(GenerationRequest.from_dict({**req.to_dict(), "loras": [(a if i % 2 else b).to_dict()]}))
    reload_ms = (time.perf_counter() - t0) / 6 * 1000
    print(f"job with same LoRA each time        : {same * 1000:8.1f} ms")
    print(
        f"job alternating two cached LoRAs    : {alternating * 1000:8.1f} ms  (switch cost {1000 * (alternating - same):+.1f} ms)"
    )
    print(f"set_adapters switch (cached)        : {set_adapters_ms:8.2f} ms")
    print(f"switch with reload from disk (LRU=1): {reload_ms:8.1f} ms")
    queue.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
