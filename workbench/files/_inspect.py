"""Everything the workbench can learn about one LoRA file without loading it: :func:`inspect_lora`.

Pure (no database) and safe for a process pool. Per process it keeps two small caches: directory
listings (``workbench.files._sidecars.sibling_names``) and the tensor-structure analysis keyed by the
header with ``__metadata__`` cut out (``workbench.files._header.split_metadata``). Files from
one trainer and config share that structure byte for byte, so most files of a library skip the
JSON parse of their ~800 tensor entries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.files import _analysis as lora_analysis
from workbench.files import _previews as previews
from workbench.files import _sidecars as sidecars
from workbench.files import _training as training_metadata
from workbench.files._header import (
    HeaderError,
    gc_paused,
    parse_header,
    read_raw_header,
    read_scalar,
    split_metadata,
    validate_tensors,
)

PICKLE_FORMATS = {".ckpt": "ckpt", ".pt": "pt", ".pth": "pt", ".bin": "bin"}
PICKLE_NOTE = (
    "not inspected: .{fmt} files are Python pickles, which are never opened because "
    "unpickling can run code; convert it to .safetensors to see its details"
)

_STRUCTURE_CACHE: dict[bytes, dict[str, Any]] = {}
_STRUCTURE_CACHE_MAX = 8192  # a few KB each; big libraries hold ~1-3k distinct structures
#: Headers larger than this are parsed once, without the split-metadata shortcut (memory, not speed).
_LARGE_HEADER_BYTES = 4 * 1024 * 1024


def _empty_row(path: Path) -> dict[str, Any]:
    return {
        "format": None,
        "error": None,
        "header_len": None,
        "key_layout": None,
        "network_type": None,
        "rank": None,
        "rank_min": None,
        "rank_max": None,
        "alpha": None,
        "scale": None,
        "dtype": None,
        "base_model": None,
        "base_model_evidence": "",
        "base_model_detected": None,
        "module_count": 0,
        "tensor_count": 0,
        "has_text_encoder": False,
        "metadata": {},
        "tag_frequency": {},
        "training_tags": [],
        "name": path.stem,
        "name_candidates": [path.stem],
        "description": None,
        "trigger_words": [],
        "sidecars": {},
        "sidecar_errors": [],
        "merged": {},
        "sources": {},
        "preview_path": None,
        "preview_embedded": False,
        "civitai_model_id": None,
        "civitai_version_id": None,
        "sha256_claimed": None,
    }


def file_format(path: Path) -> str:
    """'safetensors', 'ckpt', 'pt' or 'bin' from the suffix (anything else counts as safetensors)."""
    return PICKLE_FORMATS.get(path.suffix.lower(), "safetensors")


def inspect_lora(
    path: Path | str, st: os.stat_result | None = None, *, roots: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Inspect one LoRA file: header, tensor structure, training metadata, sidecars, preview.

    Never raises for bad input: a malformed or unreadable file gets ``error`` (one sentence) and
    whatever could still be learned (sidecars are read even for broken or pickle files). ``st``
    is accepted for the scanner's convenience; sizes are re-checked on the open file descriptor.
    Keys: see CONTRACT.md "Inspecting one file", plus ``name``, ``name_candidates``, ``dtype`` and
    ``base_model_detected`` (the base model from the file alone, before sidecar claims).

    ``roots``: resolved folders that sidecars and previews may resolve into (default: the file's own
    folder); one that links elsewhere, or is not a regular file, is named in ``sidecar_errors`` and
    never opened.
    """
    path = Path(path)
    row = _empty_row(path)
    if roots is None:
        roots = (os.path.realpath(path.parent),)
    try:
        _inspect(path, row, roots)
    except Exception as err:
        row["error"] = f"internal error while inspecting: {type(err).__name__}: {err}"
    return row


def _inspect(path: Path, row: dict[str, Any], roots: tuple[str, ...]) -> None:
    fmt = file_format(path)
    row["format"] = fmt
    siblings = sidecars.sibling_names(path.parent)
    report = sidecars.read_sidecars(path, siblings, roots)
    row["sidecars"] = report.sidecars
    row["sidecar_errors"] = report.errors
    fields_by_source: dict[str, dict[str, Any]] = dict(report.fields)
    raw_metadata: dict[str, str] = {}
    structure: dict[str, Any] | None = None

    if fmt == "safetensors":
        structure, raw_metadata = _read_safetensors(path, row)
        if raw_metadata:
            md = training_metadata.decode_metadata(raw_metadata)
            row["metadata"] = md
            # A large ss_tag_frequency is only a note in ``md``; count from the raw string then.
            freq = training_metadata.tag_frequency(md if isinstance(md.get("ss_tag_frequency"), dict) else raw_metadata)
            row["tag_frequency"] = freq
            row["training_tags"] = training_metadata.training_tags(md, frequency=freq)
            header = training_metadata.header_fields(md)
            if header:
                fields_by_source["header"] = header
        if structure is not None:
            _apply_structure(path, row, structure, raw_metadata)
    else:
        row["error"] = PICKLE_NOTE.format(fmt=fmt)

    merged, sources = sidecars.merge_fields(fields_by_source)
    _apply_base_model(row, structure, raw_metadata, merged, sources)
    row["merged"] = merged
    row["sources"] = sources
    candidates = [
        values["name"]
        for source in sidecars.DESCRIPTIVE_ORDER
        if (values := fields_by_source.get(source)) and values.get("name")
    ]
    candidates += training_metadata.name_candidates(raw_metadata) + [path.stem]
    row["name_candidates"] = list(dict.fromkeys(candidates))
    row["name"] = merged.get("name") or path.stem
    row["description"] = merged.get("description")
    row["trigger_words"] = list(merged.get("trigger_words") or [])
    row["civitai_model_id"] = merged.get("civitai_model_id")
    row["civitai_version_id"] = merged.get("civitai_version_id")
    row["sha256_claimed"] = merged.get("sha256")

    preview = previews.find_preview_file(path, siblings)
    problem = previews.preview_problem(preview, roots) if preview is not None else None
    if problem is not None:
        row["sidecar_errors"].append(problem)
    if preview is not None and problem is None:
        row["preview_path"] = str(preview)
    elif raw_metadata and ("ssmd_cover_images" in raw_metadata or "modelspec.thumbnail" in raw_metadata):
        row["preview_embedded"] = previews.embedded_preview(raw_metadata) is not None


def _read_safetensors(path: Path, row: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Header → (structure analysis or None, raw metadata); sets ``row['error']`` on failure."""
    try:
        head = read_raw_header(path, drop_strings_over=training_metadata.MAX_NESTED_JSON_CHARS)
    except HeaderError as err:
        row["error"] = str(err)
        return None, {}
    row["header_len"] = head.header_len
    if head.dropped:
        limit = training_metadata.MAX_NESTED_JSON_CHARS // (1024 * 1024)
        row["sidecar_errors"].append(
            f"header: {head.dropped} value(s) over the {limit} MiB cap for one value; not read"
        )
    metadata, key = split_metadata(head.raw, head.data_len)
    structure = _STRUCTURE_CACHE.get(key) if metadata is not None else None
    if structure is None:
        if len(head.raw) > _LARGE_HEADER_BYTES:
            metadata = None  # a hostile 50 MB header: never hold two parsed copies of it (and do not cache)
        try:
            full_metadata, tensors = parse_header(head.raw)
        except HeaderError as err:
            row["error"] = str(err)
            return None, {}
        try:
            with gc_paused():  # thousands of short-lived containers, no cycles (see gc_paused)
                validate_tensors(tensors, head.data_len)
                structure = lora_analysis.analyse_tensors(tensors)
            if structure["alpha_tensor"] is not None:
                structure["alpha_info"] = dict(tensors[structure["alpha_tensor"]])
        except HeaderError as err:
            structure = {"error": str(err)}
        if metadata is not None and metadata == full_metadata:
            if len(_STRUCTURE_CACHE) >= _STRUCTURE_CACHE_MAX:
                _STRUCTURE_CACHE.pop(next(iter(_STRUCTURE_CACHE)))
            _STRUCTURE_CACHE[key] = structure
        metadata = full_metadata
    if "error" in structure:
        row["error"] = structure["error"]
        return None, metadata or {}
    return structure, metadata or {}


def _apply_structure(path: Path, row: dict[str, Any], structure: dict[str, Any], md: dict[str, str]) -> None:
    for key in (
        "key_layout",
        "network_type",
        "rank_min",
        "rank_max",
        "module_count",
        "tensor_count",
        "has_text_encoder",
        "dtype",
    ):
        row[key] = structure[key]
    dim = training_metadata.md_int(md, "ss_network_dim")
    rank = dim if dim and dim > 0 else lora_analysis.nominal_rank(structure["ranks"])
    row["rank"] = rank
    alpha = None
    info = structure.get("alpha_info")
    if info is not None:
        alpha = read_scalar(path, row["header_len"], info)
    if alpha is None:
        alpha = training_metadata.md_float(md, "ss_network_alpha")
    if alpha == 0 and rank:
        alpha = float(rank)  # kohya/A1111: alpha 0 means "no scaling", i.e. alpha = rank
    row["alpha"] = alpha
    row["scale"] = alpha / rank if alpha is not None and rank else 1.0
    if row["network_type"] == "unknown":
        row["network_type"] = _network_type_from_metadata(md)


def _network_type_from_metadata(md: dict[str, str]) -> str:
    module = (training_metadata.md_text(md, "ss_network_module") or "").lower()
    args = md.get("ss_network_args") or ""
    algo = args.lower() if isinstance(args, str) else ""
    for needle, name in (("loha", "LoHa"), ("lokr", "LoKr"), ("dora", "DoRA"), ("locon", "LoCon")):
        if needle in algo:
            return name
    return "LoRA" if "lora" in module else "unknown"


def _apply_base_model(
    row: dict[str, Any],
    structure: dict[str, Any] | None,
    md: dict[str, str],
    merged: dict[str, Any],
    sources: dict[str, str],
) -> None:
    """Decide ``base_model``: the file's own evidence first, sidecar claims may refine it.

    Header metadata is asked first, then tensor shapes; when both answer and their families differ
    the tensors win (shapes cannot lie). A sidecar claim (Civitai's "Pony", A1111's "SDXL") is
    used when the file says nothing or names the same family, since it can be more specific
    (Pony/Illustrious are SDXL); a contradicting claim is reported in ``sidecar_errors``.
    """
    family = lora_analysis.base_model_family
    meta_claim, meta_evidence = lora_analysis.base_model_from_metadata(md)
    tensor_claim = structure["base_model"] if structure else None
    tensor_evidence = structure["base_model_evidence"] if structure else ""
    detected, evidence, detected_source = meta_claim, meta_evidence, "header"
    if tensor_claim and (detected is None or family(detected) != family(tensor_claim)):
        if detected is not None:
            tensor_evidence += f" (overrides {meta_evidence})"
        detected, evidence, detected_source = tensor_claim, tensor_evidence, "tensors"
    row["base_model_detected"] = detected

    claim = merged.get("base_model")
    claim_source = sources.get("base_model")
    final, final_source = detected, detected_source
    if claim and claim_source:
        raw = merged.get("base_model_raw", claim)
        if detected is None:
            final, final_source = claim, claim_source
            evidence = f"{claim_source}: {raw!s}"
        elif family(claim) == family(detected):
            if claim != detected:
                evidence = f"{claim_source}: {raw!s} (refines {evidence})"
                final, final_source = claim, claim_source
        else:
            row["sidecar_errors"].append(
                f"{claim_source}: base model {raw!s} contradicts the file ({evidence}); the file wins"
            )
    row["base_model"] = final
    row["base_model_evidence"] = evidence
    if final is not None:
        merged["base_model"] = final
        sources["base_model"] = final_source
