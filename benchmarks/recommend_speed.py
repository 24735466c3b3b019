"""Recommendation and CLI speed at 50,000 LoRAs, each figure beside a raw baseline measured in the same run.

Synthesizes catalog entries (perturbed copies of the real Civitai items when
../shared/data/civitai is present, else generated from a word list), imports them into a
home, then prints:

* embedding all payloads with the default runtime (``wb.recommend.embed()``: payloads, DB
  writes and the index included; target <= 10 min) beside bare ``model.encode`` with torch
  on a sample of the same texts (extrapolated to all of them);
* ``similar`` p50 (target <= 5 ms) beside a flat FAISS inner-product search of the same vectors;
* ``for_prompt`` p50 with the prompt embedding included (target <= 30 ms) beside the flat
  search plus a torch ``model.encode`` of the prompt;
* ``workbench --help`` (target <= 0.3 s) beside ``python -c pass``;
* the quality line: hit@10 of ``benchmarks/recommend_quality.py`` on a sample of the dev split
  (``--quality-limit 0`` runs all 15,937 prompts; target >= 0.74).

Every figure is printed as wall time and CPU time (the machine is shared: wall time moves with
other people's load, CPU time much less), with the load average.  The 50,000-LoRA home is kept
in ``<cache-dir>/speed-N`` and reused (``--fresh`` starts over, so embedding is timed again); the
quality line's home in ``<cache-dir>/quality``.

    python benchmarks/recommend_speed.py [--n 50000] [--runtime auto|static|torch] [--quality-limit 2000] [--fresh]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "civitai" / "loras_2023.jsonl.gz"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_WORDS = (
    "ink wash watercolor cyberpunk neon city anime girl boy portrait landscape mountain forest castle armor "
    "dragon knight witch school uniform kimono dress hair eyes smile night rain snow flower garden pixel art "
    "sketch oil painting photorealistic detailed lighting cinematic retro vintage chibi mecha robot cat fox "
    "elf angel demon sword gun car street ocean beach sunset cloud sky star galaxy"
).split()


def synth_items(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    base: list[dict] = []
    if DATA.exists():
        from workbench.catalog import read_items

        base = list(read_items(DATA))
    out = []
    for i in range(n):
        if base:
            src = base[i % len(base)]
            item = dict(src)
            item["id"] = 10_000_000 + i
            suffix = f" {rng.choice(_WORDS)} v{i // len(base)}" if i >= len(base) else ""
            item["name"] = f"{src['name']}{suffix}"
            tags = list(src.get("tags") or [])
            rng.shuffle(tags)
            item["tags"] = tags + ([rng.choice(_WORDS)] if suffix else [])
            item["modelVersions"] = [dict(v, id=20_000_000 + i) for v in (src.get("modelVersions") or [])[:1]]
        else:
            words = rng.sample(_WORDS, 6)
            item = {
                "id": 10_000_000 + i,
                "name": f"{words[0].title()} {words[1].title()} {i}",
                "description": " ".join(rng.choices(_WORDS, k=30)),
                "tags": words[2:5],
                "creator": "synth",
                "stats": {"downloadCount": rng.randint(0, 100_000)},
                "modelVersions": [
                    {
                        "id": 20_000_000 + i,
                        "baseModel": rng.choice(["SD 1.5", "SDXL 1.0"]),
                        "trainedWords": [f"{words[0]}{i}", words[5]],
                        "files": [
                            {
                                "name": f"{words[0]}_{i}.safetensors",
                                "primary": True,
                                "sizeKB": 100.0,
                                "hashes": {"SHA256": f"{i:064x}"},
                            }
                        ],
                    }
                ],
            }
        out.append(item)
    return out


def _p50(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, 50))


def _timed(fn: Callable[[Any], Any], inputs: Sequence[Any]) -> tuple[list[float], list[float]]:
    """Wall and process CPU time (every thread of this process) of `fn` on each input, in seconds."""
    wall, cpu = [], []
    for x in inputs:
        t, c = time.perf_counter(), time.process_time()
        fn(x)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def _wall(cmd: list[str], runs: int = 5) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system of the child) of a command, in seconds."""
    times, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        times.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return float(np.median(times)), float(np.median(cpus))


def _quality(limit: int, runtime: str, home: Path) -> str:
    """The hit@10 of recommend_quality.py (same runtime, no baseline), run in a child process on a
    cached home of the dev-split catalog."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "recommend_quality.py"), "--no-baseline", "--runtime", runtime]
    cmd += ["--home", str(home)]
    if limit:
        cmd += ["--limit", str(limit)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("workbench for_prompt")), None)
    return line.split()[-2] if line else f"failed: {out.stderr.strip()[-300:]}"


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--runtime", choices=["auto", "static", "torch"], default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--bare-sample", type=int, default=1000, help="texts for the bare torch model.encode baseline")
    ap.add_argument("--quality-limit", type=int, default=2000, help="dev prompts for the quality line (0 = all)")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument(
        "--cache-dir",
        default=str(Path(tempfile.gettempdir()) / "workbench-bench-cache"),
        help="homes kept between runs (speed-N, quality): embedding 50,000 LoRAs is timed once, not every run",
    )
    ap.add_argument("--home", default=None, help="home for the speed figures (default: <cache-dir>/speed-N)")
    ap.add_argument("--fresh", action="store_true", help="start from an empty home, so embedding is timed")
    args = ap.parse_args(argv)
    os.environ["WORKBENCH_EMBED_RUNTIME"] = args.runtime

    import faiss

    import workbench
    from workbench.catalog import import_items
    from workbench.search import MAX_SEQ_LENGTH, Recommender, default_model_path, load_vectors

    cache = Path(args.cache_dir)
    home = Path(args.home) if args.home else cache / f"speed-{args.n}"
    if args.fresh and home.exists():
        if args.home:
            raise SystemExit(f"--fresh would delete {home}; pass a new --home or leave --home out")
        shutil.rmtree(home)
    print(f"home: {home}; load average at start {_load()} on {os.cpu_count()} CPUs")
    wb = workbench.open(home)
    t = time.perf_counter()
    if wb.catalog.count() < args.n:
        report = import_items(wb.db, synth_items(args.n))
        print(
            f"catalog: {wb.catalog.count()} LoRAs ({report}) in {time.perf_counter() - t:.1f} s; "
            f"source: {'perturbed Civitai items' if DATA.exists() else 'generated words'}"
        )
    else:
        print(f"catalog: {wb.catalog.count()} LoRAs already in the home")
    rec = Recommender(wb, progress=False)
    t, cpu0 = time.perf_counter(), time.process_time()
    n = rec.embed(progress=False)  # documents, payloads, stale vectors, index
    embed_s, embed_cpu = time.perf_counter() - t, time.process_time() - cpu0
    texts = list(rec._payloads.values())
    sample = random.Random(3).sample(texts, min(args.bare_sample, len(texts)))

    # our latencies first, before torch (the baselines) is loaded into this process
    ids = [int(i) for i in random.Random(1).sample(list(rec._ids), min(200, len(rec._ids)))]
    rec.similar(ids[0])
    sim_wall, sim_cpu = _timed(lambda i: rec.similar(i, k=10), ids)
    rng = random.Random(2)
    prompts = [", ".join(rng.sample(_WORDS, 12)) + f", detail {j}" for j in range(100)]
    rec.for_prompt("warm up the model", k=10)
    # each prompt is new: its embedding is computed inside the call
    prompt_wall, prompt_cpu = _timed(lambda p: rec.for_prompt(p, k=10), prompts)
    load_figures = _load()

    # the first query of a fresh process (another visitor kernel): documents, lexical index, vectors
    fresh = Recommender(workbench.open(home), progress=False)
    (first_s,), (first_cpu,) = _timed(lambda i: fresh.similar(i, k=10), ids[:1])

    # baseline: a flat FAISS search of the same vectors (FAISS's default threads)
    all_ids, vectors = load_vectors(wb.db, rec.embedder.name)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    qv = np.stack([rec.index.vector(i) for i in ids])
    flat_wall, flat_cpu = _timed(lambda row: flat.search(row.reshape(1, -1), 11), list(qv))

    # baseline: bare sentence-transformers model.encode under torch, on a sample of the same payloads
    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    bare = SentenceTransformer(str(default_model_path()), device="cpu")
    bare.max_seq_length = MAX_SEQ_LENGTH
    bare.encode(sample[:64], batch_size=64)  # warm-up
    (bare_s,), (bare_cpu,) = _timed(lambda xs: bare.encode(xs, batch_size=64, normalize_embeddings=True), [sample])
    (ours_s,), (ours_cpu,) = _timed(rec.embedder.encode, [sample])
    total = len(texts)
    print(
        f"encoding {len(sample)} payloads: {rec.embedder.name} ({rec.embedder.runtime}) {len(sample) / ours_s:.0f}/s "
        f"(CPU {ours_cpu:.2f} s) vs bare torch model.encode {len(sample) / bare_s:.0f}/s (CPU {bare_cpu:.1f} s, "
        f"{torch.get_num_threads()} torch threads); load {_load()}"
    )
    enc_wall, enc_cpu = _timed(lambda p: bare.encode([p + " again"], normalize_embeddings=True), prompts[:30])

    cli_help, cli_cpu = _wall([sys.executable, "-m", "workbench.cli", "--help"])
    py_pass, py_cpu = _wall([sys.executable, "-c", "pass"])
    quality = "skipped" if args.no_quality else _quality(args.quality_limit, args.runtime, cache / "quality")

    def ms(xs: list[float]) -> str:
        return f"{_p50(xs):.2f} ms"

    rows = [
        (
            f"embed all {total} payloads",
            f"{embed_s / 60:.2f} min" if n else "cached",
            f"{embed_cpu / 60:.2f} min" if n else "-",
            f"{total / (len(sample) / bare_s) / 60:.1f} min",
            f"{total * bare_cpu / len(sample) / 60:.1f} min",
            "<= 10 min (bare torch model.encode, extrapolated)",
        ),
        (
            "first query of a fresh process",
            f"{first_s:.1f} s",
            f"{first_cpu:.1f} s",
            "",
            "",
            "(documents + lexical index + vectors)",
        ),
        (
            f"similar p50 ({rec.index.kind})",
            ms(sim_wall),
            ms(sim_cpu),
            ms(flat_wall),
            ms(flat_cpu),
            "<= 5 ms (flat FAISS search)",
        ),
        (
            "for_prompt p50, prompt embedding included",
            ms(prompt_wall),
            ms(prompt_cpu),
            f"{_p50(flat_wall) + _p50(enc_wall):.2f} ms",
            f"{_p50(flat_cpu) + _p50(enc_cpu):.2f} ms",
            "<= 30 ms (flat search + torch encode of the prompt)",
        ),
        (
            "workbench --help",
            f"{cli_help:.2f} s",
            f"{cli_cpu:.2f} s",
            f"{py_pass:.2f} s",
            f"{py_cpu:.2f} s",
            "<= 0.3 s (python -c pass)",
        ),
        (
            "hit@10, dev split" + (f" sample of {args.quality_limit}" if args.quality_limit else ""),
            quality,
            "",
            "0.745",
            "",
            ">= 0.74 (torch MiniLM before the static runtime)",
        ),
    ]
    print(f"\n{'figure':<44}{'ours wall':>12}{'ours CPU':>12}{'base wall':>12}{'base CPU':>12}  target (baseline)")
    for name, a, b, c, d, target in rows:
        print(f"{name:<44}{a:>12}{b:>12}{c:>12}{d:>12}  {target}")
    print(
        f"CPU = process time (all threads); {len(ids)} similar calls, {len(prompts)} for_prompt calls, "
        f"{len(ids)} flat searches, {len(prompts[:30])} torch prompt encodes"
    )
    print(
        f"load average (1/5/15 min) during the latency figures: {load_figures}; at the end: {_load()} on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
