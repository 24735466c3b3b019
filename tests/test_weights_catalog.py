"""Weights in the catalog: cached analyses, similar by weights, near-duplicate groups, CLI, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_weights import _bad_files
from weights_factory import merged, random_lora, refactorised, rescaled_alpha, sdxl_lora, write_kohya, write_peft

import workbench
from workbench.catalog import group_by_signatures
from workbench.cli import main


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("weights_lib")
    lib = root / "loras"
    a, b, c = random_lora(1), random_lora(2), random_lora(3, rank=8)
    write_kohya(lib / "a.safetensors", a)
    write_kohya(lib / "copies" / "a_fp16.safetensors", a, dtype=np.float16)
    write_kohya(lib / "copies" / "a_alpha.safetensors", rescaled_alpha(a))
    write_kohya(lib / "copies" / "a_refactorised.safetensors", refactorised(a))
    write_peft(lib / "converted" / "a_peft.safetensors", a)
    write_kohya(lib / "b.safetensors", b)
    write_peft(lib / "converted" / "b_peft.safetensors", b, dtype=np.float16)
    write_peft(lib / "merge_ab.safetensors", merged(a, b))
    write_kohya(lib / "c.safetensors", c)
    xl, sgm = sdxl_lora(4)
    write_kohya(lib / "xl" / "xl_kohya.safetensors", xl, names=sgm)
    write_peft(lib / "xl" / "xl_peft.safetensors", xl)
    _bad_files(lib / "bad")
    home = root / "home"
    wb = workbench.open(home)
    wb.scan(lib, workers=1, progress=False)
    return home, lib


def _ids(wb: workbench.Workbench) -> dict[str, int]:
    frame = wb.catalog.query(limit=None)
    return {Path(p).stem: int(i) for p, i in zip(frame["path"], frame["id"])}


def test_analyze_caches_results_and_records_bad_files(library: tuple[Path, Path]) -> None:
    home, lib = library
    wb = workbench.open(home)
    done = wb.weights.analyze(progress=False)
    ids = _ids(wb)
    assert set(done["id"]) == set(ids.values())
    bad = {Path(p).stem for p in done.loc[~done["ok"], "path"]}
    assert bad == {p.stem for p in (lib / "bad").iterdir()}
    assert all(done.loc[~done["ok"], "error"].str.len() > 10)
    with wb.db.read() as con:
        valid_bad = con.execute(
            "SELECT count(*) FROM weight_analyses WHERE path LIKE ? AND (ok OR signature IS NOT NULL)",
            [str(lib / "bad") + "%"],
        ).fetchall()[0][0]
    assert valid_bad == 0
    assert wb.weights.analyze(progress=False).empty  # cached by (path, size, mtime)
    record = wb.weights.get(ids["a"])
    assert record["ok"] and record["family"] == "SD1"
    assert record["ranks"]["nominal_rank"] == 4
    assert {b["block"] for b in record["blocks"]} >= {"TE", "IN01", "IN05", "MID", "OUT05", "OUT09"}
    assert abs(sum(b["share"] for b in record["blocks"]) - 1) < 1e-9
    assert wb.weights.get(ids["nan"])["error"].startswith("module")


def test_groups_are_complete_linkage_within_a_family(library: tuple[Path, Path]) -> None:
    home, _ = library
    wb = workbench.open(home)
    wb.weights.analyze(progress=False)
    groups = wb.weights.groups(0.9)
    named = [sorted(Path(p).stem for p in g["paths"]) for g in groups]
    assert sorted(named) == sorted(
        [
            ["a", "a_alpha", "a_fp16", "a_peft", "a_refactorised"],
            ["b", "b_peft"],
            ["xl_kohya", "xl_peft"],
        ]
    )
    assert all(g["similarity"] >= 0.999 for g in groups)
    assert {g["family"] for g in groups} == {"SD1", "SDXL"}
    frame = wb.catalog.duplicates(by="weights")
    assert set(frame["group"]) == {1, 2, 3}
    assert "merge_ab" not in {Path(p).stem for p in frame["path"]}
    # a lower threshold lets the merge in with one parent only if every pair passes: at 0.6 the merge is
    # ≥ 0.6 to a's and b's copies, but a and b are ≈ 0 apart, so it joins one group, never bridges both
    low = wb.weights.groups(0.6)
    holding_merge = [g for g in low if any(Path(p).stem == "merge_ab" for p in g["paths"])]
    assert len(holding_merge) == 1
    stems = {Path(p).stem for p in holding_merge[0]["paths"]}
    assert not ({"a", "b"} <= stems)


def test_similar_by_weights(library: tuple[Path, Path]) -> None:
    home, _ = library
    wb = workbench.open(home)
    wb.weights.analyze(progress=False)
    ids = _ids(wb)
    similar = wb.weights.similar(ids["a"], k=6)
    stems = [Path(p).stem for p in similar["path"]]
    assert set(stems[:4]) == {"a_alpha", "a_fp16", "a_peft", "a_refactorised"}
    assert (similar["cosine"].iloc[:4] >= 0.999).all()
    assert stems[4] == "merge_ab" and 0.6 < similar["cosine"].iloc[4] < 0.8
    assert not {"xl_kohya", "xl_peft"} & set(stems)  # other base-model family
    with pytest.raises(LookupError, match="could not be analysed"):
        wb.weights.similar(ids["nan"])
    kernels = [workbench.open(home).weights for _ in range(2)]  # two kernels race on the same new pair
    frame = kernels[0]._signatures()
    with wb.db.write() as con:
        con.execute("DELETE FROM weight_pairs")
    computed = [kernel._pairs(frame) for kernel in kernels]  # both read the (empty) pair cache first
    values = [exact(0, 1) for exact in computed]
    assert values[0] == pytest.approx(values[1])
    for kernel, exact in zip(kernels, computed):
        kernel._save_pairs(exact)
    with wb.db.read() as con:
        pairs = con.execute("SELECT count(*), count(DISTINCT (key_a, key_b)) FROM weight_pairs").fetchone()
    assert pairs == (1, 1)  # the pair is stored once, whoever computed it


def test_cli_weights_and_duplicates_jsonl(library: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    home, _ = library
    assert main(["weights", "--home", str(home), "-q"]) == 0
    out = capsys.readouterr()
    assert "a_peft" in out.out and "error:" in out.err
    assert main(["duplicates", "--home", str(home), "--by", "weights", "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    for group in lines:
        assert group["similarity"] >= 0.999 and len(group["paths"]) >= 2
    assert main(["duplicates", "--home", str(home), "--by", "weights", "--threshold", "0.5"]) == 0
    assert "group 1" in capsys.readouterr().out


def test_changed_and_removed_files(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    a = random_lora(1)
    write_kohya(lib / "a.safetensors", a)
    write_peft(lib / "a_peft.safetensors", a)
    write_kohya(lib / "b.safetensors", random_lora(5))
    wb = workbench.open(tmp_path / "home")
    wb.scan(lib, workers=1, progress=False)
    wb.weights.analyze(progress=False)
    assert len(wb.weights.groups()) == 1
    # b is rewritten as a copy of a: the rescan sees a new (size, mtime), so it is analysed again
    write_kohya(lib / "b.safetensors", rescaled_alpha(a, 2.0))
    wb.scan(lib, workers=1, progress=False)
    assert list(wb.weights.analyze(progress=False)["path"]) == [str((lib / "b.safetensors").resolve())]
    assert sorted(len(g["ids"]) for g in wb.weights.groups()) == [3]
    ids = _ids(wb)
    wb.catalog.remove([ids["a_peft"]])
    assert [sorted(Path(p).stem for p in g["paths"]) for g in wb.weights.groups()] == [["a", "b"]]


def test_grouping_splits_a_chain_by_complete_linkage() -> None:
    """x ~ y ~ z with x and z apart: single linkage would join all three; complete linkage must not."""
    sims = np.array([[1.0, 0.95, 0.85], [0.95, 1.0, 0.95], [0.85, 0.95, 1.0]])
    vectors = np.linalg.cholesky(sims).astype(np.float32)  # rows with exactly these inner products
    groups = group_by_signatures(vectors, 0.9, lambda i, j: float(sims[i, j]))
    assert len(groups) == 1
    members, lowest = groups[0]
    assert len(members) == 2 and lowest >= 0.9


def test_worker_processes_match_one_process_and_a_dying_worker_costs_only_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are analysed in worker processes; a worker killed while reading one file (a native crash, the OOM
    killer) loses nothing else: the other files are stored, the killer file is recorded as bad."""
    import os
    import signal

    lib = tmp_path / "lib"
    for seed in range(6):
        write_kohya(lib / f"l{seed}.safetensors", random_lora(seed + 10))
    wb = workbench.open(tmp_path / "home")
    wb.scan(lib, workers=1, progress=False)
    one = wb.weights.analyze(progress=False, workers=1).set_index("path")
    stored_one = wb.weights.table().set_index("path")[["total_norm", "rank90", "rank99", "nominal_rank"]]
    two = wb.weights.analyze(progress=False, workers=2, force=True).set_index("path")
    assert sorted(one.index) == sorted(two.index) and two["ok"].all()
    stored_two = wb.weights.table().set_index("path")[["total_norm", "rank90", "rank99", "nominal_rank"]]
    assert np.allclose(stored_one.loc[stored_two.index].to_numpy(float), stored_two.to_numpy(float))

    import workbench.files as files

    real = files.analyze_weights
    killer = str((lib / "l3.safetensors").resolve())

    def dies_on_l3(path: Path | str) -> files.WeightAnalysis:
        if str(path) == killer:
            os.kill(os.getpid(), signal.SIGKILL)  # only ever called in a forked worker here
        return real(path)

    monkeypatch.setattr("workbench.catalog._weights.analyze_weights", dies_on_l3)
    parent = os.getpid()
    done = wb.weights.analyze(progress=False, workers=2, force=True).set_index("path")
    assert os.getpid() == parent
    assert sorted(done.index) == sorted(one.index)
    assert not done.loc[killer, "ok"] and "process died" in done.loc[killer, "error"]
    assert done.drop(index=killer)["ok"].all()
    assert wb.weights.get(_ids(wb)["l0"])["ok"]


def test_analysis_workers_start_no_blas_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers are forked while the parent holds OpenBLAS to one thread: a worker that lowered the limit itself
    would start OpenBLAS's pool in the child, whose threads spin ~0.1 s of CPU beside the analysis."""
    import os

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("thread list from /proc (Linux)")
    lib = tmp_path / "lib"
    for seed in range(4):
        write_kohya(lib / f"l{seed}.safetensors", random_lora(seed + 30))
    wb = workbench.open(tmp_path / "home")
    wb.scan(lib, workers=1, progress=False)
    np.ones((64, 64)) @ np.ones((64, 64))  # this process's OpenBLAS pool is up, as in a working kernel

    import workbench.files as files

    real = files.analyze_weights

    def counting_threads(path: Path | str) -> files.WeightAnalysis:
        before = len(os.listdir("/proc/self/task"))
        result = real(path)
        result.warnings.append(f"threads {before} -> {len(os.listdir('/proc/self/task'))}")
        return result

    monkeypatch.setattr("workbench.catalog._weights.analyze_weights", counting_threads)
    done = wb.weights.analyze(progress=False, workers=2)
    assert len(done) == 4 and done["ok"].all()
    for lora_id in _ids(wb).values():
        counts = [w for w in wb.weights.get(lora_id)["warnings"] if w.startswith("threads")]
        assert counts and all(int(c.split()[1]) == int(c.split()[3]) for c in counts), counts


def test_an_interrupted_analysis_stops_its_workers_and_lifts_the_blas_limit(tmp_path: Path) -> None:
    """Ctrl+C in a notebook (here: the progress callback raising) must not leave worker processes running or
    numpy's BLAS held to one thread until the traceback is dropped."""
    import multiprocessing
    import sys

    lib = tmp_path / "lib"
    for seed in range(6):
        write_kohya(lib / f"l{seed}.safetensors", random_lora(seed + 50))
    wb = workbench.open(tmp_path / "home")
    wb.scan(lib, workers=1, progress=False)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        wb.weights.analyze(progress=False, workers=2, on_progress=interrupt)
    assert caught.traceback  # the traceback (and every frame in it) is still alive here
    blas = sys.modules["workbench.files._blas"]  # white-box: the reference count of the limit
    assert blas._STATE["users"] == 0
    assert multiprocessing.active_children() == []
