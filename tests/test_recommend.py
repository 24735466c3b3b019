"""Recommendations end to end: real MiniLM embeddings, real FAISS, real DuckDB catalog.

One small catalog (real Civitai items + a few hand-made ones) is embedded once per module;
tests that write (feedback, usage, edits) work on a copy of that home.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import workbench
from workbench.catalog import import_items, read_items
from workbench.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def _item(
    mid: int, name: str, words: list[str], tags: list[str], desc: str, base: str = "SD 1.5", dl: int = 100
) -> dict:
    return {
        "id": mid,
        "name": name,
        "description": desc,
        "tags": tags,
        "creator": "tester",
        "type": "LORA",
        "stats": {"downloadCount": dl},
        "modelVersions": [
            {
                "id": mid * 10,
                "baseModel": base,
                "trainedWords": words,
                "files": [
                    {
                        "name": f"{name.lower().replace(' ', '_')}.safetensors",
                        "primary": True,
                        "sizeKB": 100.0,
                        "hashes": {"SHA256": f"{mid:064x}"},
                    }
                ],
            }
        ],
    }


MADE = [
    _item(
        900001,
        "Ink Wash Painting",
        ["inkwash style"],
        ["style", "ink", "chinese painting"],
        "<p>Traditional Chinese <b>ink wash</b> painting, sumi-e brush strokes on rice paper.</p>",
    ),
    _item(
        900002,
        "Sumi-e Brush Landscape",
        ["sumie landscape"],
        ["style", "ink", "landscape"],
        "Japanese sumi-e ink brush landscapes: mountains, mist, monochrome ink.",
    ),
    _item(
        900003,
        "Chinese Ink Mountains",
        ["inkmount"],
        ["style", "ink", "mountains"],
        "Ink painting of misty mountains and rivers in the Chinese shanshui tradition.",
    ),
    _item(
        900004,
        "Cyber Neon City",
        ["neoncity"],
        ["style", "cyberpunk", "city"],
        "Neon lights, rainy cyberpunk streets, futuristic city at night.",
    ),
    _item(
        900005,
        "Cyberpunk Street XL",
        ["cyberstreet"],
        ["style", "cyberpunk", "city"],
        "Cyberpunk night streets with neon signs, for SDXL.",
        base="SDXL 1.0",
    ),
    _item(
        900006,
        "Watercolor Flowers",
        ["wcflowers"],
        ["style", "watercolor", "flowers"],
        "Soft watercolor flowers and botanical illustrations.",
    ),
]


@pytest.fixture(scope="module")
def base_home(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    home = tmp_path_factory.mktemp("rec") / "home"
    wb = workbench.open(home)
    real = list(itertools.islice(read_items(shared_data / "civitai" / "loras_2023.jsonl.gz"), 24))
    import_items(wb.db, real + MADE)
    assert wb.recommend.embed(progress=False) == 30
    return home


@pytest.fixture
def wb(base_home: Path, tmp_path: Path) -> workbench.Workbench:
    """A private copy of the embedded home (so writes stay in this test)."""
    home = tmp_path / "home"
    shutil.copytree(base_home, home)
    return workbench.open(home)


def _id(wb: workbench.Workbench, civitai_id: int) -> int:
    df = wb.catalog.query()
    return int(df.loc[df["civitai_model_id"] == civitai_id, "id"].iloc[0])


SCORE_COLUMNS = [
    "score",
    "score_semantic",
    "score_trigger",
    "score_lexical",
    "score_popularity",
    "score_feedback",
    "reason",
]


def test_for_prompt_finds_trigger_and_explains(wb: workbench.Workbench) -> None:
    df = wb.recommend.for_prompt("masterpiece, 1girl, inkwash style, mountains, <lora:foo:0.8>", k=5)
    assert set(SCORE_COLUMNS) <= set(df.columns)
    assert {"id", "name", "path", "trigger_words", "tags", "base_model", "missing"} <= set(df.columns)
    assert df.iloc[0]["civitai_model_id"] == 900001
    assert "inkwash style" in df.iloc[0]["reason"]
    assert list(df["score"]) == sorted(df["score"], reverse=True)
    # semantic evidence without any shared word: ink painting LoRAs for a brush-painting prompt
    df = wb.recommend.for_prompt("black and white brush painting of foggy peaks", k=3)
    assert set(df["civitai_model_id"]) & {900001, 900002, 900003}


def test_base_model_filter_and_exclude(wb: workbench.Workbench) -> None:
    df = wb.recommend.for_prompt("cyberpunk city at night, neon", k=10)
    assert {900004, 900005} <= set(df["civitai_model_id"])
    df = wb.recommend.for_prompt("cyberpunk city at night, neon", k=10, base_model="SD1")
    assert 900005 not in set(df["civitai_model_id"]) and 900004 in set(df["civitai_model_id"])
    df = wb.recommend.for_prompt("cyberpunk city at night, neon", k=10, base_model="Pony")  # SDXL family
    assert 900005 in set(df["civitai_model_id"]) and 900004 not in set(df["civitai_model_id"])
    neon = _id(wb, 900004)
    assert neon not in set(wb.recommend.for_prompt("cyberpunk city, neon", k=10, exclude=[neon])["id"])


def test_similar_and_by_trigger(wb: workbench.Workbench) -> None:
    ink = _id(wb, 900001)
    df = wb.recommend.similar(ink, k=5)
    assert ink not in set(df["id"])
    assert set(df["civitai_model_id"].iloc[:2]) <= {900002, 900003}
    assert "shared tags" in df.iloc[0]["reason"] and "ink" in df.iloc[0]["reason"]
    xl = _id(wb, 900005)
    assert set(wb.recommend.similar(xl, k=10)["base_model"].dropna()) <= {"SDXL"}  # auto: same family only
    assert len(wb.recommend.similar(xl, k=10, base_model=None)) == 10
    df = wb.recommend.by_trigger("neoncity", k=3)
    assert df.iloc[0]["civitai_model_id"] == 900004 and "neoncity" in df.iloc[0]["reason"]
    with pytest.raises(KeyError):
        wb.recommend.similar(10**9)


def test_diversity_reorders_but_keeps_the_best(wb: workbench.Workbench) -> None:
    plain = wb.recommend.for_prompt("ink painting style, mountains", k=6)
    diverse = wb.recommend.for_prompt("ink painting style, mountains", k=6, diversity=0.7)
    assert diverse.iloc[0]["id"] == plain.iloc[0]["id"]
    assert list(diverse["id"]) != list(plain["id"])


def test_dislike_drops_a_result_for_the_same_and_similar_queries(wb: workbench.Workbench) -> None:
    query = "ink wash painting of mountains, sumi-e"
    before = list(wb.recommend.for_prompt(query, k=5)["id"])
    top = before[0]
    wb.recommend.feedback(query, top, -1)
    after = list(wb.recommend.for_prompt(query, k=5)["id"])
    assert top != after[0] and (top not in after or after.index(top) > 0)
    similar_query = "ink wash painting of misty mountains, sumi-e style"
    df = wb.recommend.for_prompt(similar_query, k=5)
    row = df[df["id"] == top]
    assert row.empty or (row["score_feedback"].iloc[0] < 0 and df["id"].iloc[0] != top)
    # unrelated queries are untouched
    assert (wb.recommend.for_prompt("cyberpunk neon city", k=5)["score_feedback"] == 0).all()
    # persisted: a fresh workbench on the same home ranks the same way
    fresh = workbench.open(wb.home)
    assert list(fresh.recommend.for_prompt(query, k=5)["id"]) == after
    log = fresh.recommend.feedback_log()
    assert list(log[["query", "lora_id", "value"]].iloc[0]) == [query, top, -1]


def test_like_lifts_the_liked_lora_and_its_neighbours(wb: workbench.Workbench) -> None:
    query = "soft pastel painting, flowers in a garden"
    ink, sumie = _id(wb, 900001), _id(wb, 900002)
    before = wb.recommend.for_prompt(query, k=30).set_index("id")
    wb.recommend.feedback(query, ink, +1)
    after = wb.recommend.for_prompt(query, k=30).set_index("id")
    assert after.loc[ink, "score"] > before.loc[ink, "score"]
    assert list(after.index).index(ink) <= list(before.index).index(ink)
    # bounded: a like scales the LoRA's own relevance by at most 1 + feedback_up
    relevance = before.loc[ink, "score"] - before.loc[ink, "score_popularity"] - before.loc[ink, "score_usage"]
    assert after.loc[ink, "score_feedback"] <= wb.recommend.weights.feedback_up * relevance + 1e-6
    # the liked LoRA's neighbour (another ink style) rises too, without being rated itself
    assert after.loc[sumie, "score_feedback"] > 0
    assert list(after.index).index(sumie) < list(before.index).index(sumie)
    assert "you liked it for this query" in after.loc[ink, "reason"]
    assert "close to a LoRA you liked" in after.loc[sumie, "reason"]
    assert "liked it" not in after.loc[sumie, "reason"]


def test_similar_feedback_and_implicit_usage(wb: workbench.Workbench) -> None:
    ink, mount = _id(wb, 900001), _id(wb, 900003)
    before = wb.recommend.similar(ink, k=10).set_index("id")
    wb.recommend.feedback(ink, mount, -1)  # int query -> 'similar' kind
    after = wb.recommend.similar(ink, k=10).set_index("id")
    assert mount not in after.index or after.loc[mount, "score"] < before.loc[mount, "score"]

    # a generation that used a LoRA for a prompt is an implicit thumbs-up for similar prompts
    query = "city skyline at night"
    neon = _id(wb, 900004)
    before = wb.recommend.for_prompt(query, k=30).set_index("id")
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO jobs (id, backend, params, state) VALUES ('j1', 'a1111', ?, 'succeeded')",
            [json.dumps({"request": {"prompt": "city skyline at night <lora:neoncity:0.7>"}})],
        )
        con.execute(
            "INSERT INTO usage_events (lora_id, kind, job_id, weight) VALUES (?, 'generate', 'j1', 0.7)", [neon]
        )
    after = wb.recommend.for_prompt(query, k=30).set_index("id")
    assert after.loc[neon, "score_feedback"] > 0 and after.loc[neon, "score"] > before.loc[neon, "score"]
    assert "used in 1 generation" in after.loc[neon, "reason"]


def test_catalog_changes_are_picked_up_incrementally(wb: workbench.Workbench) -> None:
    rec = wb.recommend
    rec.for_prompt("anything", k=1)
    stamps = dict(wb.db.read_df("SELECT lora_id, updated_at FROM embeddings").itertuples(index=False))
    # another process (here: another Workbench) adds a LoRA and edits one behind our back
    other = workbench.open(wb.home)
    import_items(
        other.db,
        [_item(900077, "Pixel Art Sprites", ["pixelsprite"], ["style", "pixel art"], "8-bit pixel art game sprites")],
    )
    other.catalog.update(_id(other, 900006), tags=["style", "botanical"])
    df = rec.by_trigger("pixelsprite", k=1)
    assert df.iloc[0]["civitai_model_id"] == 900077
    assert len(rec.index) == 31
    rows = dict(wb.db.read_df("SELECT lora_id, updated_at FROM embeddings").itertuples(index=False))
    assert len(rows) == 31
    # only the new and the edited LoRA were embedded again
    redone = {i for i, t in rows.items() if stamps.get(i) != t}
    assert redone == {_id(wb, 900077), _id(wb, 900006)}
    # index rebuilt when its files are missing
    shutil.rmtree(wb.home / "index")
    fresh = workbench.open(wb.home)
    assert len(fresh.recommend.similar(_id(fresh, 900001), k=3)) == 3
    assert (wb.home / "index").is_dir()


def test_similar_does_not_import_torch(wb: workbench.Workbench) -> None:
    wb.recommend.refresh()  # index persisted and in sync
    ink = _id(wb, 900001)
    code = (
        "import sys, workbench\n"
        f"wb = workbench.open({str(wb.home)!r})\n"
        f"df = wb.recommend.similar({ink}, k=3)\n"
        "assert len(df) == 3, df\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cli_recommend(wb: workbench.Workbench, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(wb.home)
    assert cli_main(["recommend", "--home", home, "--trigger", "neoncity", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "Cyber Neon City" in out and "score" in out
    assert cli_main(["recommend", "--home", home, "--prompt", "ink wash", "-k", "3", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and {"id", "name", "score", "reason", "score_semantic"} <= set(rows[0])
    assert cli_main(["recommend", "--home", home, "--similar", str(_id(wb, 900001)), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "Sumi-e" in out or "Chinese Ink" in out
    assert cli_main(["recommend", "--home", home, "--similar", "999999999"]) == 2


def test_panel_cards_feedback_stack_and_escaping(wb: workbench.Workbench) -> None:
    from workbench.views.recommend import RecommendPanel, card_html, recommend_tab

    evil = _item(900666, "<img src=x onerror=alert(1)>", ["<script>alert(2)</script>"], ["<b>bold</b>"], "x")
    import_items(wb.db, [evil])
    panel = recommend_tab(wb)
    assert isinstance(panel, RecommendPanel)
    panel.mode.value = "trigger"
    panel.text.value = "<script>alert(2)</script>"
    df = panel.run()
    assert int(df.iloc[0]["civitai_model_id"]) == 900666
    html_out = "".join(c.children[0].value for c in panel.cards.children)
    assert "<script>" not in html_out and "<img src=x" not in html_out and "&lt;script&gt;" in html_out
    assert "<b>bold</b>" not in card_html(df.iloc[0].to_dict())
    # thumbs down from the panel re-ranks
    top = int(df.iloc[0]["id"])
    panel.rate(top, -1)
    assert wb.recommend.feedback_log().iloc[0]["lora_id"] == top
    assert panel.results.empty or int(panel.results.iloc[0]["id"]) != top or len(panel.results) == 1
    # add to stack and similar mode
    added = []
    panel.on_add = added.append
    panel.mode.value = "prompt"
    panel.text.value = "ink wash painting"
    first = panel.run().iloc[0].to_dict()
    panel.add_to_stack(first)
    assert added and added[0]["id"] == int(first["id"]) and "<lora:" in panel.stack_text.value
    assert "Added" in panel.status.value and "1 LoRA" in panel.status.value  # the click visibly did something
    card = panel.cards.children[0]
    add_button = card.children[2].children[1]
    add_button.click()  # the card's own button: marked as in the stack
    assert add_button.disabled and add_button.description == "in stack"
    assert "<details><summary>why</summary>" in card.children[0].value and "relevance" in card.children[0].value
    assert panel.k.description == "results" and panel.k.style.description_width == "initial"
    panel.show_similar(int(first["id"]))
    assert len(panel.cards.children) == len(panel.results) > 0


def _generation(wb: workbench.Workbench, job: str, prompt: str, lora_id: int) -> None:
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO jobs (id, backend, params, state) VALUES (?, 'a1111', ?, 'succeeded')",
            [job, json.dumps({"request": {"prompt": prompt}})],
        )
        con.execute(
            "INSERT INTO usage_events (lora_id, kind, job_id, weight) VALUES (?, 'generate', ?, 0.7)", [lora_id, job]
        )


def test_usage_is_a_bounded_prior_that_never_outranks_relevance(wb: workbench.Workbench) -> None:
    query = "a watercolor lighthouse at dusk"
    street = _id(wb, 900005)  # cyberpunk streets: nothing to do with the query
    before = wb.recommend.for_prompt(query, k=30).set_index("id")
    for n in range(25):  # used again and again with exactly this prompt, never rated
        _generation(wb, f"j{n}", f"{query} <lora:cyberstreet:0.8>", street)
    after = wb.recommend.for_prompt(query, k=30).set_index("id")
    w = wb.recommend.weights
    rel = after["score"] - after["score_popularity"] - after["score_usage"] - after["score_feedback"]
    # usage + feedback are at most (usage + feedback_up) x the LoRA's own relevance
    assert after.loc[street, "score_usage"] + after.loc[street, "score_feedback"] <= (
        (w.usage + w.feedback_up) * max(rel[street], 0) + 1e-6
    )
    # every LoRA clearly more relevant still ranks above it
    bound = (1 + w.usage + w.feedback_up) * max(rel[street], 0) + 1.5 * w.popularity
    order = list(after.index)
    assert all(order.index(i) < order.index(street) for i in after.index[rel > bound])
    assert after.index[0] == before.index[0]
    reason = after.loc[street, "reason"]
    assert "liked" not in reason and "used in 25 generations" in reason
    assert "used in a generation for a similar prompt" in reason
    # an unrelated prompt gets no implicit signal from those generations
    other = wb.recommend.for_prompt("portrait of an old fisherman, oil painting", k=30).set_index("id")
    if street in other.index:
        assert other.loc[street, "score_feedback"] == 0
        assert "similar prompt" not in other.loc[street, "reason"] and "liked" not in other.loc[street, "reason"]


def test_every_result_has_a_formula_and_a_file_is_shown_once(wb: workbench.Workbench) -> None:
    ink = _id(wb, 900001)
    sha = "ab" * 32
    with wb.db.write() as con:  # two catalog entries claiming the same file (a copy, or a file + its Civitai entry)
        con.execute("UPDATE loras SET sha256_claimed = ? WHERE civitai_model_id IN (900001, 900002)", [sha])
    df = wb.recommend.for_prompt("ink wash painting, sumi-e mountains", k=10)
    assert (df["sha256"] == sha).sum() == 1
    assert ink in set(df["id"]) or _id(wb, 900002) in set(df["id"])
    row = df.iloc[0]
    parts = row["score_popularity"] + row["score_usage"] + row["score_feedback"]
    assert row["why"].startswith(f"{row['score']:.2f} = relevance {row['score'] - parts:.2f}")
    assert "semantic" in row["why"] and "feedback" in row["why"]


def test_trigger_search_tolerates_typos(wb: workbench.Workbench) -> None:
    df = wb.recommend.by_trigger("wcflowrs", k=3)
    assert int(df.iloc[0]["civitai_model_id"]) == 900006
    assert "spelled alike: wcflowers (for 'wcflowrs')" in df.iloc[0]["reason"]
    import_items(wb.db, [_item(900088, "Watercolor Dreams", ["wtrcolor style"], ["style"], "washes")])
    df = wb.recommend.by_trigger("wtrclr", k=3)  # the newcomer's typo from issue 12
    assert int(df.iloc[0]["civitai_model_id"]) == 900088
    # an exact trigger is not diluted by look-alikes
    assert int(wb.recommend.by_trigger("neoncity", k=1).iloc[0]["civitai_model_id"]) == 900004


def test_prompts_embed_without_torch_and_runtimes_never_mix(wb: workbench.Workbench, tmp_path: Path) -> None:
    from workbench.search import Embedder, Recommender, choose_runtime

    wb.recommend.refresh()
    code = (
        "import sys, workbench\n"
        "from workbench.search import embed_query\n"
        "v = embed_query('a watercolor lighthouse at dusk')\n"
        "assert abs(float(v @ v) - 1) < 1e-4, v\n"
        f"wb = workbench.open({str(wb.home)!r})\n"
        "df = wb.recommend.for_prompt('ink wash painting of mountains', k=3)\n"
        "assert len(df) == 3 and (df['score_semantic'] != 0).any(), df\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    # the runtime is part of the vector key: a torch recommender does not see the static vectors
    assert Embedder(runtime="static").name != Embedder(runtime="torch").name
    assert choose_runtime(str(tmp_path), None, None) == "torch"  # a model the user names
    assert choose_runtime(None, "cpu", None) == "torch"  # a device asked for explicitly
    with pytest.raises(ValueError, match="unknown embedding runtime"):
        Embedder(runtime="tensorrt")
    torch_rec = Recommender(wb, runtime="torch", auto_embed=False, progress=False)
    torch_rec.refresh()
    assert len(torch_rec.index) == 0 and len(wb.recommend.index) == 30
    assert not torch_rec.for_prompt("ink wash", k=3).empty  # lexical evidence still answers


def test_big_backlog_embeds_in_background_and_answers_lexically(wb: workbench.Workbench) -> None:
    from workbench.search import Recommender

    with wb.db.write() as con:
        con.execute("DELETE FROM embeddings")
    shutil.rmtree(wb.home / "index")
    rec = Recommender(wb, progress=False)
    rec.weights.background_embed_above = 5  # 30 stale payloads: more than that
    gate = threading.Event()
    real = rec.embedder.encode

    def slow_encode(texts, **kw):  # hold the background embedding until the first answer is checked
        gate.wait(30)
        return real(texts, **kw)

    rec.embedder.encode = slow_encode  # type: ignore[method-assign]
    df = rec.by_trigger("neoncity", k=3)
    assert rec.embedding and df.attrs["embedding"]["total"] == 30
    assert int(df.iloc[0]["civitai_model_id"]) == 900004  # lexical evidence answers meanwhile
    assert (df["score_semantic"] == 0).all()
    gate.set()
    rec._background.join(60)  # type: ignore[union-attr]
    assert not rec.embedding and rec.embedding_progress is None and rec.embedding_error is None
    df = rec.for_prompt("ink wash painting of mountains", k=3)
    assert "embedding" not in df.attrs and (df["score_semantic"] != 0).any() and len(rec.index) == 30


def test_recommend_notebook_on_an_empty_home_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebooks = REPO / "notebooks"
    notebook = nbformat.read(notebooks / "recommend.ipynb", as_version=4)
    assert all(c.outputs == [] for c in notebook.cells if c.cell_type == "code")
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}}
    )
    with pytest.raises(CellExecutionError) as failed:
        client.execute()
    message = str(failed.value)
    assert "holds no LoRAs yet" in message and "make demo" in message and "IndexError" not in message


def test_result_rows_are_the_catalogs_rows_and_follow_edits(wb: workbench.Workbench) -> None:
    """Rows come from a per-snapshot copy of the catalog: same columns and values as
    `catalog.query`, and an edit from any process shows in the next result."""
    ink = _id(wb, 900001)
    df = wb.recommend.similar(ink, k=5)
    catalog = wb.catalog.query(ids=list(df["id"])).set_index("id")
    assert list(df.columns[: len(catalog.columns) + 1]) == ["id", *catalog.columns]
    for col in ("name", "path", "base_model", "sha256", "description", "usage_count"):
        assert [catalog.at[int(i), col] for i in df["id"]] == list(df[col]), col
    first = int(df.iloc[0]["id"])
    other = workbench.open(wb.home)  # another process edits behind our back
    other.catalog.update(first, rating=4, notes="<b>kept</b>")
    again = wb.recommend.similar(ink, k=5).set_index("id")
    assert again.at[first, "rating"] == 4 and again.at[first, "notes"] == "<b>kept</b>"
    other.catalog.remove([first])  # gone from the catalog: gone from the results
    assert first not in set(wb.recommend.similar(ink, k=5)["id"])


def test_shared_members_match_set_intersections(wb: workbench.Workbench) -> None:
    """The vectorised shared-tag/trigger counts `similar` scores with equal plain set intersections."""
    rec = wb.recommend
    rec.refresh()
    n = len(rec._ids)
    cand = np.arange(n, dtype=np.int64)
    for src in range(n):
        tags = rec._tag_members.shared(src, cand)
        trig = rec._trig_members.shared(src, cand)
        assert list(tags) == [len(rec._tagsets[src] & rec._tagsets[p]) for p in range(n)]
        assert list(trig) == [len(rec._trigsets[src] & rec._trigsets[p]) for p in range(n)]
    assert len(rec._tag_members.shared(0, cand[:0])) == 0


def test_payload_names_each_trigger_phrase_once(tmp_path: Path) -> None:
    """A trained-word list that repeats its phrases (one sample prompt per version) embeds as the list
    written once: the repeats must not weigh in the LoRA's vector again."""
    wb = workbench.open(tmp_path / "home")
    desc = "Brush landscapes."
    repeated = ["sumi brush, ink", "sumi brush, ink", "(sumi brush:1.2), ink"]
    import_items(
        wb.db,
        [_item(910001, "Sumi", repeated, ["ink"], desc), _item(910002, "Sumi", ["sumi brush, ink"], ["ink"], desc)],
    )
    assert wb.recommend.embed(progress=False) == 2
    twin = wb.recommend.similar(_id(wb, 910001), k=1)
    assert int(twin.iloc[0]["civitai_model_id"]) == 910002
    assert twin.iloc[0]["score_semantic"] == pytest.approx(1.0, abs=1e-5)
