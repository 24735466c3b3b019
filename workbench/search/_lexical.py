"""Lexical evidence for recommendations: trigger-phrase matches and BM25 over names, triggers and tags.

Prompts written for a LoRA usually contain its trigger words or words of its name
("hipoly 3d model", "mix4", "shuimo"), which a sentence embedding of a long tag list
blurs away.  This module finds that evidence exactly and weighs it by rarity:

* phrases: every trigger word (split on commas) is a phrase; a prompt containing it as a
  contiguous token run scores the phrase's IDF, where document frequency counts every
  LoRA whose text (name, triggers, tags, description) holds the phrase.  Generic triggers
  such as "masterpiece" or "1girl" appear in many descriptions and so weigh little.
* tokens: BM25 over weighted fields (name and file name > triggers > tags > description).

Pure numpy: postings live in CSR arrays, a query is a few ``np.bincount`` calls, so
scoring 50,000 LoRAs takes about a millisecond.  No torch, no scipy.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
# What separates concepts in a prompt: commas, semicolons, newlines, BREAK, `|` (alternation) and `:` (prompt
# editing), and a period unless it is a decimal point ("v1.0").  Brackets are not boundaries: A1111 drops emphasis
# brackets before the text encoder reads the prompt, and a Danbooru name keeps its qualifier in them
# ("hu tao (genshin impact)", "1990s \\(style\\)"), as do the trigger words of LoRAs trained on such tags.
_PROMPT_CHUNKS = re.compile(r"(?:[,;|\n:]|(?<!\d)\.|\.(?!\d))+|\bBREAK\b")
_WEIGHT = re.compile(r":\s*-?[0-9.]+")
_PHRASE_SPLIT = re.compile(r"[,;\n|]+")
_VERSIONISH = re.compile(
    r"^(?:v\d+[a-z]?|\d+(?:\.\d+)?|fp16|fp32|bf16|safetensors|ckpt|pt|lora|locon|lycoris|loha|lokr|lyco|dim\d*)$"
)
MAX_PHRASE_TOKENS = 8

# A few words carry no evidence whatever their frequency in the catalog.
STOPWORDS = frozenset(
    "a an and are as at be by for from in is it of on or the to with this that lora locon lycoris"
    " model style v1 v2 v3 sd sd1 sd15 sdxl".split()
)


def fold(text: str) -> str:
    """NFKC: full-width letters and punctuation as their plain forms, so "1girl， roujinzhi" (a CJK
    keyboard's comma) splits where "1girl, roujinzhi" does and "ｓｔｙｌｅ" is the word "style"."""
    return unicodedata.normalize("NFKC", text) if not text.isascii() else text


def tokens(text: str, split_camel: bool = False) -> list[str]:
    """Lower-case word tokens; underscores and punctuation separate words."""
    if not text:
        return []
    text = fold(text)
    if split_camel:
        text = _CAMEL.sub(" ", text)
    return _TOKEN.findall(text.lower())


def content_tokens(text: str, split_camel: bool = False) -> list[str]:
    """Tokens minus stop words and version/format noise (``v10``, ``fp16``)."""
    return [t for t in tokens(text, split_camel) if t not in STOPWORDS and not _VERSIONISH.match(t)]


def normalize_phrase(text: str) -> str:
    """Canonical form of a trigger phrase: weights dropped, tokens joined by one space."""
    return " ".join(tokens(_WEIGHT.sub(" ", text)))


def trigger_phrases(trigger_words: Iterable[str]) -> list[str]:
    """Distinct phrases of a LoRA's trigger words (a trained word may hold several, comma-separated)."""
    return list(_trigger_phrases(tuple(str(w) for w in (trigger_words if trigger_words is not None else ()))))


@functools.lru_cache(maxsize=65536)
def _trigger_phrases(trigger_words: tuple[str, ...]) -> tuple[str, ...]:
    # Recommendations explain hundreds of candidates per call: normalise each LoRA's words once.
    return tuple(phrase for phrase, _ in _distinct_parts(trigger_words) if phrase.count(" ") + 1 <= MAX_PHRASE_TOKENS)


def distinct_trigger_parts(trigger_words: Iterable[str]) -> list[str]:
    """The trigger words' parts (split like `trigger_phrases`) as written, each phrase once: trained-word
    lists often repeat a whole sample prompt per version or outfit, and an embedded payload should not
    weigh "(masterpiece:1.331)" once per repeat."""
    return [written for _, written in _distinct_parts(trigger_words)]


def _distinct_parts(trigger_words: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(normalised phrase, part as written) for each comma-separated part of the trigger words, first
    spelling of each phrase only."""
    seen: set[str] = set()
    for word in trigger_words:
        for part in _PHRASE_SPLIT.split(fold(str(word))):
            phrase = normalize_phrase(part)
            if phrase and phrase not in seen:
                seen.add(phrase)
                yield phrase, part.strip()


def prompt_ngrams(prompt: str, max_n: int = MAX_PHRASE_TOKENS) -> set[str]:
    """Every contiguous token run (up to ``max_n`` tokens) inside each comma/paren chunk of a prompt."""
    grams: set[str] = set()
    for chunk in _PROMPT_CHUNKS.split(_WEIGHT.sub(" ", fold(prompt or ""))):
        toks = tokens(chunk)
        for i in range(len(toks)):
            for j in range(i + 1, min(len(toks), i + max_n) + 1):
                grams.add(" ".join(toks[i:j]))
    return grams


def phrases_in(text: str, phrases: set[str], starts: dict[str, tuple[int, ...]]) -> set[str]:
    """Which of `phrases` occur in `text` as a token run inside one chunk: ``prompt_ngrams(text) &
    phrases``, but only the runs that begin with a phrase's first word and have one of its lengths
    (`starts`: first word -> lengths) are joined, not every run up to eight tokens of a long description."""
    found: set[str] = set()
    for chunk in _PROMPT_CHUNKS.split(_WEIGHT.sub(" ", fold(text or ""))):
        toks = tokens(chunk)
        for i, tok in enumerate(toks):
            lengths = starts.get(tok)
            if lengths is None:
                continue
            for n in lengths:
                if i + n <= len(toks):
                    gram = tok if n == 1 else " ".join(toks[i : i + n])
                    if gram in phrases:
                        found.add(gram)
    return found


def phrase_starts(phrases: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """First word -> the token lengths of the phrases that begin with it (for `phrases_in`)."""
    out: dict[str, set[int]] = {}
    for phrase in phrases:
        words = phrase.split(" ")
        out.setdefault(words[0], set()).add(len(words))
    return {word: tuple(sorted(lengths)) for word, lengths in out.items()}


@dataclass
class LexDoc:
    """The text of one LoRA that lexical matching looks at."""

    name: str = ""
    file_names: Sequence[str] = ()
    trigger_words: Sequence[str] = ()
    tags: Sequence[str] = ()
    description: str = ""


@dataclass
class FieldWeights:
    """BM25F field weights and parameters (tuned on the Civitai dev prompts)."""

    name: float = 3.0
    file: float = 2.0
    trigger: float = 2.0
    tag: float = 1.0
    description: float = 0.25
    k1: float = 1.2
    b: float = 0.5
    description_chars: int = 600
    phrase_p: float = 5.0
    token_p: float = 3.0


@dataclass
class LexicalMatch:
    """Scores of one query against every document, plus what matched (for explanations)."""

    phrase: np.ndarray
    bm25: np.ndarray
    phrases: list[str] = field(default_factory=list)
    query_tokens: list[str] = field(default_factory=list)


class _Postings:
    """term -> (doc ids, weights) in CSR form."""

    def __init__(self, n_docs: int, rows: dict[str, dict[int, float]]):
        self.n_docs = n_docs
        self.vocab = {t: i for i, t in enumerate(rows)}
        lengths = np.fromiter((len(d) for d in rows.values()), dtype=np.int64, count=len(rows))
        self.indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.indptr[1:])
        self.doc = np.empty(int(self.indptr[-1]), dtype=np.int32)
        self.weight = np.empty(int(self.indptr[-1]), dtype=np.float32)
        self._pow: dict[float, np.ndarray] = {}
        for i, d in enumerate(rows.values()):
            s = self.indptr[i]
            self.doc[s : s + len(d)] = np.fromiter(d.keys(), dtype=np.int32, count=len(d))
            self.weight[s : s + len(d)] = np.fromiter(d.values(), dtype=np.float32, count=len(d))

    def score(self, terms: Iterable[str], p: float = 1.0) -> tuple[np.ndarray, list[str]]:
        """Per-document p-norm of matched term weights (p > 1 favours one strong match over many weak ones)."""
        found = [t for t in terms if t in self.vocab]
        ids = [self.vocab[t] for t in found]
        if not ids:
            return np.zeros(self.n_docs, dtype=np.float32), []
        docs = np.concatenate([self.doc[self.indptr[i] : self.indptr[i + 1]] for i in ids])
        weight = self.weight if p == 1.0 else self._powered(p)
        ws = np.concatenate([weight[self.indptr[i] : self.indptr[i + 1]] for i in ids])
        if p == 1.0:
            return np.bincount(docs, weights=ws, minlength=self.n_docs).astype(np.float32), found
        summed = np.bincount(docs, weights=ws, minlength=self.n_docs)
        # the root only where a term matched (`pow` costs ~12 ns a value; cbrt is 10x cheaper)
        hit = np.flatnonzero(summed > 0)
        out = np.zeros(self.n_docs, dtype=np.float32)
        out[hit] = np.cbrt(summed[hit]) if p == 3.0 else np.power(summed[hit], 1.0 / p)
        return out, found

    def _powered(self, p: float) -> np.ndarray:
        """Every posting's weight to the power `p`, computed once per `p` (common terms have tens of
        thousands of postings; raising them per query was most of a query's cost)."""
        cached = self._pow.get(p)
        if cached is None:
            cached = self._pow[p] = np.power(self.weight, p, dtype=np.float64)
        return cached

    def terms_of(self, doc_id: int, terms: Iterable[str]) -> list[str]:
        """Which of ``terms`` have a posting for ``doc_id`` (used to explain a score)."""
        hit = []
        for t in terms:
            i = self.vocab.get(t)
            if i is not None and doc_id in self.doc[self.indptr[i] : self.indptr[i + 1]]:
                hit.append(t)
        return hit


class LexicalIndex:
    """Trigger-phrase and BM25F postings over a list of LoRAs (positions = row order)."""

    def __init__(self, docs: Sequence[LexDoc], weights: FieldWeights | None = None):
        self.weights = w = weights or FieldWeights()
        n = len(docs)
        self.n_docs = n
        # --- phrases: trigger phrases, IDF over each doc's whole text --------------------
        doc_phrases = [trigger_phrases(d.trigger_words) for d in docs]
        all_phrases = {p for ps in doc_phrases for p in ps}
        phrase_df: dict[str, int] = dict.fromkeys(all_phrases, 0)
        starts = phrase_starts(all_phrases)
        for d, own in zip(docs, doc_phrases):
            text = " ".join([d.name or "", *(d.file_names or ()), *(d.tags or ()), (d.description or "")])
            present = phrases_in(text, all_phrases, starts) | set(own)
            for p in present:
                phrase_df[p] += 1
        rows: dict[str, dict[int, float]] = {}
        for i, ps in enumerate(doc_phrases):
            for p in ps:
                idf = math.log((n + 1) / (phrase_df[p] + 0.5))
                if p in STOPWORDS or idf <= 0:
                    continue
                rows.setdefault(p, {})[i] = idf
        self.phrases = _Postings(n, rows)
        # --- tokens: BM25F ----------------------------------------------------------------
        bags: list[dict[str, float]] = []
        lengths = np.zeros(n, dtype=np.float64)
        token_df: dict[str, int] = {}
        for i, d in enumerate(docs):
            bag: dict[str, float] = {}
            for weight, toks in (
                (w.name, content_tokens(d.name, split_camel=True)),
                (w.file, [t for f in d.file_names or () for t in content_tokens(_stem(f), split_camel=True)]),
                (w.trigger, [t for tw in d.trigger_words or () for t in content_tokens(tw)]),
                (w.tag, [t for tg in d.tags or () for t in content_tokens(tg)]),
                (w.description, content_tokens((d.description or "")[: w.description_chars])),
            ):
                for t in toks:
                    bag[t] = bag.get(t, 0.0) + weight
            bags.append(bag)
            lengths[i] = sum(bag.values())
            for t in bag:
                token_df[t] = token_df.get(t, 0) + 1
        avg = float(lengths.mean()) if n else 1.0
        token_idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in token_df.items()}  # once per token
        rows = {t: {} for t in token_df}
        for i, bag in enumerate(bags):
            norm = w.k1 * (1 - w.b + w.b * float(lengths[i]) / (avg or 1.0))
            for t, tf in bag.items():
                rows[t][i] = token_idf[t] * tf * (w.k1 + 1) / (tf + norm)
        self.tokens = _Postings(n, rows)
        self._fuzzy_keys: list[str] | None = None
        self._fuzzy_targets: list[list[int]] = []

    def close_phrases(self, query: str, min_ratio: float = 70.0, limit: int = 20) -> tuple[np.ndarray, dict[str, str]]:
        """Trigger phrases spelled like a part of `query` that matched no phrase exactly: "wtrclr" ~
        "wtrcolor style" (through its word "wtrcolor"), rapidfuzz ratio >= `min_ratio`.  Returns
        per-document scores (IDF x similarity²) and {phrase: the query part it resembles}."""
        from rapidfuzz import fuzz, process

        out = np.zeros(self.n_docs, dtype=np.float32)
        found: dict[str, str] = {}
        if self._fuzzy_keys is None:
            targets: dict[str, list[int]] = {}
            for phrase, i in self.phrases.vocab.items():
                targets.setdefault(phrase, []).append(i)
                if " " in phrase:
                    for word in phrase.split():
                        if len(word) >= 4 and word not in STOPWORDS:
                            targets.setdefault(word, []).append(i)
            self._fuzzy_keys = list(targets)
            self._fuzzy_targets = list(targets.values())
        phrase_of = list(self.phrases.vocab)
        for chunk in _PHRASE_SPLIT.split(fold(query or "")):
            wanted = normalize_phrase(chunk)
            if len(wanted) < 3 or wanted in self.phrases.vocab:
                continue
            for _key, ratio, k in process.extract(
                wanted, self._fuzzy_keys, scorer=fuzz.ratio, score_cutoff=min_ratio, limit=limit
            ):
                for i in self._fuzzy_targets[k]:
                    docs = self.phrases.doc[self.phrases.indptr[i] : self.phrases.indptr[i + 1]]
                    weights = self.phrases.weight[self.phrases.indptr[i] : self.phrases.indptr[i + 1]]
                    np.maximum.at(out, docs, weights * np.float32((ratio / 100.0) ** 2))
                    found.setdefault(phrase_of[i], chunk.strip())
        return out, found

    def match(self, query: str) -> LexicalMatch:
        """Score ``query`` (a prompt or trigger text) against every document."""
        phrase, matched = self.phrases.score(prompt_ngrams(query), self.weights.phrase_p)
        qtoks = list(dict.fromkeys(content_tokens(query)))
        bm25, _ = self.tokens.score(qtoks, self.weights.token_p)
        return LexicalMatch(phrase=phrase, bm25=bm25, phrases=matched, query_tokens=qtoks)


def _stem(file_name: str) -> str:
    base = file_name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base
