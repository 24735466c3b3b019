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


def test_bracketed_and_dotted_trigger_words_match_as_prompts_write_them() -> None:
    """Danbooru-style triggers keep their qualifier in brackets and prompts write them plain, escaped
    (A1111's literal bracket) or glued; a version's decimal point is no sentence end."""
    docs = [
        LexDoc("Hu Tao", [], ["hu tao(genshin impact)"], [], ""),
        LexDoc("Retro", [], ["1990s \\(style\\)"], [], ""),
        LexDoc("Chinese girl", [], ["chinese-girl-v1.0"], [], ""),
        LexDoc("Plain", [], ["plain"], [], ""),
    ]
    index = LexicalIndex(docs)
    for prompt, doc in (
        ("1girl, hu tao (genshin impact), hat, red eyes", 0),
        ("masterpiece, (hu tao \\(genshin impact\\):1.2), solo", 0),
        ("botan \\(yu yu hakusho\\), 1990s \\(style\\), 1girl", 1),
        ("best quality, chinese-girl-v1.0 , cowboy shot", 2),
    ):
        match = index.match(prompt)
        assert match.phrase[doc] > 0 and int(match.phrase.argmax()) == doc, prompt
    # the boundaries that do separate concepts still do
    assert index.match("hu tao, genshin impact").phrase[0] == 0
    assert index.match("chinese girl. v1 0").phrase[2] == 0


def test_full_width_punctuation_separates_like_its_ascii_form() -> None:
    """A CJK keyboard's comma in trigger words or a prompt is a comma: "1girl， roujinzhi" holds two phrases."""
    index = LexicalIndex(
        [LexDoc("Roujinzhi", [], ["1girl， roujinzhi"], [], ""), LexDoc("Plain", [], ["plain"], [], "")]
    )
    assert "roujinzhi" in index.phrases.vocab
    for prompt in ("best quality, 1girl, roujinzhi, zen style", "1girl，roujinzhi（zen style：1.2）"):
        assert index.match(prompt).phrase[0] > 0, prompt
