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
from workbench.files._module_keys import block_of, canonical_module
from workbench.files._previews import (
    PREVIEW_SUFFIXES,
    decode_image_payload,
    extract_embedded_preview,
    find_preview_file,
)
from workbench.files._sidecars import DESCRIPTIVE_ORDER, merge_fields, read_sidecars, sibling_names
from workbench.files._thumbnails import DEFAULT_SIZE, ThumbnailCache
from workbench.files._training import md_bool, md_float, md_int
from workbench.files._weights import (
    ANALYSIS_VERSION,
    SIGNATURE_DIM,
    LoraWeights,
    ModuleDelta,
    WeightAnalysis,
    WeightsError,
    WeightSimilarity,
    analyze_weights,
    delta_inner,
    weights_cosine,
)

__all__ = [
    "ANALYSIS_VERSION",
    "SIGNATURE_DIM",
    "LoraWeights",
    "ModuleDelta",
    "WeightAnalysis",
    "WeightSimilarity",
    "WeightsError",
    "analyze_weights",
    "block_of",
    "canonical_module",
    "delta_inner",
    "weights_cosine",
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
    "validate_tensors",
]
