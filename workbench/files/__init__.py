"""What one LoRA file says, read without a database and without torch.

Header reading, layout / network type / rank / base-model analysis, training metadata, sidecars,
previews, thumbnails and hashes. Pure: safe in a process pool, imports nothing else of ``workbench``.
"""

from __future__ import annotations

from workbench.files._analysis import analyse_tensors, base_model_from_metadata
from workbench.files._blas import single_threaded_blas
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
from workbench.files._paths import catalog_path, fs_path, is_inside, printable, refuse_system_root
from workbench.files._previews import (
    PREVIEW_SUFFIXES,
    decode_image_payload,
    extract_embedded_preview,
    find_preview_file,
    preview_source,
)
from workbench.files._sidecars import (
    DESCRIPTIVE_ORDER,
    forget_model_json_cache,
    merge_fields,
    read_sidecars,
    sibling_names,
    unclaimed_json_names,
)
from workbench.files._taxonomy import (
    BASE_MODEL_FAMILY,
    BASE_MODELS,
    CROSS_ATTENTION_WIDTH,
    LORA_SUFFIXES,
    TENSOR_SUFFIXES,
    TINY_BASE_MODEL,
    TINY_BASE_MODEL_VERSION,
    TINY_CROSS_ATTENTION_DIM,
    USER_FIELD_TYPES,
    USER_FIELDS,
    base_model_family,
    normalize_base_model,
)
from workbench.files._thumbnails import DEFAULT_SIZE, VIDEO_SUFFIXES, ThumbnailCache, video_poster
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
    "analyse_tensors",
    "ANALYSIS_VERSION",
    "analyze_weights",
    "BASE_MODEL_FAMILY",
    "base_model_family",
    "base_model_from_metadata",
    "BASE_MODELS",
    "block_of",
    "canonical_module",
    "catalog_path",
    "CROSS_ATTENTION_WIDTH",
    "decode_image_payload",
    "DEFAULT_SIZE",
    "delta_inner",
    "DESCRIPTIVE_ORDER",
    "extract_embedded_preview",
    "file_hashes",
    "FileHashes",
    "find_preview_file",
    "forget_model_json_cache",
    "fs_path",
    "HeaderError",
    "inspect_lora",
    "is_inside",
    "LORA_SUFFIXES",
    "LoraWeights",
    "md_bool",
    "md_float",
    "md_int",
    "merge_fields",
    "ModuleDelta",
    "normalize_base_model",
    "parse_header",
    "preview_source",
    "PREVIEW_SUFFIXES",
    "printable",
    "read_header",
    "read_raw_header",
    "read_sidecars",
    "refuse_system_root",
    "sibling_names",
    "SIGNATURE_DIM",
    "single_threaded_blas",
    "split_metadata",
    "TENSOR_SUFFIXES",
    "ThumbnailCache",
    "TINY_BASE_MODEL",
    "TINY_BASE_MODEL_VERSION",
    "TINY_CROSS_ATTENTION_DIM",
    "unclaimed_json_names",
    "USER_FIELD_TYPES",
    "USER_FIELDS",
    "validate_tensors",
    "video_poster",
    "VIDEO_SUFFIXES",
    "WeightAnalysis",
    "weights_cosine",
    "WeightsError",
    "WeightSimilarity",
]
