"""Lexical evidence: the fast paths give exactly what the plain definitions give."""

from __future__ import annotations

import numpy as np

from workbench.search import (
    LexDoc,
    LexicalIndex,
    phrase_starts,
    phrases_in,
    prompt_ngrams,
)

DOCS = [
    LexDoc("Ink Wash", ["ink_wash_v2.safetensors"], ["inkwash style", "sumi e"], ["ink", "style"], "ink wash, sumi e"),
    LexDoc("Neon City", ["neon.safetensors"], ["neoncity, night city"], ["cyberpunk"], "<p>neon night city</p>"),
    LexDoc("Sumi Mountains", [], ["sumi e mountains"], ["ink", "mountains"], "Sumi e mountains (inkwash style)."),
    LexDoc("Plain", [], [], [], ""),
]


def test_phrases_in_equals_every_ngram_intersected() -> None:
    phrases = {"inkwash style", "sumi e", "sumi e mountains", "neoncity", "night city", "e", "a b c d e f g h"}
    starts = phrase_starts(phrases)
    texts = [
        "Sumi e mountains, inkwash style (night city:1.2) BREAK neoncity",
        "a b c d e f g h i",
        "sumi. e mountains",  # a chunk boundary splits the phrase
        "",
        "e e e sumi e",
    ]
    for text in texts:
        assert phrases_in(text, phrases, starts) == prompt_ngrams(text) & phrases, text


def test_p_norm_scores_match_the_definition() -> None:
    index = LexicalIndex(DOCS)
    for query in ("ink wash sumi e mountains", "neon night city cyberpunk", "nothing matches", ""):
        m = index.match(query)
        for postings, p, got in ((index.phrases, 5.0, m.phrase), (index.tokens, 3.0, m.bm25)):
            expect = np.zeros(len(DOCS))
            for term in m.phrases if postings is index.phrases else m.query_tokens:
                i = postings.vocab.get(term)
                if i is None:
                    continue
                for d, w in zip(
                    postings.doc[postings.indptr[i] : postings.indptr[i + 1]],
                    postings.weight[postings.indptr[i] : postings.indptr[i + 1]],
                ):
                    expect[d] += float(w) ** p
            assert np.allclose(got, expect ** (1 / p), rtol=1e-5), query
    assert index.match("sumi e mountains").phrase.argmax() == 2
