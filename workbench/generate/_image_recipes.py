"""Recipes from images: the parameters A1111 or ComfyUI wrote into a PNG, turned into a recipe.

A1111 (and SD.Next, Forge, Civitai downloads) write "infotext" into the PNG text chunk
``parameters``: the prompt with ``<lora:NAME:W>`` tags, ``Negative prompt: …`` and a
``Steps: …, Lora hashes: "name: shorthash, …"`` line. The shorthash is the first 12 hex of
the addnet tensor hash (A1111 ``network.py``), so LoRAs are looked up by that hash first —
a file renamed since still resolves — then by name.

ComfyUI writes two chunks: ``prompt`` (the API graph: ``{node: {class_type, inputs}}``) and
``workflow`` (the editor's graph). LoRAs come from ``LoraLoader``-like nodes (``lora_name``,
``strength_model``, ``strength_clip``), the prompts from the text encoders wired into the
sampler's ``positive``/``negative``, the parameters from the sampler and the latent size.
ComfyUI records no LoRA hash: its LoRAs resolve by file name.

The image is untrusted: it is opened with Pillow's decompression-bomb guard, the chunks are
size-capped, every value is type-checked and the recipe passes the same validation as a
shared recipe JSON. LoRAs not in the catalog are listed (name, hash, weight), not guessed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from workbench.generate._infotext import parse_infotext, parse_lora_hashes
from workbench.generate._prompt_syntax import A1111, PromptSyntaxError, parse_prompt
from workbench.generate._recipes import MAX_TEXT, Recipe, RecipeError, validate_params
from workbench.generate._types import LoraSpec

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_CHUNK_CHARS = 2_000_000
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
_LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclasses.dataclass
class ImageRecipe:
    """What an image said: the recipe (resolved LoRAs only), what resolved how, and what is missing."""

    recipe: Recipe
    source: str
    """``a1111`` or ``comfyui``: which tool's metadata the image carried."""
    resolved: list[dict[str, Any]]
    """``{"name": in the image, "catalog_name", "id", "by": "hash"|"name", "weight"}`` per LoRA found."""
    missing: list[dict[str, Any]]
    """``{"name", "hash", "weight"}`` per LoRA of the image that this catalog does not have."""

    def summary(self) -> str:
        lines = [f"recipe {self.recipe.name!r} from {self.source} metadata: {len(self.resolved)} LoRA(s) found"]
        for item in self.resolved:
            lines.append(
                f"  found   {item['name']} -> {item['catalog_name']} (by {item['by']}, weight {item['weight']:g})"
            )
        for item in self.missing:
            known = f", hash {item['hash']}" if item.get("hash") else ""
            lines.append(f"  MISSING {item['name']} (weight {item['weight']:g}{known}): not in this catalog")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape(self.summary()) + "</pre>"


def image_text_chunks(data: bytes) -> dict[str, str]:
    """The PNG/WEBP/JPEG text metadata Pillow exposes (``parameters``, ``prompt``, ``workflow``…)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise RecipeError(f"the image is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = dict(image.info)
            exif = image.getexif() if hasattr(image, "getexif") else {}
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RecipeError(f"not a readable image ({type(exc).__name__})") from None
    chunks = {str(k): v for k, v in info.items() if isinstance(v, str) and len(v) <= MAX_CHUNK_CHARS}
    comment = exif.get(0x9286) if exif else None  # EXIF UserComment: A1111 JPEG/WEBP keep infotext there
    if "parameters" not in chunks and isinstance(comment, (str, bytes)):
        text = comment.decode("utf-16-be", "ignore")[4:] if isinstance(comment, bytes) else comment
        if text.strip():
            chunks["parameters"] = text.strip("\x00").strip()
    return chunks


def recipe_from_image(db: Any, image: bytes | str | os.PathLike[str], name: str | None = None) -> ImageRecipe:
    """Read an A1111 or ComfyUI image and build a recipe with its LoRAs resolved in the catalog ``db``."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise RecipeError(f"{path} is not a file")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise RecipeError(f"{path.name} is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        data = path.read_bytes()
        default_name = path.stem
    else:
        data, default_name = bytes(image), "image recipe"
    chunks = image_text_chunks(data)
    if chunks.get("parameters"):
        source, stack, hashes, params = "a1111", *_from_infotext(chunks["parameters"])
    elif chunks.get("prompt") or chunks.get("workflow"):
        source, stack, hashes, params = "comfyui", *_from_comfyui(chunks.get("prompt"), chunks.get("workflow"))
    else:
        raise RecipeError(
            "this image carries no generation parameters (no A1111 'parameters' text and no ComfyUI "
            "'prompt'/'workflow' metadata; many sites strip them on upload)"
        )
    resolved, missing, loras = _resolve(db, stack, hashes)
    description = ""
    if missing:
        description = "Missing when imported: " + ", ".join(
            f"{m['name']}" + (f" ({m['hash']})" if m.get("hash") else "") for m in missing
        )
    recipe = Recipe(
        name=(name or default_name).strip()[:200] or "image recipe",
        loras=loras,
        params=validate_params({k: v for k, v in params.items() if v is not None}),
        description=description[:MAX_TEXT],
    )
    return ImageRecipe(recipe=recipe, source=source, resolved=resolved, missing=missing)


# ------------------------------------------------------------------------------------------ A1111
def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _from_infotext(text: str) -> tuple[list[LoraSpec], dict[str, str], dict[str, Any]]:
    parsed = parse_infotext(text)
    try:
        prompt, stack = parse_prompt(parsed["prompt"], A1111)
    except PromptSyntaxError as exc:
        raise RecipeError(f"the prompt's <lora:…> tags cannot be read: {exc}") from None
    raw = parsed["params"]
    hashes = {k: v.lower() for k, v in parse_lora_hashes(raw.get("Lora hashes", "")).items() if _HEX.match(v)}
    params: dict[str, Any] = {"prompt": prompt[:MAX_TEXT], "negative_prompt": parsed["negative_prompt"][:MAX_TEXT]}
    size = str(raw.get("Size", ""))
    width, _, height = size.partition("x")
    params.update(
        steps=_int(raw.get("Steps")),
        cfg_scale=_float(raw.get("CFG scale")),
        seed=_int(raw.get("Seed")),
        width=_int(width),
        height=_int(height),
        sampler=str(raw["Sampler"])[:100] if raw.get("Sampler") else None,
        model=str(raw["Model"])[:1000] if raw.get("Model") else None,
        backend="a1111",
    )
    return stack, hashes, _in_range(params)


def _in_range(params: dict[str, Any]) -> dict[str, Any]:
    """Drop numbers a recipe would refuse (a hostile or odd image must not block the import)."""
    limits = {
        "steps": (1, 500),
        "cfg_scale": (0, 100),
        "seed": (-1, 2**32 - 1),
        "width": (8, 8192),
        "height": (8, 8192),
    }
    out = {}
    for key, value in params.items():
        if key in limits and value is not None and not limits[key][0] <= value <= limits[key][1]:
            continue
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------ ComfyUI
_LORA_NODE = re.compile(r"lora", re.IGNORECASE)


def _json_object(text: str | None, what: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise RecipeError(f"the image's ComfyUI {what} metadata is not valid JSON") from None


def _from_comfyui(prompt_text: str | None, workflow_text: str | None) -> tuple[list[LoraSpec], dict, dict]:
    graph = _json_object(prompt_text, "prompt")
    if isinstance(graph, dict) and graph:
        return _from_api_graph(graph)
    workflow = _json_object(workflow_text, "workflow")
    if isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list):
        return _from_workflow(workflow["nodes"])
    raise RecipeError("the image's ComfyUI metadata holds no graph")


def _lora_spec(name: Any, model: Any, clip: Any) -> LoraSpec | None:
    if not isinstance(name, str) or not name.strip() or name.lower() == "none":
        return None
    stem = name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in _LORA_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    unet = _float(model)
    unet = 1.0 if unet is None else max(-10.0, min(10.0, unet))
    te = _float(clip)
    te = None if te is None or te == unet else max(-10.0, min(10.0, te))
    return LoraSpec(name=stem[:200], unet=unet, te=te)


def _from_api_graph(graph: dict[str, Any]) -> tuple[list[LoraSpec], dict, dict]:
    nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict) and isinstance(v.get("inputs"), dict)}
    stack: list[LoraSpec] = []
    sampler = None
    latent = None
    for node in nodes.values():
        kind = str(node.get("class_type", ""))
        inputs = node["inputs"]
        if _LORA_NODE.search(kind) and "lora_name" in inputs:
            spec = _lora_spec(inputs.get("lora_name"), inputs.get("strength_model"), inputs.get("strength_clip"))
            if spec is not None and spec.name not in {s.name for s in stack}:
                stack.append(spec)
        elif "KSampler" in kind and sampler is None:
            sampler = inputs
        elif kind.startswith("Empty") and "Latent" in kind and latent is None:
            latent = inputs

    def text_of(link: Any, depth: int = 0) -> str:
        if not (isinstance(link, list) and link and depth < 8):
            return ""
        node = nodes.get(str(link[0]))
        if node is None:
            return ""
        inputs = node["inputs"]
        for key in ("text", "text_g", "prompt"):
            if isinstance(inputs.get(key), str):
                return inputs[key]
            if isinstance(inputs.get(key), list):
                return text_of(inputs[key], depth + 1)
        for key in ("conditioning", "conditioning_1", "positive"):
            if key in inputs:
                return text_of(inputs[key], depth + 1)
        return ""

    params: dict[str, Any] = {"backend": "comfyui"}
    if sampler is not None:
        params.update(
            prompt=text_of(sampler.get("positive"))[:MAX_TEXT],
            negative_prompt=text_of(sampler.get("negative"))[:MAX_TEXT],
            seed=_int(sampler.get("seed", sampler.get("noise_seed"))),
            steps=_int(sampler.get("steps")),
            cfg_scale=_float(sampler.get("cfg")),
            sampler=str(sampler["sampler_name"])[:100] if isinstance(sampler.get("sampler_name"), str) else None,
        )
    if latent is not None:
        params.update(width=_int(latent.get("width")), height=_int(latent.get("height")))
    return stack, {}, _in_range(params)


def _from_workflow(nodes: list[Any]) -> tuple[list[LoraSpec], dict, dict]:
    """The editor graph only (no API prompt): LoRA loaders' widget values; prompts are not reliable here."""
    stack: list[LoraSpec] = []
    for node in nodes:
        if not isinstance(node, dict) or not _LORA_NODE.search(str(node.get("type", ""))):
            continue
        values = node.get("widgets_values")
        if isinstance(values, list) and values and isinstance(values[0], str):
            spec = _lora_spec(values[0], values[1] if len(values) > 1 else None, values[2] if len(values) > 2 else None)
            if spec is not None and spec.name not in {s.name for s in stack}:
                stack.append(spec)
    return stack, {}, {"backend": "comfyui"}


# ------------------------------------------------------------------------------------------ resolving
def _resolve(
    db: Any, stack: list[LoraSpec], hashes: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[LoraSpec]]:
    """Find each LoRA in the catalog: by hash prefix (tensor hash, then SHA256), then by name/file stem."""
    from workbench.generate._recipes import lookup_loras

    by_name = lookup_loras(db, [s.name for s in stack])
    resolved, missing, loras = [], [], []
    for spec in stack:
        short = hashes.get(spec.name)
        hit = _by_hash(db, short) if short else None
        by = "hash"
        if hit is None and spec.name in by_name:
            info = by_name[spec.name]
            hit, by = {"id": info["id"], "name": _name_of(db, info["id"])}, "name"
        if hit is None:
            missing.append({"name": spec.name, "hash": short, "weight": spec.unet})
            continue
        resolved.append(
            {"name": spec.name, "catalog_name": hit["name"], "id": hit["id"], "by": by, "weight": spec.unet}
        )
        loras.append(dataclasses.replace(spec, name=hit["name"]))
    return resolved, missing, loras


def _by_hash(db: Any, prefix: str) -> dict[str, Any] | None:
    frame = db.read_df(
        "SELECT id, name FROM lora_view WHERE starts_with(tensor_hash, ?) OR starts_with(sha256, ?) "
        "ORDER BY starts_with(tensor_hash, ?) DESC, missing, id LIMIT 1",
        [prefix, prefix, prefix],
    )
    if frame.empty:
        return None
    row = frame.iloc[0]
    return {"id": int(row["id"]), "name": str(row["name"])}


def _name_of(db: Any, lora_id: int) -> str:
    frame = db.read_df("SELECT name FROM lora_view WHERE id = ?", [int(lora_id)])
    return str(frame.iloc[0]["name"])
