"""Generation backends behind one small protocol (see :mod:`workbench.generate._types`)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

from workbench.generate._types import Backend
from workbench.generate.backends._a1111 import A1111Backend
from workbench.generate.backends._comfyui import ComfyUIBackend, build_graph
from workbench.generate.backends._compat import LoraFileInfo, check_diffusers_compatible, inspect_file
from workbench.generate.backends._diffusers import DiffusersBackend

KINDS = ("diffusers", "a1111", "comfyui")


def open_backend(kind: str, **options: Any) -> Backend:
    """A backend by kind: ``diffusers`` (model=, lora_dirs=, cache_dir=), ``a1111``/``comfyui`` (url=)."""
    if kind == "diffusers":
        return DiffusersBackend(**options)
    if kind == "a1111":
        return A1111Backend(**options)
    if kind == "comfyui":
        return ComfyUIBackend(**options)
    raise ValueError(f"unknown backend {kind!r}; use one of {', '.join(KINDS)}")


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """One configured generation backend as the queue and the views offer it."""

    kind: str
    options: dict = dataclasses.field(default_factory=dict, hash=False)
    label: str = ""

    @property
    def random_weights(self) -> bool:
        """True for the tiny test pipeline: its images carry no meaning and every view must say so."""
        return self.kind == "diffusers" and str(self.options.get("model", "tiny")) == "tiny"


def _choice(kind: str, target: str | None = None, label: str | None = None) -> BackendChoice:
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown backend {kind!r} in the settings; use one of {', '.join(KINDS)}")
    if kind == "diffusers":
        model = (target or "tiny").strip()
        options = {} if model == "tiny" else {"model": model}
        auto = (
            "diffusers · tiny-sd1 (random weights: images carry no meaning)"
            if model == "tiny"
            else f"diffusers · {pathlib.Path(model).name}"
        )
    else:
        if not target:
            raise ValueError(
                f"backend {kind!r} needs a URL, e.g. {kind}:http://127.0.0.1:{7860 if kind == 'a1111' else 8188}"
            )
        options = {"url": target.strip()}
        auto = f"{kind} · {target.strip()}"
    choice = BackendChoice(kind, options, label or auto)
    if choice.random_weights and "random weights" not in choice.label:
        choice = BackendChoice(kind, options, f"{choice.label} (random weights)")
    return choice


def configured_backends(home: str | os.PathLike[str] | None = None) -> list[BackendChoice]:
    """The backends this workbench generates with, first = default.

    ``$WORKBENCH_BACKEND`` wins (comma separated ``kind[:model-or-url]``: ``diffusers``,
    ``diffusers:/models/sd15``, ``a1111:http://127.0.0.1:7860``, ``comfyui:http://127.0.0.1:8188``);
    else ``generation.backends`` in ``<home>/settings.json`` (``[{"kind", "model"|"url", "label"?}]``);
    else the in-process diffusers backend on the tiny random-weight pipeline.
    """
    env = os.environ.get("WORKBENCH_BACKEND", "").strip()
    if env:
        out = []
        for part in filter(None, (p.strip() for p in env.split(","))):
            kind, _, target = part.partition(":")
            out.append(_choice(kind, target or None))
        return out
    if home is not None:
        path = pathlib.Path(home) / "settings.json"
        if path.is_file():
            settings = json.loads(path.read_text(encoding="utf-8") or "{}")
            entries = (settings.get("generation") or {}).get("backends") or []
            if entries:
                return [
                    _choice(str(e.get("kind", "")), e.get("model") or e.get("url"), e.get("label")) for e in entries
                ]
    return [_choice("diffusers")]


__all__ = [
    "A1111Backend",
    "BackendChoice",
    "build_graph",
    "check_diffusers_compatible",
    "ComfyUIBackend",
    "configured_backends",
    "DiffusersBackend",
    "inspect_file",
    "KINDS",
    "LoraFileInfo",
    "open_backend",
]
