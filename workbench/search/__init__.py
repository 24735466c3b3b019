"""Finding LoRAs: payload embeddings, the FAISS vector index, lexical evidence and the :class:`Recommender`.
Imports only :mod:`workbench.catalog` and :mod:`workbench.files` of the rest of the package."""

from __future__ import annotations

from workbench.search._embeddings import (
    MAX_SEQ_LENGTH,
    Embedder,
    choose_runtime,
    default_model_path,
    embed_query,
    load_vectors,
)
from workbench.search._lexical import LexDoc, LexicalIndex, phrase_starts, phrases_in, prompt_ngrams
from workbench.search._recommend import Recommender, strip_lora_tags
from workbench.search._vector_index import DEFAULT_HNSW_THRESHOLD, VectorIndex

__all__ = [
    "choose_runtime",
    "DEFAULT_HNSW_THRESHOLD",
    "default_model_path",
    "embed_query",
    "load_vectors",
    "Embedder",
    "LexDoc",
    "LexicalIndex",
    "MAX_SEQ_LENGTH",
    "phrase_starts",
    "phrases_in",
    "prompt_ngrams",
    "Recommender",
    "strip_lora_tags",
    "VectorIndex",
]
