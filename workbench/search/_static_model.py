"""A static (token-table) embedding model distilled locally from a sentence-transformers model.

MiniLM under torch embeds ~30-60 payloads a second on two CPU cores: a 50,000-LoRA library
takes half an hour.  A static model replaces the transformer by one vector per vocabulary
token: a text's embedding is the weighted mean of its tokens' vectors, which numpy computes
for thousands of texts a second, and which needs neither torch nor a GPU (dashboard visitor
kernels embed prompts with it).

Distillation (model2vec's recipe, done once and cached): every vocabulary token is run
alone through the shipped model (``[CLS] token [SEP]``, mean pooled, as the model embeds a
one-token sentence), and each token is weighted ``sif / (sif + p(token))`` with ``p`` from
Zipf's law on the vocabulary rank, so frequent words ("the", "of") count little.  Unlike
model2vec's default, the table is neither centred nor PCA-reduced (recipe ``s2``): a text's
vector stays in MiniLM's own 384-dimensional output space, an approximation of the vector
MiniLM itself would give (exactly it for a one-token text); on the Civitai dev prompts this
ranked better than the centred 256-dimension PCA of ``s1`` at every SIF coefficient tried.
Only the first distillation imports torch; afterwards the table is read from the cache
(``WORKBENCH_MODEL_CACHE`` or the user cache directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DISTILL_VERSION = "s2"  # bump when the recipe changes: the cache key and the vector key change with it
SIF_COEFFICIENT = 1e-4
#: Static embedding cost is linear and tiny: read the whole prompt/payload.
MAX_TOKENS = 512


def model_cache_dir() -> Path:
    """Where distilled/exported models are kept (``WORKBENCH_MODEL_CACHE`` overrides the user cache dir)."""
    override = os.environ.get("WORKBENCH_MODEL_CACHE")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lora-workbench")) / "models"


def _source_key(source: Path) -> str:
    """Identity of a source model folder: its weights' names, sizes and mtimes, plus the recipe version."""
    parts = [DISTILL_VERSION, str(SIF_COEFFICIENT), str(source.resolve())]
    for f in sorted(source.glob("*")):
        if f.suffix in (".safetensors", ".bin", ".json", ".txt") and f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _token_vectors(source: Path, batch_size: int = 512) -> np.ndarray:
    """Mean-pooled output of every vocabulary token embedded alone ([vocab, dim]); zeros for special tokens."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModel.from_pretrained(str(source)).eval()
    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    wanted = [
        i
        for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(vocab_size))))
        if i not in special and not (tok.startswith("[unused") or tok.startswith("[UNK"))
    ]
    dim = int(model.config.hidden_size)
    table = np.zeros((vocab_size, dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(wanted), batch_size):
            ids = wanted[start : start + batch_size]
            batch = torch.tensor([[cls_id, i, sep_id] for i in ids], dtype=torch.long)
            out = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            table[ids] = out.mean(dim=1).numpy()
    return table


def distill(source: Path) -> dict[str, np.ndarray]:
    """The static table of `source`: the model's own token vectors (no centring, no PCA, so texts keep
    the model's output space), pre-multiplied by their SIF weight."""
    table = _token_vectors(source)
    present = np.abs(table).sum(axis=1) > 0
    rank = np.arange(1, len(table) + 1, dtype=np.float64)
    prob = (1.0 / rank) / np.sum(
        1.0 / rank
    )  # Zipf on the vocabulary order (WordPiece vocabularies are frequency-sorted)
    weight = (SIF_COEFFICIENT / (SIF_COEFFICIENT + prob)).astype(np.float32)
    return {"vectors": (table * weight[:, None]).astype(np.float16), "present": present}


class StaticModel:
    """Token table + tokenizer of a distilled model; `encode` is numpy only."""

    def __init__(self, source: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.source = Path(source)
        self.key = _source_key(self.source)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else model_cache_dir()
        self.path = self.cache_dir / f"static-{self.source.name}-{self.key}.npz"
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._table is not None:
                return
            if not self.path.exists():
                self._distill_to_cache()
            with np.load(self.path) as data:
                table = data["vectors"].astype(np.float32)
            self._table = table
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.source / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizer = tokenizer

    def _distill_to_cache(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        arrays = distill(self.source)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".npz.tmp")
        os.close(fd)
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
        os.replace(tmp, self.path)  # atomic: concurrent distillations write the same bytes
        (self.cache_dir / f"{self.path.stem}.json").write_text(
            json.dumps({"source": str(self.source), "recipe": DISTILL_VERSION, "sif": SIF_COEFFICIENT})
        )

    @property
    def dim(self) -> int:
        self._load()
        return int(self._table.shape[1])  # type: ignore[union-attr]

    def encode(self, texts: Sequence[str], max_tokens: int = MAX_TOKENS) -> np.ndarray:
        """Unit-length float32 vectors (zero vector for a text without known tokens)."""
        self._load()
        table = self._table
        assert table is not None
        if not texts:
            return np.zeros((0, table.shape[1]), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        for row, encoding in enumerate(encodings):  # per text: a gather of ~100 rows; one big gather would cost GBs
            ids = encoding.ids[:max_tokens]
            if ids:
                out[row] = table[ids].sum(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
