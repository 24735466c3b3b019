"""One short check of the in-process diffusers backend on a CUDA GPU (or the CPU, for comparison).

Builds the tiny random-weight pipeline locally (no hub), loads real LoRA files with
load_lora_weights/set_adapters through `DiffusersBackend`, and checks on the chosen device:
same seed + stack -> identical bytes; weight change -> different image; weight 0 -> base image;
a LoHa file refused before loading; then times a 20-step image and an adapter switch.
Prints one JSON object. Usage: python benchmarks/diffusers_cuda_check.py [--device cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=None, help="folder to keep the images in")
    args = parser.parse_args()

    import torch

    from workbench.generate import (
        DiffusersBackend,
        GenerationRequest,
        LoraIncompatibleError,
        LoraSpec,
        write_tiny_loras,
    )

    work = pathlib.Path(args.out or tempfile.mkdtemp(prefix="wb-cuda-"))
    work.mkdir(parents=True, exist_ok=True)
    write_tiny_loras(work / "loras")
    backend = DiffusersBackend("tiny", lora_dirs=[work / "loras"], cache_dir=work / "cache", device=args.device)
    report: dict = {
        "device": args.device,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "pipeline_device": str(backend.pipe.device),
    }

    def run(stack, seed=7, steps=8):
        req = GenerationRequest(
            prompt="a watercolor lighthouse", loras=stack, seed=seed, steps=steps, width=64, height=64
        )
        return backend.submit(req)

    base = run([])
    a1 = run([LoraSpec("tiny_watercolor", 0.8)])
    a2 = run([LoraSpec("tiny_watercolor", 0.8)])
    b = run([LoraSpec("tiny_watercolor", 0.3)])
    zero = run([LoraSpec("tiny_watercolor", 0.0)])
    two = run([LoraSpec("tiny_watercolor", 0.7), LoraSpec("tiny_pixelart", 0.4, te=0.0)])
    report["same_seed_same_bytes"] = a1.png == a2.png
    report["weight_change_changes_image"] = bool(abs(_pixels(a1.png) - _pixels(b.png)).mean() > 0)
    report["mean_abs_diff_0.8_vs_0.3"] = float(abs(_pixels(a1.png) - _pixels(b.png)).mean())
    report["weight0_equals_base"] = bool((_pixels(zero.png) == _pixels(base.png)).all())
    report["weight0_max_abs_diff_vs_base"] = int(abs(_pixels(zero.png) - _pixels(base.png)).max())
    report["two_adapter_stack_differs_from_base"] = bool(abs(_pixels(two.png) - _pixels(base.png)).mean() > 0)
    report["lora_hashes"] = a1.lora_hashes
    try:
        run([LoraSpec("tiny_loha_lycoris", 1.0)])
        report["loha_refused"] = False
    except LoraIncompatibleError as exc:
        report["loha_refused"] = True
        report["loha_message"] = str(exc)[:200]

    def timed(stack, n=5, steps=20):
        times = []
        for i in range(n):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            run(stack, seed=100 + i, steps=steps)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    report["s_per_image_20_steps_same_lora"] = timed([LoraSpec("tiny_watercolor", 0.8)])
    switch = []
    for i in range(6):
        stack = [LoraSpec("tiny_watercolor" if i % 2 else "tiny_pixelart", 0.8)]
        t = time.perf_counter()
        run(stack, seed=1, steps=20)
        switch.append(time.perf_counter() - t)
    report["s_per_image_20_steps_alternating_loras"] = statistics.median(switch)
    for name, result in (("base", base), ("lora_0.8", a1), ("lora_0.3", b), ("stack", two)):
        (work / f"{name}.png").write_bytes(result.png)
    report["images"] = str(work)
    print(json.dumps(report, indent=1, default=str))
    ok = report["same_seed_same_bytes"] and report["weight_change_changes_image"] and report["loha_refused"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
