"""Recommendation speed at 50,000 LoRAs.

Synthesizes catalog entries (perturbed copies of the real Civitai items when
../shared/data/civitai is present, else generated from a word list), imports them into a
fresh home, then measures and prints with targets:

* time to embed all of them through `wb.recommend.embed()` (target <= 15 min) and its
  throughput against bare ``model.encode`` on the same texts (target >= 0.9x);
* ``similar`` p50 (target <= 5 ms; HNSW above 20,000 vectors);
* ``for_prompt`` p50 with the prompt embedding included, on CPU (target <= 60 ms).

    python benchmarks/recommend_speed.py [--n 50000] [--threads N] [--embed-device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import random
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--embed-device", default=None, help="device for the bulk embedding (default: cuda if present)")
    ap.add_argument("--bare-sample", type=int, default=5000, help="texts for the bare model.encode comparison")
    ap.add_argument("--home", default=None)
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import workbench
    from workbench.catalog import import_items
    from workbench.search import MAX_SEQ_LENGTH, Recommender

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="wb-speed-"))
    wb = workbench.open(home)
    t = time.perf_counter()
    items = synth_items(args.n)
    report = import_items(wb.db, items)
    print(
        f"catalog: {wb.catalog.count()} LoRAs ({report}) in {time.perf_counter() - t:.1f} s; "
        f"source: {'perturbed Civitai items' if DATA.exists() else 'generated words'}"
    )

    rec = Recommender(wb, device=args.embed_device, progress=False)
    device = "cuda" if (args.embed_device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda" else "cpu"
    rec._load_docs()
    texts = list(rec._payloads.values())[: args.bare_sample]
    model = rec.embedder.model
    model.max_seq_length = MAX_SEQ_LENGTH
    model.encode(texts[:256], batch_size=64)  # warm-up
    t = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True)
    bare_rate = len(texts) / (time.perf_counter() - t)

    t = time.perf_counter()
    n = rec.embed(progress=True)
    embed_s = time.perf_counter() - t
    ours_rate = n / embed_s
    print(
        f"embedded {n} payloads on {device} in {embed_s:.1f} s (includes payload building, DB writes and the "
        f"{rec.index.kind} index build) -> {ours_rate:.0f}/s; bare model.encode {bare_rate:.0f}/s on {len(texts)} of the same texts"
    )

    # CPU latencies: a CPU recommender over the same home (vectors and index already there)
    cpu = Recommender(wb, device="cpu", progress=False)
    cpu.refresh()
    ids = [int(i) for i in cpu._docs["id"].sample(200, random_state=1)]
    cpu.similar(ids[0])
    lat_sim = []
    for i in ids:
        t = time.perf_counter()
        cpu.similar(i, k=10)
        lat_sim.append(time.perf_counter() - t)
    rng = random.Random(2)
    prompts = [", ".join(rng.sample(_WORDS, 12)) + f", detail {j}" for j in range(100)]
    cpu.for_prompt("warm up the model", k=10)
    lat_prompt = []
    for p in prompts:
        t = time.perf_counter()
        cpu.for_prompt(p, k=10)  # each prompt is new: its embedding is computed inside
        lat_prompt.append(time.perf_counter() - t)

    cpu_rate = None
    if device != "cpu":
        sample = texts[:1000]
        cpu_model = cpu.embedder.model
        cpu_model.max_seq_length = MAX_SEQ_LENGTH
        t = time.perf_counter()
        cpu_model.encode(sample, batch_size=64, normalize_embeddings=True)
        cpu_rate = len(sample) / (time.perf_counter() - t)

    threads = torch.get_num_threads()
    print(f"\n{'figure':<46}{'value':>12}  target")
    print(f"{'embed all ' + str(n) + ' (' + device + ')':<46}{embed_s / 60:>10.2f} min  <= 15 min")
    if cpu_rate:
        print(
            f"{'embed all (CPU, extrapolated from 1000)':<46}{args.n / cpu_rate / 60:>10.2f} min  <= 15 min ({threads} threads)"
        )
    print(f"{'throughput vs bare model.encode':<46}{ours_rate / bare_rate:>11.2f}x  >= 0.9x")
    print(f"{'similar p50 (' + rec.index.kind + ')':<46}{_p50(lat_sim):>9.2f} ms  <= 5 ms")
    print(f"{'for_prompt p50 (CPU, embedding included)':<46}{_p50(lat_prompt):>9.2f} ms  <= 60 ms ({threads} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
