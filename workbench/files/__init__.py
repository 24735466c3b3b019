"""What one LoRA file says, read without a database and without torch.

Header reading, layout / network type / rank / base-model analysis, training metadata, sidecars,
previews, thumbnails and hashes. Pure: safe in a process pool, imports nothing else of ``workbench``.
"""

from __future__ import annotations

from workbench.files._analysis import analyse_tensors, base_model_family, base_model_from_metadata, normalize_base_model
from workbench.files._hashes import FileHashes, file_hashes
from workbench.files._header import (
    HeaderError,
    parse_header,
    read_header,
    read_raw_header,
    split_metadata,
    validate_tensors,
)
from workbench.files._inspect import inspect_lora
from workbench.files._previews import (
    PREVIEW_SUFFIXES,
    decode_image_payload,
    extract_embedded_preview,
    find_preview_file,
)
from workbench.files._sidecars import (
    DESCRIPTIVE_ORDER,
    forget_model_json_cache,
    merge_fields,
    read_sidecars,
    sibling_names,
    unclaimed_json_names,
)
from workbench.files._thumbnails import DEFAULT_SIZE, VIDEO_SUFFIXES, ThumbnailCache, video_poster
from workbench.files._training import md_bool, md_float, md_int

__all__ = [
    "DEFAULT_SIZE",
    "DESCRIPTIVE_ORDER",
    "PREVIEW_SUFFIXES",
    "FileHashes",
    "HeaderError",
    "ThumbnailCache",
    "analyse_tensors",
    "base_model_family",
    "base_model_from_metadata",
    "decode_image_payload",
    "extract_embedded_preview",
    "file_hashes",
    "forget_model_json_cache",
    "find_preview_file",
    "inspect_lora",
    "md_bool",
    "md_float",
    "md_int",
    "merge_fields",
    "normalize_base_model",
    "parse_header",
    "read_header",
    "read_raw_header",
    "read_sidecars",
    "sibling_names",
    "split_metadata",
    "unclaimed_json_names",
    "validate_tensors",
    "video_poster",
    "VIDEO_SUFFIXES",
]
