"""Stored paths: names that are not UTF-8 are escaped so DuckDB/JSON/browsers accept them, and come back exactly."""

from __future__ import annotations

import itertools
import os

import pytest

from workbench.files import catalog_path, fs_path, is_inside, refuse_system_root


def _names() -> list[str]:
    pieces = [
        b"a",
        b"\\",
        b"x",
        b"\\x",
        b"\\xff",
        b"\\x80",
        b"\\x7f",
        b"\\\\xff",
        b"\xff",
        b"\x80",
        b"\xc3\xa9",
        b"\xe9",
    ]
    names = [b"".join(combo) for n in (1, 2, 3) for combo in itertools.product(pieces, repeat=n)]
    names += [bytes([b]) for b in range(1, 256) if b != ord("/")]
    return [os.fsdecode(b"/lib/" + name + b".safetensors") for name in names]


def test_every_path_round_trips_and_is_valid_utf8() -> None:
    names = _names()
    assert len(names) > 1500
    stored = [catalog_path(p) for p in names]
    for original, text in zip(names, stored):
        text.encode("utf-8")  # never raises: storable anywhere
        assert fs_path(text) == original, (original, text)
    assert len(set(stored)) == len(set(names))  # no two paths share a stored form


def test_plain_paths_are_stored_unchanged() -> None:
    for path in ("/lib/a.safetensors", "C:\\loras\\a.safetensors", "/lib/café.safetensors", "/l/\\xFF/upper.pt"):
        assert catalog_path(path) == path and fs_path(path) == path
    assert catalog_path(os.fsdecode(b"/lib/bad\xff.safetensors")) == "/lib/bad\\xff.safetensors"
    assert catalog_path("/lib/literal\\xff") == "/lib/literal\\\\xff"


def test_is_inside_compares_whole_components() -> None:
    assert is_inside("/data/lib/a", ["/data/lib"]) and is_inside("/data/lib", ["/data/lib/"])
    assert not is_inside("/data/library/a", ["/data/lib"]) and not is_inside("/data", ["/data/lib"])
    assert is_inside("/anything", ["/"])


@pytest.mark.parametrize("root", ["/", "/proc", "/proc/self", "/sys", "/dev", "/etc", "/usr", "/usr/share/x", "/boot"])
def test_system_roots_are_refused(root: str) -> None:
    assert refuse_system_root(root)


@pytest.mark.parametrize("root", ["/home/me/loras", "/tmp/lib", "/mnt/models", "/data", "/root/loras", "/srv/sd"])
def test_library_roots_are_accepted(root: str) -> None:
    assert refuse_system_root(root) is None
