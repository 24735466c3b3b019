"""Generation backends behind one small protocol (see :mod:`workbench.backends.base`)."""
from __future__ import annotations

from workbench.backends.base import (
    Backend, BackendUnavailableError, GenerationError, GenerationRequest, GenerationResult, JobCancelledError,
    JobControl, LoraIncompatibleError, LoraInfo, LoraNotFoundError, LoraSpec,
)

KINDS = ("diffusers", "a1111", "comfyui")


def open_backend(kind: str, **options) -> Backend:
    """A backend by kind: ``diffusers`` (model=, lora_dirs=, cache_dir=), ``a1111``/``comfyui`` (url=)."""
    if kind == "diffusers":
        from workbench.backends.diffusers_backend import DiffusersBackend
        return DiffusersBackend(**options)
    if kind == "a1111":
        from workbench.backends.a1111 import A1111Backend
        return A1111Backend(**options)
    if kind == "comfyui":
        from workbench.backends.comfyui import ComfyUIBackend
        return ComfyUIBackend(**options)
    raise ValueError(f"unknown backend {kind!r}; use one of {', '.join(KINDS)}")


__all__ = ["Backend", "BackendUnavailableError", "GenerationError", "GenerationRequest", "GenerationResult",
           "JobCancelledError", "JobControl", "LoraIncompatibleError", "LoraInfo", "LoraNotFoundError", "LoraSpec",
           "KINDS", "open_backend"]
