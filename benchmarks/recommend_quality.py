"""Recommendation quality on real Civitai data: does `for_prompt` find the LoRA a prompt really used?

1. Import ../shared/data/civitai/loras_2023.jsonl.gz (6,123 Civitai LoRAs) into a fresh
   workbench home and embed them (timed).
2. For every prompt of ../shared/data/civitai/prompts_dev.csv.gz: remove its <lora:...>
   tags, call ``wb.recommend.for_prompt(prompt, k=10)`` and look for the LoRA the image was
   really made with (same Civitai model id, or a file of the same name as the one in the tag).
3. Baseline in the same run: plain all-MiniLM-L6-v2 (model defaults) over
   "name. triggers. tags. description" with a flat inner-product FAISS index.

Prints hit@1, hit@10 and MRR@10 for both and the ratio (target: hit@10 >= 2.5x baseline).
Only the dev split is used (weights were tuned on it; there is no other split here).

    python benchmarks/recommend_quality.py [--limit N] [--home DIR] [--threads 2] [--runtime auto|static|torch]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "civitai"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _stem(name: object) -> str:
    text = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return (text.rsplit(".", 1)[0] if "." in text else text).lower()


def _score(ranked: list[list[set]], truth_ids: list[int], truth_stems: list[str]) -> dict[str, float]:
    """ranked[q] = [(model_id, {file stems}) ...] best first."""
    h1 = h10 = mrr = 0.0
    for results, mid, stem in zip(ranked, truth_ids, truth_stems):
        for rank, (model_id, stems) in enumerate(results[:10], 1):
            if model_id == mid or (stem and stem in stems):
                h1 += rank == 1
                h10 += 1
                mrr += 1.0 / rank
                break
    n = max(len(ranked), 1)
    return {"hit@1": h1 / n, "hit@10": h10 / n, "mrr@10": mrr / n}


def _baseline(items: list[dict], queries: list[str], threads: int, cache_dir: Path) -> tuple[list, float]:
    """Plain MiniLM under torch (model defaults) over name. triggers. tags. description (HTML as is), queries
    embedded by the same model, with a flat IP index."""
    import faiss
    import torch
    from sentence_transformers import SentenceTransformer

    from workbench.search import default_model_path

    torch.set_num_threads(threads)
    texts = []
    for it in items:
        words = [w for v in it.get("modelVersions") or [] for w in v.get("trainedWords") or []]
        texts.append(
            f"{it['name']}. {', '.join(words)}. {', '.join(it.get('tags') or [])}. {it.get('description') or ''}"
        )
    model = None

    def cached(kind: str, strings: list[str]) -> np.ndarray:
        nonlocal model
        key = hashlib.sha256("\n".join(strings).encode()).hexdigest()[:16]
        cache = cache_dir / f"baseline-{kind}-{key}.npy"
        if cache.exists():
            return np.load(cache)
        model = model or SentenceTransformer(str(default_model_path()), device="cpu")
        vectors = model.encode(strings, batch_size=64, normalize_embeddings=True, show_progress_bar=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors.astype(np.float32))
        return vectors.astype(np.float32)

    t = time.perf_counter()
    vectors = cached("items", texts)
    seconds = time.perf_counter() - t
    qvecs = cached("queries", queries)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, top = index.search(qvecs, 10)
    meta = [
        (it["id"], {_stem(f.get("name")) for v in it.get("modelVersions") or [] for f in v.get("files") or []})
        for it in items
    ]
    return [[meta[j] for j in row if j >= 0] for row in top], seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="evaluate a random sample of N prompts (0 = all)")
    ap.add_argument("--home", help="workbench home to use (reused if it already holds the import and vectors)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument(
        "--cache-dir",
        default=str(Path(tempfile.gettempdir()) / "workbench-bench-cache"),
        help="where baseline vectors are cached between runs (never committed)",
    )
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--runtime", choices=["auto", "static", "torch"], default="auto", help="embedding runtime")
    args = ap.parse_args(argv)

    os.environ["WORKBENCH_EMBED_RUNTIME"] = args.runtime
    if args.runtime == "torch":
        import torch

        torch.set_num_threads(args.threads)
    import workbench
    from workbench.catalog import read_items
    from workbench.search import strip_lora_tags

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="wb-quality-"))
    wb = workbench.open(home)
    items = list(read_items(DATA / "loras_2023.jsonl.gz"))
    t = time.perf_counter()
    if wb.catalog.count() < len(items):
        print(wb.import_civitai(DATA / "loras_2023.jsonl.gz", progress=False))
    import_s = time.perf_counter() - t
    rec = wb.recommend
    rec.progress = False
    t = time.perf_counter()
    embedded = rec.embed(progress=True)
    embed_s = time.perf_counter() - t
    print(
        f"catalog: {wb.catalog.count()} LoRAs (import {import_s:.1f} s); embedded {embedded} payloads in {embed_s:.1f} s "
        f"with {rec.embedder.name} ({rec.embedder.runtime} runtime)"
        + ("" if embedded else " (vectors already in this home)")
    )

    prompts = pd.read_csv(DATA / "prompts_dev.csv.gz")
    if args.limit:
        prompts = prompts.sample(args.limit, random_state=0)
    queries = [strip_lora_tags(p if isinstance(p, str) else "").strip() for p in prompts["prompt"]]
    keep = [bool(q) for q in queries]
    prompts = prompts[keep]
    queries = [q for q in queries if q]
    truth_ids = [int(m) for m in prompts["model_id"]]
    truth_stems = [_stem(f) for f in prompts["file_name"]]
    print(f"prompts: {len(queries)} (dev split{'' if not args.limit else f', sample of {args.limit}'})")

    t = time.perf_counter()
    rec.encode_queries(queries, batch_size=64, progress=True)
    qenc_s = time.perf_counter() - t
    civitai_files = {}
    docs = rec._docs
    for r in docs.itertuples(index=False):
        files = list(r.civitai_files) if r.civitai_files is not None else []
        civitai_files[int(r.id)] = {_stem(f) for f in [r.file_name, *files] if f}
    t = time.perf_counter()
    ours = []
    for q in queries:
        df = rec.for_prompt(q, k=10)
        ours.append(
            [
                (int(m) if pd.notna(m) else None, civitai_files.get(int(i), set()))
                for i, m in zip(df["id"], df["civitai_model_id"])
            ]
        )
    rank_s = time.perf_counter() - t
    ours_m = _score(ours, truth_ids, truth_stems)
    hits10 = round(ours_m["hit@10"] * len(queries))
    print(
        f"query embedding {qenc_s:.1f} s for {len(queries)} prompts (batched); ranking {rank_s:.1f} s "
        f"({1000 * rank_s / max(len(queries), 1):.1f} ms per for_prompt call)"
    )

    lines = [
        f"{'':<28}{'hit@1':>8}{'hit@10':>8}{'MRR@10':>8}",
        f"{'workbench for_prompt':<28}{ours_m['hit@1']:>8.3f}{ours_m['hit@10']:>8.3f}{ours_m['mrr@10']:>8.3f}",
    ]
    if not args.no_baseline:
        base, base_s = _baseline(items, queries, args.threads, Path(args.cache_dir))
        base_m = _score(base, truth_ids, truth_stems)
        lines.append(
            f"{'baseline MiniLM flat IP':<28}{base_m['hit@1']:>8.3f}{base_m['hit@10']:>8.3f}{base_m['mrr@10']:>8.3f}"
        )
        ratio = ours_m["hit@10"] / max(base_m["hit@10"], 1e-9)
        lines.append(
            f"hit@10 ratio ours/baseline: {ratio:.2f}x (target >= 2.5x)  "
            f"[baseline item embedding {base_s:.1f} s{' (cached)' if base_s < 5 else ''}]"
        )
    lines.insert(2, f"{'':<28}hit@10 = {hits10:,} of {len(queries):,} prompts ({hits10 / max(len(queries), 1):.4f})")
    print("\n".join(lines))
    print(
        f"embedding the {len(items)} Civitai payloads took {embed_s:.1f} s "
        f"({'measured now' if embedded else 'already embedded in --home; run without --home to time it'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
