"""File hashes people look LoRAs up by: SHA256 (Civitai), AutoV2, AutoV1, and the addnet tensor hash.

Hashing reads whole files, so it is lazy (on demand or in a background thread) and cached by
(path, size, mtime): an unchanged file is never hashed twice. One read pass yields every hash.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

_BLOCK = 1 << 20
_LEGACY_OFFSET = 0x100000
_LEGACY_LENGTH = 0x10000


@dataclass(frozen=True)
class FileHashes:
    """All hashes of one file. `tensor_hash` is None for files that are not valid safetensors."""

    sha256: str
    autov1: str
    tensor_hash: str | None

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    @property
    def lora_shorthash(self) -> str | None:
        """What A1111 writes into `Lora hashes:` infotext (first 12 hex of the tensor hash)."""
        return self.tensor_hash[:12] if self.tensor_hash else None


def file_hashes(path: str | os.PathLike[str]) -> FileHashes:
    """Hash one file in 1 MiB blocks, computing the whole-file, legacy and tensor-data hashes in one pass."""
    whole = hashlib.sha256()
    legacy = hashlib.sha256()
    tensor: hashlib._Hash | None = None
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        whole.update(prefix)
        data_start = None
        if len(prefix) == 8:
            (header_len,) = struct.unpack("<Q", prefix)
            if 8 + header_len <= size:
                data_start = 8 + header_len
                tensor = hashlib.sha256()
        position = 8 if len(prefix) == 8 else len(prefix)
        while True:
            block = handle.read(_BLOCK)
            if not block:
                break
            whole.update(block)
            end = position + len(block)
            # legacy AutoV1 window: bytes [0x100000, 0x110000)
            lo, hi = max(position, _LEGACY_OFFSET), min(end, _LEGACY_OFFSET + _LEGACY_LENGTH)
            if lo < hi:
                legacy.update(block[lo - position : hi - position])
            if tensor is not None and data_start is not None and end > data_start:
                tensor.update(block[max(0, data_start - position) :])
            position = end
    return FileHashes(whole.hexdigest(), legacy.hexdigest()[:8], tensor.hexdigest() if tensor else None)
