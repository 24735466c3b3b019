"""Hashes match independent computations, and a hashed file is never hashed again."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from lora_factory import write_kohya_lora

import workbench
from workbench.files import file_hashes


def _reference(path: Path) -> tuple[str, str, str]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    whole = hashlib.sha256(data).hexdigest()
    legacy = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    tensor = hashlib.sha256(data[8 + n :]).hexdigest()
    return whole, legacy, tensor


def test_hashes_match_reference_on_real_files(shared_data: Path) -> None:
    for path in sorted((shared_data / "loras").glob("*.safetensors")):
        hashes = file_hashes(path)
        whole, legacy, tensor = _reference(path)
        assert hashes.sha256 == whole
        assert hashes.autov2 == whole[:10]
        assert hashes.autov1 == legacy
        assert hashes.tensor_hash == tensor
        assert hashes.lora_shorthash == tensor[:12]


def test_tensor_hash_survives_metadata_edit(tmp_path: Path) -> None:
    a = write_kohya_lora(tmp_path / "a.safetensors", seed=1, metadata={"ss_output_name": "one"})
    b = write_kohya_lora(tmp_path / "b.safetensors", seed=1, metadata={"ss_output_name": "another name"})
    ha, hb = file_hashes(a), file_hashes(b)
    assert ha.sha256 != hb.sha256
    assert ha.tensor_hash == hb.tensor_hash


def test_non_safetensors_has_no_tensor_hash(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"\x80\x04not really a pickle")
    assert file_hashes(path).tensor_hash is None
    assert file_hashes(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_catalog_hashes_are_cached_and_duplicates_grouped(home: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    a = write_kohya_lora(lib / "a.safetensors", seed=1)
    (lib / "copy").mkdir()
    (lib / "copy" / "a_copy.safetensors").write_bytes(a.read_bytes())
    write_kohya_lora(lib / "c.safetensors", seed=1, metadata={"ss_output_name": "renamed"})
    write_kohya_lora(lib / "d.safetensors", seed=2)
    wb = workbench.open(home)
    wb.scan([lib], progress=False)
    assert wb.hash(progress=False) == 4
    assert wb.hash(progress=False) == 0  # cached by (path, size, mtime)
    frame = wb.catalog.query()
    assert frame["sha256"].notna().all() and (frame["autov2"].str.len() == 10).all()
    by_file = wb.catalog.duplicates("sha256")
    assert len(by_file) == 2 and by_file["hash"].nunique() == 1
    by_tensor = wb.catalog.duplicates("tensor_hash")
    assert len(by_tensor) == 3  # a, its copy, and c (same tensors, other metadata)
    # a changed file is hashed again
    os.utime(lib / "d.safetensors", ns=(1, 1))
    wb.scan([lib], progress=False)
    assert wb.hash(progress=False) == 1
