"""Recommendation and CLI speed at 50,000 LoRAs, each figure beside a raw baseline measured in the same run.

Synthesizes catalog entries (perturbed copies of the real Civitai items when
../shared/data/civitai is present, else generated from a word list), imports them into a
fresh home, then prints:

* embedding all payloads with the default runtime (``wb.recommend.embed()``: payloads, DB
  writes and the index included; target <= 10 min) beside bare ``model.encode`` with torch
  on a sample of the same texts (extrapolated to all of them);
* ``similar`` p50 (target <= 5 ms) beside a flat FAISS inner-product search of the same vectors;
* ``for_prompt`` p50 with the prompt embedding included (target <= 30 ms) beside the flat
  search plus a torch ``model.encode`` of the prompt;
* ``workbench --help`` (target <= 0.3 s) beside ``python -c pass``;
* the quality line: hit@10 of ``benchmarks/recommend_quality.py`` on a sample of the dev split
  (``--quality-limit 0`` runs all 15,937 prompts; target >= 0.74).

Load average is printed with the figures (the machine is shared).

    python benchmarks/recommend_speed.py [--n 50000] [--runtime auto|static|torch] [--quality-limit 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _wall(cmd: list[str], runs: int = 5) -> float:
    """Median wall time of a command (seconds)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _quality(limit: int) -> str:
    """The hit@10 line of recommend_quality.py (same runtime, no baseline), run in a child process."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "recommend_quality.py"), "--no-baseline"]
    if limit:
        cmd += ["--limit", str(limit)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("workbench for_prompt")), None)
    return line.split()[-2] if line else f"failed: {out.stderr.strip()[-300:]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--runtime", choices=["auto", "static", "torch"], default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--bare-sample", type=int, default=1000, help="texts for the bare torch model.encode baseline")
    ap.add_argument("--quality-limit", type=int, default=2000, help="dev prompts for the quality line (0 = all)")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--home", default=None)
    args = ap.parse_args(argv)
    os.environ["WORKBENCH_EMBED_RUNTIME"] = args.runtime

    import faiss

    import workbench
    from workbench.catalog import import_items
    from workbench.search import MAX_SEQ_LENGTH, Recommender, default_model_path

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="wb-speed-"))
    wb = workbench.open(home)
    t = time.perf_counter()
    items = synth_items(args.n)
    report = import_items(wb.db, items)
    print(
        f"catalog: {wb.catalog.count()} LoRAs ({report}) in {time.perf_counter() - t:.1f} s; "
        f"source: {'perturbed Civitai items' if DATA.exists() else 'generated words'}"
    )
    rec = Recommender(wb, progress=False)
    rec._load_docs()
    texts = list(rec._payloads.values())
    sample = random.Random(3).sample(texts, min(args.bare_sample, len(texts)))

    # baseline 1: bare sentence-transformers model.encode under torch, on a sample of the same payloads
    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    bare = SentenceTransformer(str(default_model_path()), device="cpu")
    bare.max_seq_length = MAX_SEQ_LENGTH
    bare.encode(sample[:64], batch_size=64)  # warm-up
    t = time.perf_counter()
    bare.encode(sample, batch_size=64, normalize_embeddings=True)
    bare_rate = len(sample) / (time.perf_counter() - t)

    t, cpu0 = time.perf_counter(), time.process_time()
    n = rec.embed(progress=False)
    embed_s, embed_cpu = time.perf_counter() - t, time.process_time() - cpu0
    t = time.perf_counter()
    rec.embedder.encode(sample)
    ours_rate = len(sample) / (time.perf_counter() - t)
    print(
        f"embedded {n} payloads with {rec.embedder.name} ({rec.embedder.runtime}) in {embed_s:.1f} s incl. payloads, "
        f"DB writes and the {rec.index.kind} index; encoding alone {ours_rate:.0f}/s vs bare torch model.encode "
        f"{bare_rate:.0f}/s on {len(sample)} of the same texts ({torch.get_num_threads()} torch threads)"
    )

    # latencies over the same home (vectors and index already there)
    ids = [int(i) for i in rec._docs["id"].sample(200, random_state=1)]
    rec.similar(ids[0])
    lat_sim, cpu_sim = [], []
    for i in ids:
        t, c = time.perf_counter(), time.thread_time()
        rec.similar(i, k=10)
        lat_sim.append(time.perf_counter() - t)
        cpu_sim.append(time.thread_time() - c)
    from workbench.search import load_vectors

    all_ids, vectors = load_vectors(wb.db, rec.embedder.name)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    qv = np.stack([rec.index.vector(i) for i in ids])
    lat_flat = []
    for row in qv:
        t = time.perf_counter()
        flat.search(row.reshape(1, -1), 11)
        lat_flat.append(time.perf_counter() - t)
    rng = random.Random(2)
    prompts = [", ".join(rng.sample(_WORDS, 12)) + f", detail {j}" for j in range(100)]
    rec.for_prompt("warm up the model", k=10)
    lat_prompt, cpu_prompt = [], []
    for p in prompts:
        t, c = time.perf_counter(), time.thread_time()
        rec.for_prompt(p, k=10)  # each prompt is new: its embedding is computed inside
        lat_prompt.append(time.perf_counter() - t)
        cpu_prompt.append(time.thread_time() - c)
    lat_bare_q = []
    for p in prompts[:30]:
        t = time.perf_counter()
        bare.encode([p + " again"], normalize_embeddings=True)
        lat_bare_q.append(time.perf_counter() - t)

    cli_help = _wall([sys.executable, "-m", "workbench.cli", "--help"])
    py_pass = _wall([sys.executable, "-c", "pass"])
    quality = "skipped" if args.no_quality else _quality(args.quality_limit)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())

    print(f"\n{'figure':<44}{'ours':>12}{'baseline':>12}  target (baseline)")
    print(
        f"{'embed all ' + str(n) + ' payloads':<44}{embed_s / 60:>8.2f} min{args.n / bare_rate / 60:>8.2f} min"
        f"  <= 10 min (bare torch model.encode, extrapolated)"
    )
    print(
        f"{'similar p50 (' + rec.index.kind + ')':<44}{_p50(lat_sim):>9.2f} ms{_p50(lat_flat):>9.2f} ms  <= 5 ms (flat FAISS search)"
    )
    print(
        f"{'for_prompt p50, prompt embedding included':<44}{_p50(lat_prompt):>9.2f} ms"
        f"{_p50(lat_flat) + _p50(lat_bare_q):>9.2f} ms  <= 30 ms (flat search + torch encode of the prompt)"
    )
    print(f"{'workbench --help':<44}{cli_help:>10.2f} s{py_pass:>10.2f} s  <= 0.3 s (python -c pass)")
    print(
        f"{'hit@10, dev split' + (f' sample of {args.quality_limit}' if args.quality_limit else ''):<44}{quality:>12}"
        f"{'0.745':>12}  >= 0.74 (torch MiniLM before this change)"
    )
    print(
        f"CPU time (what a quiet machine would see): embedding {embed_cpu / 60:.2f} min, similar p50 "
        f"{_p50(cpu_sim):.2f} ms, for_prompt p50 {_p50(cpu_prompt):.2f} ms"
    )
    print(f"load average (1/5/15 min): {load} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
