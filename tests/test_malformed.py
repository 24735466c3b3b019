"""Every broken file or sidecar gets a clear message; nothing raises, nothing is unpickled."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from malformed_corpus import PICKLE_MARKER_NAME, _tiny_entries, build_malformed_corpus, write_safetensors

from workbench.files import inspect_lora


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    dest = tmp_path_factory.mktemp("malformed")
    return dest, build_malformed_corpus(dest)


def test_corpus_is_large_enough(corpus):
    _, cases = corpus
    assert len(cases) >= 50


def test_every_case_gets_its_message(corpus):
    dest, cases = corpus
    failures = []
    for name, expected in sorted(cases.items()):
        row = inspect_lora(dest / name)
        messages = [row["error"] or ""] + row["sidecar_errors"]
        if not any(expected in message for message in messages):
            failures.append(f"{name}: expected {expected!r}, got {messages}")
        assert not any("internal error" in message for message in messages), (name, messages)
    assert not failures, "\n".join(failures)


def test_broken_files_have_no_structure_results(corpus):
    dest, cases = corpus
    for name in cases:
        if name.startswith("sidecars/"):
            continue
        row = inspect_lora(dest / name)
        assert row["error"], name
        assert row["rank"] is None and row["network_type"] is None, name


def test_sidecar_cases_keep_the_lora_itself_intact(corpus):
    dest, cases = corpus
    for name in cases:
        if name.startswith("sidecars/"):
            row = inspect_lora(dest / name)
            assert row["error"] is None, (name, row["error"])
            assert row["rank"] == 2 and row["key_layout"] == "kohya"


def test_pickles_are_never_unpickled(corpus):
    dest, cases = corpus
    for name in cases:
        if name.startswith("pickle_bomb"):
            row = inspect_lora(dest / name)
            assert row["format"] == Path(name).suffix[1:]
    assert not (dest / PICKLE_MARKER_NAME).exists()
    # Guard against a vacuous test: the payload really does create the marker when unpickled.
    import pickle

    pickle.loads((dest / "pickle_bomb.ckpt").read_bytes()).close()
    assert (dest / PICKLE_MARKER_NAME).exists()
    (dest / PICKLE_MARKER_NAME).unlink()


def test_fifo_does_not_block(corpus):
    dest, _ = corpus
    row = inspect_lora(dest / "fifo.safetensors")
    assert "FIFO" in row["error"]


def test_wrong_sidecar_values_are_ignored_not_used(corpus):
    dest, _ = corpus
    row = inspect_lora(dest / "sidecars" / "a1111_not_found.safetensors")
    assert row["civitai_model_id"] is None and row["civitai_version_id"] is None
    assert row["sha256_claimed"] is None
    assert row["description"] == "x" and row["sources"]["description"] == "a1111.json"
    row = inspect_lora(dest / "sidecars" / "info_wrong_types.safetensors")
    assert row["trigger_words"] == [] and row["civitai_version_id"] is None


def test_permission_denied_message(tmp_path, monkeypatch):
    """Root ignores chmod 000, so the EACCES branch is driven through os.open."""
    path = write_safetensors(tmp_path / "locked.safetensors", _tiny_entries())
    real_open = os.open

    def deny(target, *args, **kwargs):
        if os.fspath(target) == os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(target))
        return real_open(target, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    row = inspect_lora(path)
    assert row["error"] == "cannot read file: permission denied"


def test_file_shrinking_between_stat_and_read(tmp_path):
    path = write_safetensors(tmp_path / "a.safetensors", _tiny_entries())
    st = os.stat(path)
    with open(path, "r+b") as handle:
        handle.truncate(20)
    row = inspect_lora(path, st)
    assert "exceeds file size 20" in row["error"]


def test_rows_of_broken_files_serialise(corpus):
    import orjson

    dest, cases = corpus
    for name in cases:
        orjson.dumps(inspect_lora(dest / name))
