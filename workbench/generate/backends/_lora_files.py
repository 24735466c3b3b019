"""What a generation backend must know about a LoRA file before applying it.

Reads only the safetensors header (keys, shapes, ``__metadata__``) to tell the network type, the
base-model family and which components it targets, so that an unsupported or mismatched LoRA
is refused *before* loading with an error naming what would run it — diffusers would otherwise
apply a partly matching LoRA silently. Also computes A1111's LoRA short hash for infotext.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import struct
import threading

from workbench.generate._tiny_pipeline import TINY_BASE_MODEL, TINY_BASE_MODEL_VERSION, TINY_CROSS_ATTENTION_DIM
from workbench.generate._types import LoraIncompatibleError, LoraNotFoundError

_MAX_HEADER = 64 * 1024 * 1024
LORA_SUFFIXES = (".safetensors",)

# cross-attention K/V input width -> family
_CTX_FAMILY = {768: "SD1", 1024: "SD2", 2048: "SDXL", 1280: "SDXL", TINY_CROSS_ATTENTION_DIM: TINY_BASE_MODEL}


def normalize_family(value: str | None) -> str | None:
    """Map the many spellings of a base model (kohya, modelspec, Civitai, catalog) to one family."""
    if not value:
        return None
    v = str(value).strip().lower()
    if v in (TINY_BASE_MODEL.lower(), TINY_BASE_MODEL_VERSION, "tiny-sd1", "tiny-sd1/lora") or v.startswith("tiny"):
        return TINY_BASE_MODEL
    if v.startswith(("sdxl", "stable-diffusion-xl", "pony", "illustrious", "noobai")) or "sdxl" in v or "sd xl" in v:
        return "SDXL"
    if v.startswith(("sd_v2", "sd2", "sd 2", "stable-diffusion-v2")):
        return "SD2"
    if v.startswith(("sd_v1", "sd1", "sd 1", "stable-diffusion-v1")):
        return "SD1"
    if v.startswith(("flux", "flux-1")):
        return "FLUX"
    if v in ("unknown", "other", "none"):
        return None
    return str(value)


@dataclasses.dataclass
class LoraFileInfo:
    path: pathlib.Path
    layout: str  # kohya | peft | diffusers_attn | unknown
    network_type: str  # LoRA | LoHa | LoKr | DoRA | full | unknown
    family: str | None  # from metadata, else from shapes
    family_from_shapes: str | None
    has_text_encoder: bool
    has_te2: bool
    unet_modules: int
    te_modules: int
    foreign_keys: list[str]  # keys no LoRA loader understands (bundled embeddings, …)
    metadata: dict[str, str]
    output_name: str | None


def read_header(path: pathlib.Path) -> tuple[dict, dict[str, str]]:
    """(tensor entries, __metadata__) of a safetensors file; raises LoraIncompatibleError when unreadable."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER or n > os.fstat(fh.fileno()).st_size - 8:
                raise ValueError(f"header length {n} is impossible")
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        raise LoraIncompatibleError(f"{path.name}: not a readable safetensors LoRA ({exc})") from None
    meta = header.pop("__metadata__", {}) or {}
    return header, {str(k): str(v) for k, v in meta.items()}


def inspect_file(path: str | pathlib.Path) -> LoraFileInfo:
    path = pathlib.Path(path)
    if path.suffix.lower() not in LORA_SUFFIXES:
        raise LoraIncompatibleError(
            f"{path.name}: only .safetensors LoRAs are loaded in-process (pickled .ckpt/.pt files are never "
            "unpickled); run it with the a1111 or comfyui backend, or convert it to safetensors"
        )
    tensors, meta = read_header(path)
    keys = list(tensors)
    network = "LoRA"
    if any(".hada_" in k for k in keys):
        network = "LoHa"
    elif any(".lokr_" in k for k in keys):
        network = "LoKr"
    elif any(k.endswith(".diff") for k in keys):
        network = "full"
    elif any("dora_scale" in k for k in keys):
        network = "DoRA"
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        layout = "kohya"
    elif any(".lora_A." in k or ".lora_B." in k for k in keys):
        layout = "peft"
    elif any("_lora.down." in k or "_lora.up." in k for k in keys):
        layout = "diffusers_attn"
    else:
        layout = "unknown"
    known = (
        "lora_unet_",
        "lora_te_",
        "lora_te1_",
        "lora_te2_",
        "lora_te3_",
        "unet.",
        "text_encoder.",
        "text_encoder_2.",
        "transformer.",
    )
    foreign = [k for k in keys if not k.startswith(known) and layout != "diffusers_attn"]
    has_te2 = any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys)
    has_te = any(k.startswith(("lora_te", "text_encoder")) for k in keys)

    def stem(k: str) -> str:
        for suffix in (
            ".lora_down.weight",
            ".lora_up.weight",
            ".alpha",
            ".lora_A.weight",
            ".lora_B.weight",
            ".hada_w1_a",
            ".hada_w1_b",
            ".hada_w2_a",
            ".hada_w2_b",
            ".dora_scale",
        ):
            if k.endswith(suffix):
                return k[: -len(suffix)]
        return k.rsplit(".", 1)[0]

    modules = {stem(k) for k in keys if k not in foreign}
    te_modules = sum(1 for m in modules if m.startswith(("lora_te", "text_encoder")))
    ctx = None
    for k, entry in tensors.items():
        if ("attn2_to_k" in k or "attn2.to_k" in k) and (
            k.endswith("lora_down.weight") or k.endswith("lora_A.weight") or k.endswith("to_k_lora.down.weight")
        ):
            shape = entry.get("shape") or []
            if len(shape) >= 2:
                ctx = int(shape[1])
                break
    from_shapes = _CTX_FAMILY.get(ctx) if ctx else None
    family = normalize_family(meta.get("ss_base_model_version") or meta.get("modelspec.architecture"))
    if family is None and meta.get("ss_v2") == "True":
        family = "SD2"
    return LoraFileInfo(
        path=path,
        layout=layout,
        network_type=network,
        family=family or from_shapes,
        family_from_shapes=from_shapes,
        has_text_encoder=has_te,
        has_te2=has_te2,
        unet_modules=len(modules) - te_modules,
        te_modules=te_modules,
        foreign_keys=foreign[:5],
        metadata=meta,
        output_name=meta.get("ss_output_name"),
    )


_RUN_ELSEWHERE = (
    "the a1111 backend (A1111 >= 1.5 and SD.Next load LyCORIS natively) or the comfyui backend "
    "(its LoraLoader loads LoHa/LoKr)"
)


def check_diffusers_compatible(
    info: LoraFileInfo, pipeline_family: str | None, name: str, pipeline_has_te2: bool = False
) -> None:
    """Raise :class:`LoraIncompatibleError` unless diffusers can apply this LoRA fully to the pipeline."""
    if info.network_type in ("LoHa", "LoKr", "full"):
        raise LoraIncompatibleError(
            f"LoRA {name!r} is a LyCORIS {info.network_type} network, which the diffusers backend cannot apply; "
            f"run it with {_RUN_ELSEWHERE}"
        )
    if info.layout == "unknown":
        raise LoraIncompatibleError(
            f"LoRA {name!r} has a key layout diffusers does not read (neither kohya nor PEFT); run it with "
            "the a1111 or comfyui backend, or convert it"
        )
    if info.foreign_keys:
        raise LoraIncompatibleError(
            f"LoRA {name!r} carries non-LoRA tensors ({', '.join(info.foreign_keys[:3])}, e.g. a bundled "
            "embedding) that diffusers rejects; run it with the a1111 backend, which loads bundled embeddings"
        )
    for family in {info.family, info.family_from_shapes} - {None}:
        if pipeline_family and family != pipeline_family:
            raise LoraIncompatibleError(
                f"LoRA {name!r} is for {family} but the diffusers pipeline is {pipeline_family}; run it on a "
                f"{family} checkpoint (a diffusers pipeline, or an a1111/comfyui backend with a {family} model loaded)"
            )
    if info.has_te2 and not pipeline_has_te2:
        raise LoraIncompatibleError(
            f"LoRA {name!r} has second-text-encoder (SDXL) weights but the pipeline has one text encoder; "
            f"run it on an SDXL checkpoint"
        )


_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def lora_short_hash(path: str | pathlib.Path) -> str:
    """A1111's LoRA short hash: first 12 hex of SHA-256 over the tensor bytes (after the header)."""
    path = pathlib.Path(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + n)
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    short = h.hexdigest()[:12]
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


def find_lora_file(name: str, dirs: list[pathlib.Path]) -> pathlib.Path:
    """Resolve a LoRA name (file stem or ``ss_output_name`` alias) in the given folders (recursive)."""
    candidates = []
    for d in dirs:
        d = pathlib.Path(d)
        if d.is_file():
            candidates.append(d)
        elif d.is_dir():
            candidates.extend(sorted(p for p in d.rglob("*") if p.suffix.lower() in LORA_SUFFIXES))
    for p in candidates:
        if p.stem == name or p.name == name:
            return p
    for p in candidates:
        try:
            if read_header(p)[1].get("ss_output_name") == name:
                return p
        except LoraIncompatibleError:
            continue
    known = sorted({p.stem for p in candidates})
    raise LoraNotFoundError(
        f"LoRA {name!r} not found in {', '.join(map(str, dirs)) or 'no folders'}"
        + (f"; known: {', '.join(known[:20])}" if known else "")
    )
