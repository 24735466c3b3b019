"""Whether the in-process diffusers backend can apply a LoRA file, decided before loading it.

The file is read by the same header reader and structure analysis the scanner uses
(:mod:`workbench.files`), and base models are compared by family through the one taxonomy, so the catalog
and generation never disagree about a file. diffusers would otherwise apply a partly matching LoRA
silently; here it is refused with an error naming what would run it. Also A1111's LoRA short hash for
infotext, cached per (path, size, mtime).
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading

from workbench.files import (
    TENSOR_SUFFIXES,
    HeaderError,
    analyse_tensors,
    base_model_family,
    base_model_from_metadata,
    file_hashes,
    read_header,
)
from workbench.generate._types import LoraIncompatibleError, LoraNotFoundError

_LOADABLE_LAYOUTS = ("kohya", "peft", "diffusers_attn")


@dataclasses.dataclass
class LoraFileInfo:
    """What the compatibility check needs to know about one LoRA file."""

    path: pathlib.Path
    layout: str  # kohya | peft | diffusers_attn | cloneofsimo | unknown
    network_type: str  # LoRA | LoCon | LoHa | LoKr | DoRA | full | unknown
    family: str | None  # from the metadata's claim, else from tensor shapes
    family_from_shapes: str | None
    has_text_encoder: bool
    has_te2: bool
    unet_modules: int
    te_modules: int
    foreign_keys: list[str]  # keys no LoRA loader understands (bundled embeddings, …)
    metadata: dict[str, str]
    output_name: str | None


def _header(path: pathlib.Path):  # -> SafetensorsHeader
    try:
        return read_header(path)
    except (OSError, HeaderError) as exc:
        raise LoraIncompatibleError(f"{path.name}: not a readable safetensors LoRA ({exc})") from None


def inspect_file(path: str | pathlib.Path) -> LoraFileInfo:
    """Read one LoRA's header and analyse its structure (raises LoraIncompatibleError when unreadable)."""
    path = pathlib.Path(path)
    if path.suffix.lower() not in TENSOR_SUFFIXES:
        raise LoraIncompatibleError(
            f"{path.name}: only .safetensors LoRAs are loaded in-process (pickled .ckpt/.pt files are never "
            "unpickled); run it with the a1111 or comfyui backend, or convert it to safetensors"
        )
    header = _header(path)
    structure = analyse_tensors(header.tensors)
    meta = {str(k): str(v) for k, v in header.metadata.items()}
    claimed, _ = base_model_from_metadata(meta)
    from_shapes = base_model_family(structure["base_model"])
    te_modules = int(structure["text_encoder_module_count"])
    return LoraFileInfo(
        path=path,
        layout=structure["key_layout"],
        network_type=structure["network_type"],
        family=base_model_family(claimed) or from_shapes,
        family_from_shapes=from_shapes,
        has_text_encoder=bool(structure["has_text_encoder"]),
        has_te2=bool(structure["has_second_text_encoder"]),
        unet_modules=int(structure["module_count"]) - te_modules,
        te_modules=te_modules,
        foreign_keys=list(structure["foreign_keys"]),
        metadata=meta,
        output_name=meta.get("ss_output_name"),
    )


_RUN_ELSEWHERE = (
    "the a1111 backend (A1111 >= 1.5 and SD.Next load LyCORIS natively) or the comfyui backend "
    "(its LoraLoader loads LoHa/LoKr)"
)


def diffusers_refusal(
    network_type: str | None, layout: str | None, families: set[str | None], pipeline_family: str | None
) -> str | None:
    """Why diffusers cannot apply a LoRA of this structure to a pipeline of that family (None: it can).

    The one statement of the rules: :func:`check_diffusers_compatible` raises with it before loading,
    and the Generate/Compare lists mark catalog rows with it before anything is queued.
    """
    if network_type in ("LoHa", "LoKr", "full"):
        return f"is a LyCORIS {network_type} network, which the diffusers backend cannot apply; run it with {_RUN_ELSEWHERE}"
    if layout not in _LOADABLE_LAYOUTS:
        return (
            "has a key layout diffusers does not read (neither kohya nor PEFT); run it with "
            "the a1111 or comfyui backend, or convert it"
        )
    pipeline = base_model_family(pipeline_family)
    for family in sorted(f for f in families if f):
        if pipeline and family != pipeline:
            return (
                f"is for {family} but the diffusers pipeline is {pipeline}; run it on a {family} checkpoint "
                f"(a diffusers pipeline, or an a1111/comfyui backend with a {family} model loaded)"
            )
    return None


def check_diffusers_compatible(
    info: LoraFileInfo, pipeline_family: str | None, name: str, pipeline_has_te2: bool = False
) -> None:
    """Raise :class:`LoraIncompatibleError` unless diffusers can apply this LoRA fully to the pipeline."""
    refusal = diffusers_refusal(info.network_type, info.layout, {info.family, info.family_from_shapes}, pipeline_family)
    if refusal is None and info.foreign_keys:
        refusal = (
            f"carries non-LoRA tensors ({', '.join(info.foreign_keys[:3])}, e.g. a bundled embedding) that "
            "diffusers rejects; run it with the a1111 backend, which loads bundled embeddings"
        )
    if refusal is None and info.has_te2 and not pipeline_has_te2:
        refusal = (
            "has second-text-encoder (SDXL) weights but the pipeline has one text encoder; run it on an SDXL checkpoint"
        )
    if refusal is not None:
        raise LoraIncompatibleError(f"LoRA {name!r} {refusal}")


_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def lora_short_hash(path: str | pathlib.Path) -> str:
    """A1111's LoRA short hash: the first 12 hex of the tensor-data SHA-256 (``files.file_hashes``)."""
    path = pathlib.Path(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    short = file_hashes(path).lora_shorthash
    if short is None:
        raise LoraIncompatibleError(f"{path.name}: not a readable safetensors LoRA (no tensor data to hash)")
    with _HASH_LOCK:
        _HASH_CACHE[key] = short
    return short


def remember_short_hash(path: str | pathlib.Path, size: int, mtime_ns: int, short: str) -> None:
    """Seed the short-hash cache with a hash computed elsewhere (the catalog's ``hashes`` table).

    Keyed by (path, size, mtime_ns) like computed hashes, so a file changed since it was hashed
    is hashed again rather than labelled with a stale hash.
    """
    with _HASH_LOCK:
        _HASH_CACHE[(str(pathlib.Path(path)), int(size), int(mtime_ns))] = short


def header_metadata(path: pathlib.Path) -> dict[str, str]:
    """A LoRA's ``__metadata__`` (empty when unreadable); ``ss_output_name`` in it is the alias A1111 accepts."""
    try:
        return dict(read_header(path).metadata)
    except (OSError, HeaderError):
        return {}


def find_lora_file(name: str, dirs: list[pathlib.Path]) -> pathlib.Path:
    """Resolve a LoRA name (file stem or ``ss_output_name`` alias) in the given folders (recursive)."""
    candidates = []
    for d in dirs:
        d = pathlib.Path(d)
        if d.is_file():
            candidates.append(d)
        elif d.is_dir():
            candidates.extend(sorted(p for p in d.rglob("*") if p.suffix.lower() in TENSOR_SUFFIXES))
    for p in candidates:
        if p.stem == name or p.name == name:
            return p
    for p in candidates:
        if header_metadata(p).get("ss_output_name") == name:
            return p
    known = sorted({p.stem for p in candidates})
    raise LoraNotFoundError(
        f"LoRA {name!r} not found in {', '.join(map(str, dirs)) or 'no folders'}"
        + (f"; known: {', '.join(known[:20])}" if known else "")
    )
