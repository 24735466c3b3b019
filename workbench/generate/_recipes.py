"""Recipes: named LoRA stacks (weights per U-Net/text encoder) plus generation parameters.

Saved in the catalog's ``recipes`` table (``stack`` and ``params`` as JSON) and shared as a small
JSON document. Imported JSON is untrusted: it is checked field by field (unknown fields, wrong
types and out-of-range numbers are refused with an error naming the field) and its strings are
kept as data, never interpreted. Local file paths never leave the machine in an export; a LoRA's
SHA-256 travels instead, so the receiver's catalog can find the same file under another name.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from workbench.catalog import Database
from workbench.generate._prompt_syntax import insert_trigger_words
from workbench.generate._types import GenerationRequest, LoraSpec

FORMAT = "lora-workbench-recipe"
VERSION = 1
MAX_NAME = 200
MAX_TEXT = 10_000
MAX_LORAS = 32
MAX_JSON_BYTES = 1_000_000
TRIGGER_POLICIES = ("prepend", "append", "none")

# parameter -> (accepted types, check) ; everything a GenerationRequest takes besides the stack
_PARAMS: dict[str, tuple[tuple[type, ...], Any]] = {
    "prompt": ((str,), lambda v: len(v) <= MAX_TEXT),
    "negative_prompt": ((str,), lambda v: len(v) <= MAX_TEXT),
    "seed": ((int,), lambda v: -1 <= v < 2**32),
    "steps": ((int,), lambda v: 1 <= v <= 500),
    "cfg_scale": ((int, float), lambda v: 0 <= v <= 100),
    "width": ((int,), lambda v: 8 <= v <= 8192),
    "height": ((int,), lambda v: 8 <= v <= 8192),
    "sampler": ((str,), lambda v: 0 < len(v) <= 100),
    "model": ((str, type(None)), lambda v: v is None or len(v) <= 1000),
    "backend": ((str,), lambda v: v in ("diffusers", "a1111", "comfyui")),
    "triggers": ((str,), lambda v: v in TRIGGER_POLICIES),
}
_LORA_FIELDS = ("name", "unet", "te", "sha256")
_DOC_FIELDS = ("format", "version", "name", "loras", "params", "description")


class RecipeError(ValueError):
    """A recipe (or recipe JSON) that cannot be used; the message names the offending field."""


@dataclasses.dataclass
class Recipe:
    """A named LoRA stack and the parameters to generate with it."""

    name: str
    loras: list[LoraSpec] = dataclasses.field(default_factory=list)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    hashes: dict[str, str] = dataclasses.field(default_factory=dict)
    """LoRA name -> SHA-256 when the catalog knew it (lets another catalog find the file)."""

    def request(
        self, prompt: str | None = None, trigger_words: Mapping[str, Iterable[str]] | None = None, **overrides: Any
    ) -> GenerationRequest:
        """The generation request this recipe describes (``overrides`` replace single parameters).

        Trigger words are inserted per the recipe's ``triggers`` policy (default ``prepend``).
        """
        params = {**self.params, **overrides}
        policy = params.pop("triggers", "prepend")
        params.pop("backend", None)
        text = prompt if prompt is not None else params.pop("prompt", "")
        params.pop("prompt", None)
        text = insert_trigger_words(text, self.loras, trigger_words or {}, policy)
        return GenerationRequest(prompt=text, loras=[dataclasses.replace(s, path=None) for s in self.loras], **params)

    def to_dict(self) -> dict[str, Any]:
        """The shareable JSON document (no local paths)."""
        loras = []
        for spec in self.loras:
            entry: dict[str, Any] = {"name": spec.name, "unet": spec.unet}
            if spec.te is not None:
                entry["te"] = spec.te
            if self.hashes.get(spec.name):
                entry["sha256"] = self.hashes[spec.name]
            loras.append(entry)
        doc: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "loras": loras,
            "params": dict(self.params),
        }
        if self.description:
            doc["description"] = self.description
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, doc: Any) -> Recipe:
        """Validate a recipe document (see :func:`parse_recipe`)."""
        return parse_recipe(doc)

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<li><code>{html.escape(s.name)}</code> unet {s.unet:g}"
            + (f", te {s.te:g}" if s.te is not None else "")
            + "</li>"
            for s in self.loras
        )
        params = ", ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in self.params.items())
        return f"<b>Recipe {html.escape(self.name)}</b><ul>{rows}</ul><small>{params}</small>"


# ------------------------------------------------------------------------------------------ validation
def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecipeError(f"{where} must be a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise RecipeError(f"{where} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RecipeError(f"{where} must be a string, got {type(value).__name__}")
    text = value.replace("\x00", "").strip()
    if not text:
        raise RecipeError(f"{where} must not be empty")
    if len(text) > MAX_NAME:
        raise RecipeError(f"{where} is longer than {MAX_NAME} characters")
    return text


def _unknown(doc: Mapping, allowed: Iterable[str], where: str) -> None:
    extra = sorted(str(k) for k in doc if k not in allowed)
    if extra:
        raise RecipeError(
            f"unknown field{'s' if len(extra) > 1 else ''} in {where}: {', '.join(extra)[:300]} "
            f"(allowed: {', '.join(allowed)})"
        )


def validate_params(params: Any, where: str = "params") -> dict[str, Any]:
    """Checked generation parameters (unknown keys and wrong types are errors)."""
    if not isinstance(params, Mapping):
        raise RecipeError(f"{where} must be an object, got {type(params).__name__}")
    _unknown(params, _PARAMS, where)
    out: dict[str, Any] = {}
    for key, value in params.items():
        types, check = _PARAMS[key]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RecipeError(f"{where}.{key} must be {want}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{where}.{key} must be a finite number")
        if not check(value):
            raise RecipeError(f"{where}.{key} has an invalid value {str(value)[:60]!r}")
        out[key] = value
    return out


def validate_stack(loras: Any, where: str = "loras") -> tuple[list[LoraSpec], dict[str, str]]:
    """Checked LoRA stack entries ``{"name", "unet", "te"?, "sha256"?}`` -> specs and known hashes."""
    if not isinstance(loras, list):
        raise RecipeError(f"{where} must be a list, got {type(loras).__name__}")
    if len(loras) > MAX_LORAS:
        raise RecipeError(f"{where} has {len(loras)} LoRAs; at most {MAX_LORAS}")
    specs, hashes, seen = [], {}, set()
    for i, entry in enumerate(loras):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise RecipeError(f"{at} must be an object, got {type(entry).__name__}")
        _unknown(entry, _LORA_FIELDS, at)
        if "name" not in entry:
            raise RecipeError(f"{at}.name is missing")
        name = _name(entry["name"], f"{at}.name")
        if name in seen:
            raise RecipeError(f"{at}: LoRA {name!r} is in the stack twice")
        seen.add(name)
        unet = _number(entry.get("unet", 1.0), f"{at}.unet", -100, 100)
        te = None if entry.get("te") is None else _number(entry["te"], f"{at}.te", -100, 100)
        if entry.get("sha256") is not None:
            digest = entry["sha256"]
            if (
                not isinstance(digest, str)
                or len(digest) != 64
                or any(c not in "0123456789abcdefABCDEF" for c in digest)
            ):
                raise RecipeError(f"{at}.sha256 must be 64 hex characters")
            hashes[name] = digest.lower()
        specs.append(LoraSpec(name=name, unet=unet, te=te))
    return specs, hashes


def parse_recipe(doc: Any) -> Recipe:
    """A :class:`Recipe` from a JSON document (dict or text); raises :class:`RecipeError` saying what is wrong."""
    if isinstance(doc, (bytes, bytearray)):
        if len(doc) > MAX_JSON_BYTES:
            raise RecipeError(f"recipe JSON is larger than {MAX_JSON_BYTES} bytes")
        doc = doc.decode("utf-8", "replace")
    if isinstance(doc, str):
        if len(doc) > MAX_JSON_BYTES:
            raise RecipeError(f"recipe JSON is larger than {MAX_JSON_BYTES} bytes")
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, Mapping):
        raise RecipeError(f"a recipe must be a JSON object, got {type(doc).__name__}")
    _unknown(doc, _DOC_FIELDS, "the recipe")
    if doc.get("format", FORMAT) != FORMAT:
        raise RecipeError(f"format must be {FORMAT!r}, got {str(doc.get('format'))[:60]!r}")
    version = doc.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > VERSION or version < 1:
        raise RecipeError(f"version {str(version)[:20]} is not supported (this workbench reads version {VERSION})")
    if "name" not in doc:
        raise RecipeError("name is missing")
    name = _name(doc["name"], "name")
    loras, hashes = validate_stack(doc.get("loras", []))
    params = validate_params(doc.get("params", {}))
    description = doc.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_TEXT:
        raise RecipeError(f"description must be a string of at most {MAX_TEXT} characters")
    return Recipe(name=name, loras=loras, params=params, description=description, hashes=hashes)


# ------------------------------------------------------------------------------------------ catalog side
def lookup_loras(db: Database, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """name -> {id, path, preferred_weight, trigger_words, sha256, negative_text} for the catalog LoRAs known by that name
    (display name, file name or file stem), in one query."""
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        return {}
    marks = ", ".join("?" for _ in names)
    frame = db.read_df(
        "SELECT id, path, name, file_name, regexp_replace(file_name, '\\.[^.]*$', '') AS stem, preferred_weight, "
        f"trigger_words, sha256, negative_text FROM lora_view WHERE name IN ({marks}) OR file_name IN ({marks}) "
        f"OR regexp_replace(file_name, '\\.[^.]*$', '') IN ({marks}) ORDER BY missing, id",
        names * 3,
    )
    out: dict[str, dict[str, Any]] = {}
    for row in frame.to_dict("records"):
        for wanted in names:
            if wanted in out or wanted not in (row["name"], row["file_name"], row["stem"]):
                continue
            weight = row["preferred_weight"]
            out[wanted] = {
                "id": int(row["id"]),
                "path": row["path"] or None,
                "preferred_weight": None if weight is None or weight != weight else float(weight),
                "trigger_words": [str(w) for w in (row["trigger_words"] if row["trigger_words"] is not None else [])],
                "sha256": row["sha256"] if isinstance(row["sha256"], str) else None,
                "negative_text": row["negative_text"] if isinstance(row["negative_text"], str) else None,
            }
    return out


class Recipes:
    """Recipes saved in the catalog (``wb.recipes``): save, load, list, delete, export/import JSON."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- building stacks -----------------------------------------------------------------
    def spec(self, name: str, unet: float | None = None, te: float | None = None) -> LoraSpec:
        """A stack entry; without ``unet`` the catalog's preferred weight is used (else 1.0)."""
        if unet is None:
            unet = self.preferred_weights([name]).get(name, 1.0)
        return LoraSpec(name=name, unet=float(unet), te=None if te is None else float(te))

    def preferred_weights(self, names: Iterable[str]) -> dict[str, float]:
        """name -> the weight to start a LoRA at: its catalog ``preferred_weight``, else 1.0."""
        known = lookup_loras(self.db, names)
        return {
            n: float(known.get(n, {}).get("preferred_weight") or 0.0)
            if known.get(n, {}).get("preferred_weight") is not None
            else 1.0
            for n in names
        }

    def add(self, recipe: Recipe, name: str, unet: float | None = None, te: float | None = None) -> Recipe:
        """A copy of ``recipe`` with one more LoRA (preferred weight when ``unet`` is None); same name replaces."""
        spec = self.spec(name, unet, te)
        loras = [s for s in recipe.loras if s.name != name] + [spec]
        return dataclasses.replace(recipe, loras=loras)

    def trigger_words(self, names: Iterable[str]) -> dict[str, list[str]]:
        """name -> trigger words from the catalog (user fields win over file metadata)."""
        return {n: info["trigger_words"] for n, info in lookup_loras(self.db, names).items()}

    def negative_texts(self, names: Iterable[str]) -> dict[str, str]:
        """name -> the negative prompt to use with that LoRA (user field, else imported from A1111's ``.json``)."""
        return {n: info["negative_text"] for n, info in lookup_loras(self.db, names).items() if info["negative_text"]}

    def import_image(
        self, image: bytes | str | os.PathLike[str], name: str | None = None, *, overwrite: bool = False
    ) -> Any:
        """Save the recipe an A1111 or ComfyUI image describes; returns the ``ImageRecipe`` (with missing LoRAs)."""
        from workbench.generate._image_recipes import recipe_from_image

        found = recipe_from_image(self.db, image, name)
        found.recipe = self.save(found.recipe, overwrite=overwrite)
        return found

    def request(self, recipe: Recipe | str, prompt: str | None = None, **overrides: Any) -> GenerationRequest:
        """The request for a recipe (or saved recipe name), with catalog trigger words inserted per its policy."""
        recipe = self.get(recipe) if isinstance(recipe, str) else recipe
        return recipe.request(prompt, trigger_words=self.trigger_words(s.name for s in recipe.loras), **overrides)

    def from_request(
        self,
        name: str,
        request: GenerationRequest,
        *,
        backend: str | None = None,
        triggers: str = "prepend",
        description: str = "",
    ) -> Recipe:
        """A recipe capturing a request's stack and parameters (e.g. from the generate form or history)."""
        params = {k: v for k, v in request.to_dict().items() if k in _PARAMS and k != "loras"}
        if backend:
            params["backend"] = backend
        params["triggers"] = triggers
        return Recipe(
            name=name,
            loras=[dataclasses.replace(s, path=None) for s in request.loras],
            params=validate_params({k: v for k, v in params.items() if v is not None or k == "model"}),
            description=description,
        )

    # -- storage ---------------------------------------------------------------------------
    def save(self, recipe: Recipe, *, overwrite: bool = True) -> Recipe:
        """Store (validated; catalog SHA-256s filled in for sharing). ``overwrite=False`` refuses an existing name."""
        recipe = parse_recipe(recipe.to_dict())  # the same checks as an import
        known = lookup_loras(self.db, [s.name for s in recipe.loras])
        hashes = {**recipe.hashes, **{n: i["sha256"] for n, i in known.items() if i.get("sha256")}}
        recipe = dataclasses.replace(recipe, hashes=hashes)
        doc = recipe.to_dict()
        stack = json.dumps(doc["loras"], ensure_ascii=False)
        params = json.dumps(
            {**doc["params"], **({"description": recipe.description} if recipe.description else {})}, ensure_ascii=False
        )
        now = _dt.datetime.now()
        with self.db.write() as con:
            exists = con.execute("SELECT 1 FROM recipes WHERE name = ?", [recipe.name]).fetchall()
            if exists and not overwrite:
                raise RecipeError(f"a recipe named {recipe.name!r} exists already")
            if exists:
                con.execute(
                    "UPDATE recipes SET stack = ?, params = ?, updated_at = ? WHERE name = ?",
                    [stack, params, now, recipe.name],
                )
            else:
                con.execute(
                    "INSERT INTO recipes (name, stack, params, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    [recipe.name, stack, params, now, now],
                )
        return recipe

    def get(self, name: str) -> Recipe:
        rows = self.db.read_df("SELECT name, stack, params FROM recipes WHERE name = ?", [name]).to_dict("records")
        if not rows:
            raise KeyError(f"no recipe named {name!r}")
        return self._from_row(rows[0])

    def names(self) -> list[str]:
        return list(self.db.read_df("SELECT name FROM recipes ORDER BY lower(name)")["name"])

    def list(self) -> pd.DataFrame:
        """Saved recipes: name, LoRAs (``name:unet``), prompt, updated_at — newest first."""
        frame = self.db.read_df(
            "SELECT name, stack, params, created_at, updated_at FROM recipes ORDER BY updated_at DESC"
        )
        frame["loras"] = [[f"{e.get('name')}:{e.get('unet', 1.0)}" for e in _loads(s, [])] for s in frame["stack"]]
        frame["prompt"] = [_loads(p, {}).get("prompt", "") for p in frame["params"]]
        return frame[["name", "loras", "prompt", "created_at", "updated_at"]]

    def delete(self, name: str) -> None:
        with self.db.write() as con:
            gone = con.execute("DELETE FROM recipes WHERE name = ? RETURNING name", [name]).fetchall()
        if not gone:
            raise KeyError(f"no recipe named {name!r}")

    # -- sharing ---------------------------------------------------------------------------
    def export_json(self, name: str) -> str:
        """The saved recipe as a shareable JSON document."""
        return self.get(name).to_json()

    def export_file(self, name: str, dest: str | os.PathLike[str]) -> pathlib.Path:
        dest = pathlib.Path(dest)
        dest.write_text(self.export_json(name), encoding="utf-8")
        return dest

    def import_json(self, text: str | bytes | Mapping, *, overwrite: bool = False, rename: str | None = None) -> Recipe:
        """Validate a shared recipe, map its LoRAs to this catalog by SHA-256 when names differ, and save it."""
        recipe = parse_recipe(text)
        if rename is not None:
            recipe = dataclasses.replace(recipe, name=_name(rename, "rename"))
        recipe = self._remap_by_hash(recipe)
        return self.save(recipe, overwrite=overwrite)

    def import_file(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Recipe:
        path = pathlib.Path(path)
        if path.stat().st_size > MAX_JSON_BYTES:
            raise RecipeError(f"{path.name} is larger than {MAX_JSON_BYTES} bytes")
        return self.import_json(path.read_bytes(), overwrite=overwrite)

    # -- helpers ---------------------------------------------------------------------------
    def _remap_by_hash(self, recipe: Recipe) -> Recipe:
        known = lookup_loras(self.db, [s.name for s in recipe.loras])
        missing = {
            s.name: recipe.hashes[s.name] for s in recipe.loras if s.name not in known and s.name in recipe.hashes
        }
        if not missing:
            return recipe
        marks = ", ".join("?" for _ in missing)
        frame = self.db.read_df(
            f"SELECT name, sha256 FROM lora_view WHERE sha256 IN ({marks}) ORDER BY missing, id", list(missing.values())
        )
        by_hash: dict[str, str] = {}
        for row in frame.to_dict("records"):
            by_hash.setdefault(row["sha256"], row["name"])
        loras, hashes = [], dict(recipe.hashes)
        for spec in recipe.loras:
            local = by_hash.get(missing.get(spec.name, ""))
            if local:
                hashes[local] = hashes.pop(spec.name)
                spec = dataclasses.replace(spec, name=local)
            loras.append(spec)
        return dataclasses.replace(recipe, loras=loras, hashes=hashes)

    def _from_row(self, row: dict) -> Recipe:
        params = _loads(row["params"], {})
        description = params.pop("description", "") if isinstance(params, dict) else ""
        return parse_recipe(
            {"name": row["name"], "loras": _loads(row["stack"], []), "params": params, "description": description}
        )

    def _repr_html_(self) -> str:
        import html

        names = self.names()
        return f"<b>{len(names)} recipes</b>: " + ", ".join(html.escape(n) for n in names[:50])


def _loads(value: Any, default: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value if value is not None else default
