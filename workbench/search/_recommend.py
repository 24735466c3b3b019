"""Recommendations: LoRAs similar to a LoRA, fitting a prompt, or matching trigger text.

Ranking fuses four kinds of evidence, each kept as its own column so a person can see
why a LoRA came up:

* ``score_trigger``: the prompt contains one of the LoRA's trigger phrases (IDF-weighted,
  see `workbench.search._lexical`); the strongest single signal on real Civitai prompts.
* ``score_lexical``: BM25F over name, file name, trigger words, tags, description.
* ``score_semantic``: cosine between sentence embeddings of the query and the LoRA's payload
  (FAISS index, `workbench.search._vector_index`).
* ``score_popularity``: Civitai downloads and local use, a weak prior that breaks ties.
* ``score_feedback``: thumbs up/down on the same or similar queries, and LoRAs used in
  generations for similar prompts (implicit positives); a liked LoRA also lifts its neighbours.

Opening a `Recommender` or calling `similar` on an embedded catalog never imports torch;
only embedding a new prompt or payload does.
"""

from __future__ import annotations

import math
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
    feedback: float = 6.0
    # feedback spreading: only queries at least this similar count; a liked LoRA lifts
    # neighbours by `neighbour_share` x their cosine to it.
    feedback_min_similarity: float = 0.55
    neighbour_share: float = 0.5
    same_query_boost: float = 2.0  # feedback on the identical query counts double
    implicit_value: float = 0.5  # a generation that used a LoRA counts as half a thumbs-up
    candidates: int = 200


def strip_lora_tags(prompt: str) -> str:
    """A prompt without its ``<lora:…>``/``<lyco:…>`` tags (they name LoRAs already chosen)."""
    return _EXTRA_TAGS.sub(" ", prompt or "")


def _family(base_model: Any) -> str | None:
    from workbench.files import base_model_family

    if not isinstance(base_model, str) or not base_model:
        return None
    return base_model_family(base_model) or base_model


_DOCS_SQL = """
SELECT v.id, v.name, v.file_name, v.trigger_words, v.tags, v.base_model, v.description, v.missing,
       v.usage_count, v.civitai_model_id, l.training_tags,
       TRY_CAST(json_extract(l.stats, '$.downloadCount') AS DOUBLE) AS downloads,
       json_extract_string(l.metadata, '$.civitai.versions[*].files[*].name') AS civitai_files
FROM lora_view v JOIN loras l ON l.id = v.id
ORDER BY v.id
"""

_FINGERPRINT_SQL = """
SELECT count(*), coalesce(bit_xor(hash(v.id, v.name, v.file_name, v.trigger_words, v.tags, v.base_model,
                                        v.description, l.training_tags, l.stats, l.metadata)), 0)
FROM lora_view v JOIN loras l ON l.id = v.id
"""


def _with_feedback(reason: str, feedback: float) -> str:
    if feedback > 0.05:
        return f"{reason}; liked (or used) for this or a similar query"
    if feedback < -0.05:
        return f"{reason}; disliked for this or a similar query"
    return reason


class Recommender:
    """Recommendations over one workbench's catalog (``wb.recommend``)."""

    def __init__(
        self,
        wb: Workbench,
        model: str | None = None,
        *,
        device: str | None = None,
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        weights: RankWeights | None = None,
        auto_embed: bool = True,
        progress: bool = True,
    ) -> None:
        self.wb = wb
        self.db = wb.catalog.db
        self.weights = weights or RankWeights()
        self.embedder = emb.Embedder(model, device=device)
        self.index = VectorIndex(Path(wb.home) / "index", self.embedder.name, hnsw_threshold=hnsw_threshold)
        self.auto_embed = auto_embed
        self.progress = progress
        self._lock = threading.RLock()
        self._stamp: str | None = None
        self._fingerprint: tuple[int, int] | None = None
        self._docs: pd.DataFrame | None = None
        self._pos: dict[int, int] = {}
        self._lex: LexicalIndex | None = None
        self._prior = np.zeros(0, dtype=np.float32)
        self._family: list[str | None] = []
        self._feedback: list[tuple[str, str, int, float]] = []
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()

    # -- keeping up with the catalog ------------------------------------------------------
    def refresh(self) -> None:
        """Bring documents, lexical index, vectors and feedback up to date with the catalog (cheap when nothing changed)."""
        with self._lock:
            stamp = self.db.stamp()
            if stamp == self._stamp and self._docs is not None and not self.index.changed_on_disk():
                return
            with self.db.read() as con:
                fingerprint = tuple(con.execute(_FINGERPRINT_SQL).fetchone())
            if fingerprint != self._fingerprint or self._docs is None:
                self._load_docs()
                self._fingerprint = fingerprint  # type: ignore[assignment]
            self._sync_vectors()
            self._load_signals()
            self._stamp = stamp

    def _load_docs(self) -> None:
        frame = self.db.read_df(_DOCS_SQL)
        self._docs = frame
        self._pos = {int(i): p for p, i in enumerate(frame["id"])}
        docs = []
        for r in frame.itertuples(index=False):
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
                    description=emb.strip_html(r.description),
                )
            )
        self._lexdocs = docs
        self._lex = LexicalIndex(docs)
        downloads = frame["downloads"].fillna(0).to_numpy(dtype=np.float64)
        self._download_prior = np.clip(np.log1p(downloads) / math.log1p(1e6), 0, 1.5).astype(np.float32)
        self._prior = self._download_prior.copy()
        self._family = [_family(b) for b in frame["base_model"]]
        self._payloads = {
            int(r["id"]): emb.payload(r)
            for r in frame[
                ["id", "name", "file_name", "trigger_words", "tags", "base_model", "description", "training_tags"]
            ].to_dict("records")
        }

    def _sync_vectors(self) -> None:
        """Embed stale payloads (if allowed) and patch or rebuild the FAISS index to match the catalog."""
        if self.index.index is None or self.index.changed_on_disk():
            self.index.load()
        wanted = {i: emb.payload_hash(t) for i, t in self._payloads.items()}
        load, drop = self.index.plan(wanted)
        if not load and not drop:
            return
        stored = emb.stored_hashes(self.db, self.embedder.name)
        if any(stored.get(i) != wanted[i] for i in load):
            if not self.auto_embed:
                load = [i for i in load if stored.get(i) == wanted[i]]
                wanted = {i: h for i, h in wanted.items() if stored.get(i) == h or self.index.hashes.get(i) == h}
            else:
                emb.embed_catalog(self.db, self.embedder, progress=self.progress, payloads=self._payloads)
        if self.index.needs_rebuild(wanted, len(load), len(drop)):
            ids, vectors = emb.load_vectors(self.db, self.embedder.name)
            keep = np.array([int(i) in wanted for i in ids], dtype=bool)
            self.index.rebuild(ids[keep], vectors[keep] if len(ids) else vectors, wanted)
        else:
            ids, vectors = (
                emb.load_vectors(self.db, self.embedder.name, load) if load else (np.zeros(0, np.int64), None)
            )
            self.index.apply(ids, vectors, wanted, drop)
        self.index.save()

    def _load_signals(self) -> None:
        """Explicit feedback and implicit positives (LoRAs used by generations, with their prompts)."""
        rows = self.db.read_df("SELECT query, query_kind, lora_id, value FROM feedback ORDER BY id")
        signals = [(str(q or ""), str(k or "prompt"), int(i), float(v)) for q, k, i, v in rows.itertuples(index=False)]
        try:
            used = self.db.read_df(
                "SELECT json_extract_string(j.params, '$.request.prompt') AS prompt, e.lora_id "
                "FROM usage_events e JOIN jobs j ON j.id = e.job_id WHERE e.lora_id IS NOT NULL"
            )
        except Exception:  # jobs written in another shape: implicit signals are a bonus, not a requirement
            used = pd.DataFrame(columns=["prompt", "lora_id"])
        counts = self.db.read_df("SELECT lora_id, count(*) AS n FROM usage_events GROUP BY lora_id")
        usage = np.zeros(len(self._pos), dtype=np.float64)
        for lora_id, n in counts.itertuples(index=False):
            if int(lora_id) in self._pos:
                usage[self._pos[int(lora_id)]] = n
        self._docs["usage_count"] = usage.astype(np.int64)  # type: ignore[index]
        self._prior = self._download_prior + (0.5 * np.log1p(usage) / math.log1p(20)).astype(np.float32)
        for prompt, lora_id in used.itertuples(index=False):
            text = strip_lora_tags(prompt or "").strip()
            if text:
                signals.append((text, "prompt", int(lora_id), self.weights.implicit_value))
        self._feedback = signals

    def embed(self, progress: bool = True, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Embed every new or changed LoRA now (otherwise done on first use); returns how many."""
        with self._lock:
            self._load_docs()
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
        """LoRAs whose trigger words (or name) match `text`; exact trigger phrases first."""
        return self._rank_text(text, "trigger", k, base_model, exclude, diversity, include_missing)

    def similar(
        self,
        lora_id: int,
        k: int = 10,
        base_model: str | None = "auto",
        exclude: Iterable[int] = (),
        diversity: float = 0.0,
        include_missing: bool = True,
    ) -> pd.DataFrame:
        """LoRAs like `lora_id`; by default only those compatible with its base model ("auto")."""
        self.refresh()
        lora_id = int(lora_id)
        if lora_id not in self._pos:
            raise KeyError(f"no LoRA with id {lora_id} in the catalog")
        if lora_id not in self.index:
            raise LookupError(f"LoRA {lora_id} has no embedding yet (call wb.recommend.embed())")
        src = self._pos[lora_id]
        if base_model == "auto":
            base_model = self._docs["base_model"].iat[src]  # type: ignore[index]
        qvec = self.index.vector(lora_id)
        w = self.weights
        n = len(self._pos)
        ids, sims = self.index.search(qvec, min(n, max(w.candidates, 4 * k) + 1))
        cand = np.array([self._pos[int(i)] for i in ids if int(i) in self._pos], dtype=np.int64)
        sem = np.array([s for i, s in zip(ids, sims) if int(i) in self._pos], dtype=np.float32)
        # shared trigger phrases / tags as a lexical component (so explanations match the score)
        src_doc = self._lexdocs[src]
        src_tags = {t.lower() for t in src_doc.tags}
        src_trig = set(trigger_phrases(src_doc.trigger_words))
        lex = np.zeros(len(cand), dtype=np.float32)
        for j, p in enumerate(cand):
            d = self._lexdocs[p]
            shared_tags = len(src_tags & {t.lower() for t in d.tags})
            shared_trig = len(src_trig & set(trigger_phrases(d.trigger_words)))
            lex[j] = 0.15 * shared_tags + 0.5 * min(shared_trig, 3)
        feedback = self._feedback_scores("similar", str(lora_id), qvec, cand)
        total = w.semantic * sem + lex + 0.3 * w.popularity * self._prior[cand] + w.feedback * feedback
        parts = {
            "score_semantic": sem,
            "score_trigger": np.zeros_like(sem),
            "score_lexical": lex,
            "score_popularity": self._prior[cand],
            "score_feedback": feedback,
        }
        excluded = {lora_id, *map(int, exclude)}
        return self._finish(
            cand,
            total,
            parts,
            k,
            base_model,
            excluded,
            diversity,
            include_missing,
            explain=lambda p: self._explain_similar(src, p),
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
        match = self._lex.match(text)  # type: ignore[union-attr]
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
        if semantic_ok:
            ids, _ = self.index.search(qvec, c)
            sem_top = [self._pos[int(i)] for i in ids if int(i) in self._pos]
            cand = np.unique(np.concatenate([lex_top, np.asarray(sem_top, dtype=np.int64)]))
            vecs = self.index.vectors([int(self._docs["id"].iat[p]) for p in cand])  # type: ignore[index]
            sem = vecs @ qvec
        else:
            cand = np.asarray(lex_top, dtype=np.int64)
            sem = np.zeros(len(cand), dtype=np.float32)
        feedback = self._feedback_scores(kind, text.strip(), qvec, cand)
        total = lexical[cand] + w.semantic * sem + w.feedback * feedback
        parts = {
            "score_semantic": sem.astype(np.float32),
            "score_trigger": match.phrase[cand],
            "score_lexical": match.bm25[cand],
            "score_popularity": self._prior[cand],
            "score_feedback": feedback,
        }
        qtokens = set(match.query_tokens)
        phrases = set(match.phrases)
        return self._finish(
            cand,
            total,
            parts,
            k,
            base_model,
            set(map(int, exclude)),
            diversity,
            include_missing,
            explain=lambda p: self._explain_text(p, qtokens, phrases),
        )

    def _feedback_scores(self, kind: str, query: str, qvec: np.ndarray | None, cand: np.ndarray) -> np.ndarray:
        """Σ value × query-similarity × (1 for the rated LoRA, share × cosine for its neighbours)."""
        out = np.zeros(len(cand), dtype=np.float32)
        if not self._feedback or len(cand) == 0:
            return out
        w = self.weights
        text_kinds = ("prompt", "trigger")
        relevant = [f for f in self._feedback if (f[1] in text_kinds) == (kind in text_kinds)]
        if not relevant:
            return out
        cand_ids = [int(self._docs["id"].iat[p]) for p in cand]  # type: ignore[index]
        cand_vecs = self.index.vectors(cand_ids) if len(self.index) else None
        pos_in_cand = {i: j for j, i in enumerate(cand_ids)}
        for fq, fkind, lora_id, value in relevant:
            if fq.lower() == query.lower():
                qsim = 1.0
            elif qvec is None:
                continue
            else:
                fvec = self._feedback_vector(fkind, fq)
                if fvec is None:
                    continue
                qsim = float(fvec @ qvec)
            if qsim < w.feedback_min_similarity:
                continue
            if qsim >= 0.999:  # the very same query: the person's verdict on exactly this ranking
                strength = w.same_query_boost * value
            else:
                strength = value * (qsim - w.feedback_min_similarity) / (1 - w.feedback_min_similarity)
            j = pos_in_cand.get(lora_id)
            if j is not None:
                out[j] += strength
            if cand_vecs is not None and lora_id in self.index and value > 0:
                near = cand_vecs @ self.index.vector(lora_id)
                near[j if j is not None else slice(0, 0)] = 0
                out += strength * w.neighbour_share * np.clip(near, 0, 1) ** 2
        return out

    def _feedback_vector(self, kind: str, query: str) -> np.ndarray | None:
        if kind == "similar":
            try:
                return self.index.vector(int(query))
            except (KeyError, ValueError):
                return None
        return self._query_vector(query)

    def _finish(
        self,
        cand: np.ndarray,
        total: np.ndarray,
        parts: dict[str, np.ndarray],
        k: int,
        base_model: str | None,
        excluded: set[int],
        diversity: float,
        include_missing: bool,
        explain: Any,
    ) -> pd.DataFrame:
        docs = self._docs
        ids = docs["id"].to_numpy()[cand]  # type: ignore[index]
        keep = np.array([int(i) not in excluded for i in ids], dtype=bool)
        family = _family(base_model) if base_model else None
        if family:
            keep &= np.array([self._family[p] in (None, family) for p in cand], dtype=bool)
        if not include_missing:
            keep &= ~docs["missing"].fillna(False).to_numpy(dtype=bool)[cand]  # type: ignore[index]
        order = np.flatnonzero(keep)
        order = order[np.argsort(-total[order], kind="stable")]
        if diversity > 0 and len(order) > k:
            order = self._mmr(cand, total, order, k, diversity)
        order = order[:k]
        if len(order) == 0:
            return self._empty()
        chosen = [int(i) for i in ids[order]]
        rows = self.wb.catalog.query(ids=chosen, limit=len(chosen))
        rows = rows.set_index("id").loc[[i for i in chosen if i in set(rows["id"])]].reset_index()
        at = {int(i): j for j, i in zip(order, ids[order])}
        rows["score"] = [float(total[at[i]]) for i in rows["id"]]
        for name, values in parts.items():
            rows[name] = [float(values[at[i]]) for i in rows["id"]]
        rows["reason"] = [
            _with_feedback(explain(int(cand[at[i]])), float(parts["score_feedback"][at[i]])) for i in rows["id"]
        ]
        return rows

    def _mmr(self, cand: np.ndarray, total: np.ndarray, order: np.ndarray, k: int, diversity: float) -> np.ndarray:
        """Maximal marginal relevance: trade relevance for dissimilarity to what is already picked."""
        pool = order[: max(5 * k, 50)]
        vecs = self.index.vectors([int(self._docs["id"].iat[cand[j]]) for j in pool])  # type: ignore[index]
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
        for col in ("score", "score_semantic", "score_trigger", "score_lexical", "score_popularity", "score_feedback"):
            frame[col] = pd.Series(dtype=float)
        frame["reason"] = pd.Series(dtype=str)
        return frame

    # -- explanations ------------------------------------------------------------------------
    def _explain_text(self, p: int, qtokens: set[str], phrases: set[str]) -> str:
        d = self._lexdocs[p]
        bits = []
        hit = [t for t in trigger_phrases(d.trigger_words) if t in phrases]
        if hit:
            bits.append("trigger words in prompt: " + ", ".join(hit[:4]))
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
        a, b = self._lexdocs[src], self._lexdocs[p]
        bits = []
        shared = sorted({t.lower() for t in a.tags} & {t.lower() for t in b.tags})
        if shared:
            bits.append("shared tags: " + ", ".join(shared[:5]))
        trig = sorted(set(trigger_phrases(a.trigger_words)) & set(trigger_phrases(b.trigger_words)))
        if trig:
            bits.append("shared trigger words: " + ", ".join(trig[:4]))
        fa, fb = self._family[src], self._family[p]
        if fa and fa == fb:
            bits.append(f"same base model ({fa})")
        self._explain_common(p, bits, base=False)
        return "; ".join(bits) if bits else "similar description"

    def _explain_common(self, p: int, bits: list[str], base: bool = True) -> None:
        docs = self._docs
        uses = int(docs["usage_count"].iat[p] or 0)  # type: ignore[index]
        if uses:
            bits.append(f"used in {uses} generation{'s' if uses != 1 else ''}")
        if base and self._family[p]:
            bits.append(f"base model {self._family[p]}")
