"""Recommendations: LoRAs similar to a LoRA, fitting a prompt, or matching trigger text.

Ranking fuses four kinds of evidence, each kept as its own column so a person can see
why a LoRA came up:

* ``score_trigger``: the prompt contains one of the LoRA's trigger phrases (IDF-weighted,
  see `workbench.search._lexical`); the strongest single signal on real Civitai prompts.
* ``score_lexical``: BM25F over name, file name, trigger words, tags, description.
* ``score_semantic``: cosine between sentence embeddings of the query and the LoRA's payload
  (FAISS index, `workbench.search._vector_index`).
* ``score_popularity``: Civitai downloads, a weak prior that breaks ties.
* ``score_usage``: local use, a bounded prior: at most `RankWeights.usage` x the LoRA's own
  relevance, so a LoRA nobody's query is about is never lifted by having been used.
* ``score_feedback``: thumbs up/down on the same or similar queries, and LoRAs used in
  generations for genuinely similar prompts (implicit positives); a liked LoRA also lifts its
  neighbours.  Also proportional to relevance and bounded (tanh), so it reorders relevant
  results and never drowns them.

``score = relevance + popularity + usage + feedback`` with ``relevance = trigger + lexical +
semantic`` (each times its weight); the ``why`` column spells the sum out, and every
``reason`` names only evidence that contributed to the score.

Opening a `Recommender` or calling `similar` on an embedded catalog never imports torch;
only embedding a new prompt or payload does.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import pandas as pd

from workbench.catalog import Catalog
from workbench.search import _embeddings as emb
from workbench.search._lexical import LexDoc, LexicalIndex, content_tokens, trigger_phrases
from workbench.search._vector_index import DEFAULT_HNSW_THRESHOLD, VectorIndex


class Workbench(Protocol):
    """What recommendations need of the façade (``workbench.Workbench`` has it)."""

    @property
    def catalog(self) -> Catalog: ...
    @property
    def home(self) -> Path: ...


_EXTRA_TAGS = re.compile(r"<(?:lora|lyco|locon|hypernet)\s*:[^>]*>", re.IGNORECASE)


@dataclass
class RankWeights:
    """How the evidence is mixed (tuned on the Civitai dev prompts; see benchmarks/recommend_quality.py)."""

    trigger: float = 1.0
    lexical: float = 1.0
    semantic: float = 8.0
    popularity: float = 1.0
    # usage and feedback scale a LoRA's own relevance: liked -> up to x(1 + feedback_up),
    # disliked -> down to x(1 - feedback_down), used often -> up to x(1 + usage).
    usage: float = 0.1
    feedback_up: float = 0.5
    feedback_down: float = 0.9
    # feedback spreading: only queries at least this similar count; a liked LoRA lifts
    # neighbours by `neighbour_share` x their cosine to it.
    feedback_min_similarity: float = 0.55
    implicit_min_similarity: float = 0.8  # generations count only for genuinely similar prompts
    neighbour_share: float = 0.5
    same_query_boost: float = 2.0  # feedback on the identical query counts double
    implicit_value: float = 0.5  # a generation that used a LoRA counts as half a thumbs-up
    candidates: int = 200
    #: more stale payloads than this are embedded in a background thread; queries meanwhile
    #: rank by lexical evidence (and the vectors already stored).
    background_embed_above: int = 256


def strip_lora_tags(prompt: str) -> str:
    """A prompt without its ``<lora:…>``/``<lyco:…>`` tags (they name LoRAs already chosen)."""
    return _EXTRA_TAGS.sub(" ", prompt or "")


def _python_strings(arrow_type: Any) -> Any:
    """Text columns as pandas' ``str`` dtype held in Python objects rather than Arrow: cutting ten rows
    then costs a numpy take per column instead of an Arrow compute call (half the time at ~25 columns)."""
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("python", na_value=np.nan)
    return None


def _family(base_model: Any) -> str | None:
    from workbench.files import base_model_family

    if not isinstance(base_model, str) or not base_model:
        return None
    return base_model_family(base_model) or base_model


_DOCS_SQL = """
SELECT v.id, v.name, v.file_name, v.trigger_words, v.tags, v.base_model, v.description, v.missing,
       v.usage_count, v.civitai_model_id, v.sha256, l.training_tags,
       TRY_CAST(json_extract(l.stats, '$.downloadCount') AS DOUBLE) AS downloads,
       json_extract_string(l.metadata, '$.civitai.versions[*].files[*].name') AS civitai_files
FROM lora_view v JOIN loras l ON l.id = v.id
ORDER BY v.id
"""

_FINGERPRINT_SQL = """
SELECT count(*), coalesce(bit_xor(hash(v.id, v.name, v.file_name, v.trigger_words, v.tags, v.base_model,
                                        v.description, v.sha256, v.missing, l.training_tags, l.stats, l.metadata)), 0)
FROM lora_view v JOIN loras l ON l.id = v.id
"""


class _Members:
    """Sets of strings per document (tags, trigger phrases) as CSR arrays of ids, so "how many does
    each candidate share with this LoRA" is a few numpy calls instead of a set intersection per candidate."""

    def __init__(self, sets: Sequence[Iterable[str]]) -> None:
        vocab: dict[str, int] = {}
        flat: list[int] = []
        self.indptr = np.zeros(len(sets) + 1, dtype=np.int64)
        for i, members in enumerate(sets):
            flat.extend(vocab.setdefault(m, len(vocab)) for m in members)
            self.indptr[i + 1] = len(flat)
        self.ids = np.asarray(flat, dtype=np.int32)
        self.size = len(vocab)

    def shared(self, src: int, cand: np.ndarray) -> np.ndarray:
        """How many members each document in `cand` shares with document `src`."""
        own = self.ids[self.indptr[src] : self.indptr[src + 1]]
        out = np.zeros(len(cand), dtype=np.float32)
        if len(own) == 0 or len(cand) == 0:
            return out
        mask = np.zeros(self.size, dtype=bool)
        mask[own] = True
        starts = self.indptr[cand]
        lengths = self.indptr[cand + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return out
        # positions of every candidate's members, laid end to end
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        hits = mask[self.ids[np.arange(total) + offsets]]
        owner = np.repeat(np.arange(len(cand)), lengths)
        out += np.bincount(owner, weights=hits, minlength=len(cand)).astype(np.float32)
        return out


@dataclass
class _Signal:
    """One piece of feedback: explicit thumbs (`implicit` False) or a generation that used the LoRA."""

    query: str
    kind: str
    lora_id: int
    value: float
    implicit: bool


@dataclass
class _FeedbackParts:
    """Feedback per candidate, split by where it came from (so reasons name only what contributed)."""

    signal: np.ndarray  # summed raw signal per candidate (before tanh)
    liked_same: np.ndarray  # explicit +1 on this very query
    liked_similar: np.ndarray  # explicit +1 on a similar query
    disliked: np.ndarray  # explicit -1 on this or a similar query
    used_similar: np.ndarray  # used in a generation for a genuinely similar prompt
    neighbour: np.ndarray  # close to a LoRA liked for this or a similar query


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _under_lock(method: _Method) -> _Method:
    """Rank under the recommender's lock: a refresh in another thread swaps documents, vectors and index
    together, and a query must never read half of the old state and half of the new."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_Method, locked)


class Recommender:
    """Recommendations over one workbench's catalog (``wb.recommend``)."""

    def __init__(
        self,
        wb: Workbench,
        model: str | None = None,
        *,
        device: str | None = None,
        runtime: str | None = None,
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        weights: RankWeights | None = None,
        auto_embed: bool = True,
        progress: bool = True,
    ) -> None:
        self.wb = wb
        self.db = wb.catalog.db
        self.weights = weights or RankWeights()
        self.embedder = emb.Embedder(model, device=device, runtime=runtime)
        self.index = VectorIndex(Path(wb.home) / "index", self.embedder.name, hnsw_threshold=hnsw_threshold)
        self.auto_embed = auto_embed
        self.progress = progress
        self._lock = threading.RLock()
        self._stamp: str | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        self._docs: pd.DataFrame | None = None
        self._pos: dict[int, int] = {}
        self._ids = np.zeros(0, dtype=np.int64)
        self._lex: LexicalIndex | None = None
        self._prior = np.zeros(0, dtype=np.float32)
        self._usage = np.zeros(0, dtype=np.float32)
        self._family: list[str | None] = []
        self._family_code = np.zeros(0, dtype=np.int32)  # per position: index into _family_names, -1 unknown
        self._family_names: dict[str, int] = {}
        self._usage_count = np.zeros(0, dtype=np.int64)
        # per position: the indexed vector (a zero row when not indexed), copied out of FAISS once per change
        self._vecs = np.zeros((0, 0), dtype=np.float32)
        self._has_vec = np.zeros(0, dtype=bool)
        self._vecs_key: tuple[Any, int] | None = None
        # the catalog snapshot as pandas, kept while the catalog hands out the same Arrow table
        self._rows_cache: tuple[Any, pd.DataFrame, np.ndarray, np.ndarray] | None = None
        self._feedback: list[_Signal] = []
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._background: threading.Thread | None = None
        #: (embedded so far, to embed) while a background embedding runs, else None
        self.embedding_progress: tuple[int, int] | None = None
        self.embedding_error: str | None = None

    # -- keeping up with the catalog ------------------------------------------------------
    def refresh(self) -> None:
        """Bring documents, lexical index, vectors and feedback up to date with the catalog (cheap when nothing changed)."""
        with self._lock:
            stamp = self.db.stamp()
            if stamp == self._stamp and self._docs is not None and not self.index.changed_on_disk():
                return
            with self.db.read() as con:
                fingerprint = tuple(con.execute(_FINGERPRINT_SQL).fetchone() or ())
            if fingerprint != self._fingerprint or self._docs is None:
                self._load_docs()
                self._fingerprint = fingerprint
            self._sync_vectors()
            self._load_matrix()
            self._load_signals()
            self._stamp = stamp

    def _load_docs(self) -> None:
        frame = self.db.read_df(_DOCS_SQL)
        self._docs = frame
        self._ids = frame["id"].to_numpy(dtype=np.int64)
        self._pos = {int(i): p for p, i in enumerate(self._ids)}
        plain = [emb.strip_html(d) for d in frame["description"]]  # once: HTML parsing is the slow part
        docs = []
        for r, description in zip(frame.itertuples(index=False), plain):
            files = [r.file_name] if isinstance(r.file_name, str) and r.file_name else []
            for f in r.civitai_files if isinstance(r.civitai_files, (list, np.ndarray)) else []:
                if f and f not in files:
                    files.append(f)
            docs.append(
                LexDoc(
                    name=r.name if isinstance(r.name, str) else "",
                    file_names=files,
                    trigger_words=list(r.trigger_words) if r.trigger_words is not None else [],
                    tags=list(r.tags) if r.tags is not None else [],
                    description=description,
                )
            )
        self._lexdocs = docs
        self._lex = LexicalIndex(docs)
        # per LoRA, what `similar` scores and explains (computed once, not per call)
        self._tagsets = [frozenset(t.lower() for t in d.tags) for d in docs]
        self._trigsets = [frozenset(trigger_phrases(d.trigger_words)) for d in docs]
        self._tag_members = _Members(self._tagsets)
        self._trig_members = _Members(self._trigsets)
        self._missing = frame["missing"].fillna(False).to_numpy(dtype=bool)
        self._sha = [s if isinstance(s, str) and s else None for s in frame["sha256"]]
        downloads = frame["downloads"].fillna(0).to_numpy(dtype=np.float64)
        self._prior = np.clip(np.log1p(downloads) / math.log1p(1e6), 0, 1.5).astype(np.float32)
        self._family = [_family(b) for b in frame["base_model"]]
        names: dict[str, int] = {}
        self._family_code = np.array(
            [-1 if f is None else names.setdefault(f, len(names)) for f in self._family], dtype=np.int32
        )
        self._family_names = names
        self._usage_count = np.zeros(len(frame), dtype=np.int64)
        columns = ["id", "name", "file_name", "trigger_words", "tags", "base_model", "training_tags"]
        self._payloads = {
            int(r["id"]): emb.payload(r, description_text=text)
            for r, text in zip(frame[columns].to_dict("records"), plain)
        }

    def _sync_vectors(self) -> None:
        """Embed stale payloads (now, or in the background when there are many) and patch or rebuild
        the FAISS index to match the vectors stored for the catalog."""
        if self.index.index is None or self.index.changed_on_disk():
            self.index.load()
        wanted = {i: emb.payload_hash(t) for i, t in self._payloads.items()}
        load, drop = self.index.plan(wanted)
        if not load and not drop:
            return
        stored = emb.stored_hashes(self.db, self.embedder.name)
        stale = [i for i in load if stored.get(i) != wanted[i]]
        if stale:
            if self.auto_embed and len(stale) <= self.weights.background_embed_above and not self.embedding:
                emb.embed_catalog(self.db, self.embedder, progress=self.progress, payloads=self._payloads)
            else:
                if self.auto_embed:
                    self.embed_in_background()
                # index what is stored now; the rest joins when the background embedding is done
                load = [i for i in load if stored.get(i) == wanted[i]]
                wanted = {i: h for i, h in wanted.items() if stored.get(i) == h or self.index.hashes.get(i) == h}
                drop = [i for i in self.index.hashes if i not in wanted]
                if not load and not drop and self.index.index is not None:
                    return
        if self.index.needs_rebuild(wanted, len(load), len(drop)):
            ids, vectors = emb.load_vectors(self.db, self.embedder.name)
            keep = np.array([int(i) in wanted and stored.get(int(i)) == wanted[int(i)] for i in ids], dtype=bool)
            self.index.rebuild(ids[keep], vectors[keep] if len(ids) else vectors, wanted)
        else:
            if load:
                ids, vectors = emb.load_vectors(self.db, self.embedder.name, load)
                self.index.apply(ids, vectors, wanted, drop)
            else:
                self.index.apply(np.zeros(0, np.int64), None, wanted, drop)
        self.index.save()

    def _load_matrix(self) -> None:
        """Copy the indexed vectors into a matrix by document position (once per change of the
        documents or the index), so ranking reads candidates' vectors with one fancy index."""
        key = (self._ids, self.index.version)
        if self._vecs_key is not None and self._vecs_key[0] is key[0] and self._vecs_key[1] == key[1]:
            return
        ids, vectors = self.index.matrix()
        n = len(self._ids)
        vecs = np.zeros((n, vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
        has = np.zeros(n, dtype=bool)
        if len(ids) and n:
            at = np.minimum(np.searchsorted(self._ids, ids), n - 1)
            ok = self._ids[at] == ids
            vecs[at[ok]] = vectors[ok]
            has[at[ok]] = True
        self._vecs, self._has_vec, self._vecs_key = vecs, has, key

    @property
    def embedding(self) -> bool:
        """True while a background embedding runs (results then rest on lexical evidence for the rest)."""
        return self._background is not None and self._background.is_alive()

    def embed_in_background(self) -> threading.Thread:
        """Embed every new or changed LoRA in a daemon thread; `embedding_progress` follows it."""
        with self._lock:
            if self._background is not None and self._background.is_alive():
                return self._background
            payloads = dict(self._payloads)
            self.embedding_progress = (0, len(payloads))
            self.embedding_error = None

            def work() -> None:
                try:
                    emb.embed_catalog(
                        self.db,
                        self.embedder,
                        progress=False,
                        payloads=payloads,
                        write_every=512,
                        on_progress=lambda done, total: setattr(self, "embedding_progress", (done, total)),
                    )
                except Exception as exc:  # shown by the panel; queries keep working lexically
                    self.embedding_error = f"embedding failed: {exc}"
                finally:
                    self.embedding_progress = None
                    self._stamp = None  # the next query picks the new vectors up

            self._background = threading.Thread(target=work, name="workbench-embed", daemon=True)
            self._background.start()
            return self._background

    def _load_signals(self) -> None:
        """Explicit feedback and implicit positives (LoRAs used by generations, with their prompts)."""
        rows = self.db.read_df("SELECT query, query_kind, lora_id, value FROM feedback ORDER BY id")
        signals = [
            _Signal(str(q or ""), str(k or "prompt"), int(i), float(v), False)
            for q, k, i, v in rows.itertuples(index=False)
        ]
        try:
            used = self.db.read_df(
                "SELECT DISTINCT json_extract_string(j.params, '$.request.prompt') AS prompt, e.lora_id "
                "FROM usage_events e JOIN jobs j ON j.id = e.job_id WHERE e.lora_id IS NOT NULL"
            )
        except Exception:  # jobs written in another shape: implicit signals are a bonus, not a requirement
            used = pd.DataFrame(columns=["prompt", "lora_id"])
        counts = self.db.read_df("SELECT lora_id, count(*) AS n FROM usage_events GROUP BY lora_id")
        usage = np.zeros(len(self._pos), dtype=np.float64)
        for lora_id, n in counts.itertuples(index=False):
            if int(lora_id) in self._pos:
                usage[self._pos[int(lora_id)]] = n
        self._usage_count = usage.astype(np.int64)
        self._docs["usage_count"] = self._usage_count  # type: ignore[index]
        self._usage = np.minimum(np.log1p(usage) / math.log1p(20), 1.0).astype(np.float32)
        seen: set[tuple[str, int]] = set()
        for prompt, lora_id in used.itertuples(index=False):
            text = strip_lora_tags(prompt or "").strip()
            if text and (text, int(lora_id)) not in seen:  # the same prompt generated 20 times is one signal
                seen.add((text, int(lora_id)))
                signals.append(_Signal(text, "prompt", int(lora_id), self.weights.implicit_value, True))
        self._feedback = signals

    def embed(self, progress: bool = True, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Embed every new or changed LoRA now (otherwise done on first use); returns how many."""
        with self._lock:
            with self.db.read() as con:
                fingerprint = tuple(con.execute(_FINGERPRINT_SQL).fetchone() or ())
            self._load_docs()
            self._fingerprint = fingerprint  # refresh() below must not load them again
            n = emb.embed_catalog(
                self.db, self.embedder, progress=progress, payloads=self._payloads, on_progress=on_progress
            )
            self._stamp = None
            self.refresh()
            return n

    # -- query vectors -------------------------------------------------------------------
    def _query_vector(self, text: str) -> np.ndarray:
        key = text.strip()
        vec = self._qcache.get(key)
        if vec is None:
            vec = self.embedder.encode([key], max_seq_length=emb.QUERY_MAX_SEQ_LENGTH)[0]
            self._qcache[key] = vec
            while len(self._qcache) > 4096:
                self._qcache.popitem(last=False)
        else:
            self._qcache.move_to_end(key)
        return vec

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> None:
        """Embed many queries in batches ahead of time (benchmarks, batch jobs); later calls hit the cache."""
        todo = list(dict.fromkeys(t.strip() for t in texts if t.strip() and t.strip() not in self._qcache))
        if todo:
            for key, vec in zip(
                todo,
                self.embedder.encode(
                    todo, batch_size=batch_size, progress=progress, max_seq_length=emb.QUERY_MAX_SEQ_LENGTH
                ),
            ):
                self._qcache[key] = vec

    # -- public API ----------------------------------------------------------------------
    def for_prompt(
        self,
        prompt: str,
        k: int = 10,
        base_model: str | None = None,
        exclude: Iterable[int] = (),
        diversity: float = 0.0,
        include_missing: bool = True,
    ) -> pd.DataFrame:
        """LoRAs that fit a prompt (its ``<lora:…>`` tags are ignored), best first."""
        text = strip_lora_tags(prompt)
        return self._rank_text(text, "prompt", k, base_model, exclude, diversity, include_missing)

    def by_trigger(
        self,
        text: str,
        k: int = 10,
        base_model: str | None = None,
        exclude: Iterable[int] = (),
        diversity: float = 0.0,
        include_missing: bool = True,
    ) -> pd.DataFrame:
        """LoRAs whose trigger words (or name) match `text`; exact trigger phrases first, then close
        spellings (``wtrclr`` finds ``watercolor``)."""
        return self._rank_text(text, "trigger", k, base_model, exclude, diversity, include_missing)

    def similar(
        self,
        lora_id: int,
        k: int = 10,
        base_model: str | None = "auto",
        exclude: Iterable[int] = (),
        diversity: float = 0.0,
        include_missing: bool = True,
        by: str = "description",
    ) -> pd.DataFrame:
        """LoRAs like `lora_id`; by default only those compatible with its base model ("auto").
        ``by="weights"``: by the cosine of their weight changes instead (``wb.weights``; same family only)."""
        if by != "description":
            from workbench.search._by_weights import similar_by_weights

            if by != "weights":
                raise ValueError(f"similar by {by!r}? one of: description, weights")
            return similar_by_weights(self.wb, lora_id, k=k, exclude=exclude, include_missing=include_missing)
        return self._similar(int(lora_id), k, base_model, exclude, diversity, include_missing)

    @_under_lock
    def _similar(
        self,
        lora_id: int,
        k: int,
        base_model: str | None,
        exclude: Iterable[int],
        diversity: float,
        include_missing: bool,
    ) -> pd.DataFrame:
        self.refresh()
        if lora_id not in self._pos:
            raise KeyError(f"no LoRA with id {lora_id} in the catalog")
        if lora_id not in self.index:
            raise LookupError(f"LoRA {lora_id} has no embedding yet (call wb.recommend.embed())")
        src = self._pos[lora_id]
        if base_model == "auto":
            base_model = self._docs["base_model"].iat[src]  # type: ignore[index]
        qvec = self._vecs[src] if self._has_vec[src] else self.index.vector(lora_id)
        w = self.weights
        n = len(self._pos)
        ids, sims = self.index.search(qvec, min(n, max(w.candidates, 4 * k) + 1))
        at = np.minimum(np.searchsorted(self._ids, ids), n - 1)
        known = self._ids[at] == ids  # ids the documents know (the index may lag a catalog change)
        cand = at[known].astype(np.int64)
        sem = np.asarray(sims, dtype=np.float32)[known]
        # shared trigger phrases / tags as a lexical component (so explanations match the score)
        shared_tags = self._tag_members.shared(src, cand)
        shared_trig = self._trig_members.shared(src, cand)
        lex = (0.15 * shared_tags + 0.5 * np.minimum(shared_trig, 3)).astype(np.float32)
        parts = {
            "score_semantic": sem,
            "score_trigger": np.zeros_like(sem),
            "score_lexical": lex,
            "score_popularity": self._prior[cand],
        }
        relevance = w.semantic * sem + lex
        excluded = {lora_id, *map(int, exclude)}
        return self._finish(
            cand,
            relevance,
            0.3 * w.popularity * self._prior[cand],
            self._feedback_parts("similar", str(lora_id), qvec, cand),
            parts,
            k,
            base_model,
            excluded,
            diversity,
            include_missing,
            explain=lambda p: self._explain_similar(src, p),
            formula=f"{w.semantic:g}×semantic + shared tags/triggers",
        )

    def feedback(self, query: str | int, lora_id: int, value: int, kind: str | None = None) -> None:
        """Record a thumbs up (+1) or down (-1) for `lora_id` as a result of `query`.

        `query` is the prompt or trigger text, or a LoRA id for `similar`; `kind` is
        'prompt', 'trigger' or 'similar' (guessed from the type of `query` when omitted).
        """
        if value not in (1, -1, 1.0, -1.0):
            raise ValueError("feedback value must be +1 or -1")
        if kind is None:
            kind = "similar" if isinstance(query, (int, np.integer)) else "prompt"
        if kind not in ("prompt", "trigger", "similar"):
            raise ValueError("kind must be 'prompt', 'trigger' or 'similar'")
        text = str(int(query)) if kind == "similar" else strip_lora_tags(str(query)).strip()
        with self.db.write() as con:
            con.execute(
                "INSERT INTO feedback (query, query_kind, lora_id, value) VALUES (?, ?, ?, ?)",
                [text, kind, int(lora_id), int(value)],
            )

    def feedback_log(self) -> pd.DataFrame:
        """Every recorded thumbs up/down, newest first."""
        return self.db.read_df("SELECT * FROM feedback ORDER BY id DESC")

    # -- ranking internals ----------------------------------------------------------------
    @_under_lock
    def _rank_text(
        self,
        text: str,
        kind: str,
        k: int,
        base_model: str | None,
        exclude: Iterable[int],
        diversity: float,
        include_missing: bool,
    ) -> pd.DataFrame:
        self.refresh()
        w = self.weights
        n = len(self._pos)
        if n == 0 or not text.strip():
            return self._empty()
        lex = self._lex
        assert lex is not None
        match = lex.match(text)
        fuzzy: dict[str, str] = {}
        if kind == "trigger":
            close, fuzzy = lex.close_phrases(text)
            match.phrase = np.maximum(match.phrase, close)
        trig_w = w.trigger * (2.0 if kind == "trigger" else 1.0)
        lexical = trig_w * match.phrase + w.lexical * match.bm25 + w.popularity * self._prior
        # candidates: best lexical plus nearest semantic neighbours
        c = min(n, w.candidates)
        lex_top = np.argpartition(-lexical, c - 1)[:c] if c < n else np.arange(n)
        semantic_ok = len(self.index) > 0
        qvec = None
        if semantic_ok:
            try:
                qvec = self._query_vector(text)
            except (ImportError, RuntimeError, OSError) as exc:  # no model available: lexical only
                warnings.warn(f"semantic ranking unavailable ({exc}); using lexical evidence only", stacklevel=3)
                semantic_ok = False
        if semantic_ok and qvec is not None:
            ids, _ = self.index.search(qvec, c)
            sem_top = [self._pos[int(i)] for i in ids if int(i) in self._pos]
            cand = np.unique(np.concatenate([lex_top, np.asarray(sem_top, dtype=np.int64)]))
            sem = self._vecs[cand] @ qvec
        else:
            cand = np.asarray(lex_top, dtype=np.int64)
            sem = np.zeros(len(cand), dtype=np.float32)
        parts = {
            "score_semantic": sem.astype(np.float32),
            "score_trigger": match.phrase[cand],
            "score_lexical": match.bm25[cand],
            "score_popularity": self._prior[cand],
        }
        relevance = trig_w * match.phrase[cand] + w.lexical * match.bm25[cand] + w.semantic * parts["score_semantic"]
        qtokens = set(match.query_tokens)
        phrases = set(match.phrases)
        return self._finish(
            cand,
            relevance,
            w.popularity * self._prior[cand],
            self._feedback_parts(kind, text.strip(), qvec, cand),
            parts,
            k,
            base_model,
            set(map(int, exclude)),
            diversity,
            include_missing,
            explain=lambda p: self._explain_text(p, qtokens, phrases, fuzzy),
            formula=f"{trig_w:g}×trigger + {w.lexical:g}×lexical + {w.semantic:g}×semantic",
        )

    def _feedback_parts(self, kind: str, query: str, qvec: np.ndarray | None, cand: np.ndarray) -> _FeedbackParts:
        """Σ value × query-similarity × (1 for the rated LoRA, share × cosine² for its liked neighbours).

        Explicit thumbs count for queries at least `feedback_min_similarity` alike, generations
        (implicit) only at `implicit_min_similarity`; each kind is kept apart for the reasons."""
        zeros = [np.zeros(len(cand), dtype=np.float32) for _ in range(6)]
        out = _FeedbackParts(*zeros)
        if not self._feedback or len(cand) == 0:
            return out
        w = self.weights
        text_kinds = ("prompt", "trigger")
        relevant = [f for f in self._feedback if (f.kind in text_kinds) == (kind in text_kinds)]
        if not relevant:
            return out
        cand_ids = self._ids[cand].tolist()
        cand_vecs: np.ndarray | None = None
        pos_in_cand = {i: j for j, i in enumerate(cand_ids)}
        for sig in relevant:
            if sig.query.lower() == query.lower():
                qsim = 1.0
            elif qvec is None:
                continue
            else:
                fvec = self._feedback_vector(sig.kind, sig.query)
                if fvec is None:
                    continue
                qsim = float(fvec @ qvec)
            if qsim < (w.implicit_min_similarity if sig.implicit else w.feedback_min_similarity):
                continue
            if qsim >= 0.999:  # the very same query: the person's verdict on exactly this ranking
                strength = w.same_query_boost * sig.value
            else:
                strength = sig.value * (qsim - w.feedback_min_similarity) / (1 - w.feedback_min_similarity)
            j = pos_in_cand.get(sig.lora_id)
            if j is not None:
                out.signal[j] += strength
                if sig.implicit:
                    out.used_similar[j] += strength
                elif strength < 0:
                    out.disliked[j] += strength
                elif qsim >= 0.999:
                    out.liked_same[j] += strength
                else:
                    out.liked_similar[j] += strength
            liked = self._pos.get(sig.lora_id)
            if not sig.implicit and sig.value > 0 and liked is not None and self._has_vec[liked]:
                if cand_vecs is None:
                    cand_vecs = self._vecs[cand]
                near = np.clip(cand_vecs @ self._vecs[liked], 0, 1) ** 2
                if j is not None:
                    near[j] = 0
                lift = (strength * w.neighbour_share * near).astype(np.float32)
                out.signal += lift
                out.neighbour += lift
        return out

    def _feedback_vector(self, kind: str, query: str) -> np.ndarray | None:
        if kind == "similar":
            try:
                p = self._pos.get(int(query))
            except ValueError:
                return None
            return self._vecs[p] if p is not None and self._has_vec[p] else None
        return self._query_vector(query)

    def _finish(
        self,
        cand: np.ndarray,
        relevance: np.ndarray,
        popularity: np.ndarray,
        fb: _FeedbackParts,
        parts: dict[str, np.ndarray],
        k: int,
        base_model: str | None,
        excluded: set[int],
        diversity: float,
        include_missing: bool,
        explain: Any,
        formula: str,
    ) -> pd.DataFrame:
        w = self.weights
        # usage and feedback scale the LoRA's own relevance: they reorder relevant results and cannot
        # lift a LoRA the query is not about
        base = np.maximum(relevance, 0)
        usage = (w.usage * base * self._usage[cand]).astype(np.float32)
        bounded = np.tanh(fb.signal)
        feedback = (base * np.where(bounded > 0, w.feedback_up, w.feedback_down) * bounded).astype(np.float32)
        total = relevance + popularity + usage + feedback
        parts = {**parts, "score_usage": usage, "score_feedback": feedback}
        ids = self._ids[cand]
        keep = np.ones(len(cand), dtype=bool)
        if excluded:
            keep &= ~np.isin(ids, np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
        family = _family(base_model) if base_model else None
        if family:
            codes = self._family_code[cand]
            keep &= (codes < 0) | (codes == self._family_names.get(family, -2))
        if not include_missing:
            keep &= ~self._missing[cand]
        order = np.flatnonzero(keep)
        order = order[np.argsort(-total[order], kind="stable")]
        # only the head can be shown: k results, or the pool MMR picks from
        order = self._one_per_file(cand, order, max(5 * k, 50) if diversity > 0 else k)
        if diversity > 0 and len(order) > k:
            order = self._mmr(cand, total, order, k, diversity)
        order = order[:k]
        if len(order) == 0:
            return self._empty()
        rows, found = self._catalog_rows(ids[order])
        at = order[found]
        scores = {
            "score": total[at].astype(float),
            **{name: values[at].astype(float) for name, values in parts.items()},
        }
        scores["reason"] = [self._reason(explain(int(cand[j])), fb, int(j), float(usage[j])) for j in at]
        scores["why"] = [
            f"{total[j]:.2f} = relevance {relevance[j]:.2f} ({formula}) + popularity "
            f"{popularity[j]:.2f} + usage {usage[j]:.2f} + feedback {feedback[j]:+.2f}"
            for j in at
        ]
        rows = pd.concat([rows, pd.DataFrame(scores)], axis=1)  # one concat, not a column insert per score
        if self.embedding:
            done, todo = self.embedding_progress or (0, 0)
            rows.attrs["embedding"] = {"done": done, "total": todo}
        return rows

    def _one_per_file(self, cand: np.ndarray, order: np.ndarray, limit: int) -> np.ndarray:
        """The first `limit` of `order`, keeping the best-ranked entry of each file (same SHA256 in two
        folders, or a file and its Civitai entry)."""
        seen: set[str] = set()
        keep = []
        for j in order.tolist():
            sha = self._sha[int(cand[j])]
            if sha is not None:
                if sha in seen:
                    continue
                seen.add(sha)
            keep.append(j)
            if len(keep) >= limit:
                break
        return np.asarray(keep, dtype=np.int64)

    def _catalog_rows(self, ids: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """Catalog rows (every column `catalog.query` gives) of `ids` in that order, and which of `ids`
        were found.  Cut from a pandas copy of the catalog snapshot made once per snapshot: converting
        ~50 Arrow columns and sorting them on every call cost more than the whole ranking."""
        catalog = self.wb.catalog
        cache = self._rows_cache
        if cache is None or cache[0] != catalog.snapshot_version():
            version, table = catalog.snapshot_table()
            frame = table.to_pandas(types_mapper=_python_strings)
            del table  # the Arrow copy is not kept: only the frame (and its sort) is
            frame_ids = frame["id"].to_numpy(dtype=np.int64)
            by_id = np.argsort(frame_ids, kind="stable")
            cache = (version, frame, frame_ids[by_id], by_id)
            self._rows_cache = cache  # one tuple, so a concurrent query never sees half of it
        _, frame, sorted_ids, by_id = cache
        if len(sorted_ids) == 0:
            return frame.iloc[0:0], np.zeros(len(ids), dtype=bool)
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        found = sorted_ids[at] == ids  # a LoRA removed since the documents were loaded is left out
        return frame.take(by_id[at[found]]).reset_index(drop=True), found

    @staticmethod
    def _reason(evidence: str, fb: _FeedbackParts, j: int, usage: float) -> str:
        """The evidence sentence plus each feedback component that actually moved this score."""
        bits = [evidence]
        if fb.liked_same[j] > 0:
            bits.append("you liked it for this query")
        elif fb.liked_similar[j] > 0:
            bits.append("you liked it for a similar query")
        if fb.disliked[j] < 0:
            bits.append("you disliked it for this or a similar query")
        if fb.used_similar[j] > 0:
            bits.append("used in a generation for a similar prompt")
        if fb.neighbour[j] > 0.01:
            bits.append("close to a LoRA you liked")
        return "; ".join(bits)

    def _mmr(self, cand: np.ndarray, total: np.ndarray, order: np.ndarray, k: int, diversity: float) -> np.ndarray:
        """Maximal marginal relevance: trade relevance for dissimilarity to what is already picked."""
        pool = order[: max(5 * k, 50)]
        vecs = self._vecs[cand[pool]]
        rel = total[pool]
        rel = (rel - rel.min()) / (np.ptp(rel) or 1.0)
        picked: list[int] = []
        max_sim = np.full(len(pool), -1.0, dtype=np.float32)
        for _ in range(min(k, len(pool))):
            mmr = (1 - diversity) * rel - diversity * np.maximum(max_sim, 0)
            if picked:
                mmr[picked] = -np.inf
            j = int(np.argmax(mmr))
            picked.append(j)
            max_sim = np.maximum(max_sim, vecs @ vecs[j])
        rest = [j for j in range(len(pool)) if j not in picked]
        return np.concatenate([pool[picked], pool[rest], order[len(pool) :]])

    def _empty(self) -> pd.DataFrame:
        frame = self.wb.catalog.query(ids=[-1], limit=0).iloc[0:0].copy()
        for col in SCORE_COLUMNS:
            frame[col] = pd.Series(dtype=float)
        frame["reason"] = pd.Series(dtype=str)
        frame["why"] = pd.Series(dtype=str)
        if self.embedding:
            done, todo = self.embedding_progress or (0, 0)
            frame.attrs["embedding"] = {"done": done, "total": todo}
        return frame

    # -- explanations ------------------------------------------------------------------------
    def _explain_text(self, p: int, qtokens: set[str], phrases: set[str], fuzzy: dict[str, str] | None = None) -> str:
        d = self._lexdocs[p]
        bits = []
        own = trigger_phrases(d.trigger_words)
        hit = [t for t in own if t in phrases]
        if hit:
            bits.append("trigger words in prompt: " + ", ".join(hit[:4]))
        close = [f"{t} (for '{fuzzy[t]}')" for t in own if fuzzy and t in fuzzy and t not in phrases]
        if close:
            bits.append("trigger words spelled alike: " + ", ".join(close[:3]))
        name_toks = set(content_tokens(d.name, split_camel=True))
        for f in d.file_names:
            name_toks |= set(content_tokens(f.rsplit(".", 1)[0], split_camel=True))
        named = sorted(name_toks & qtokens)
        if named:
            bits.append("name matches: " + ", ".join(named[:4]))
        tags = [t for t in d.tags if set(content_tokens(t)) and set(content_tokens(t)) <= qtokens]
        if tags:
            bits.append("tags: " + ", ".join(tags[:4]))
        self._explain_common(p, bits)
        return "; ".join(bits) if bits else "similar in meaning to the prompt"

    def _explain_similar(self, src: int, p: int) -> str:
        bits = []
        shared = sorted(self._tagsets[src] & self._tagsets[p])
        if shared:
            bits.append("shared tags: " + ", ".join(shared[:5]))
        trig = sorted(self._trigsets[src] & self._trigsets[p])
        if trig:
            bits.append("shared trigger words: " + ", ".join(trig[:4]))
        fa, fb = self._family[src], self._family[p]
        if fa and fa == fb:
            bits.append(f"same base model ({fa})")
        self._explain_common(p, bits, base=False)
        return "; ".join(bits) if bits else "similar description"

    def _explain_common(self, p: int, bits: list[str], base: bool = True) -> None:
        uses = int(self._usage_count[p])
        if uses:
            bits.append(f"used in {uses} generation{'s' if uses != 1 else ''}")
        if base and self._family[p]:
            bits.append(f"base model {self._family[p]}")


SCORE_COLUMNS = (
    "score",
    "score_semantic",
    "score_trigger",
    "score_lexical",
    "score_popularity",
    "score_usage",
    "score_feedback",
)
