"""What every generation backend takes, returns and raises, and the per-job control handle.

A backend is anything with ``kind``, ``submit(request, control)``, ``cancel(control)``,
``list_loras()`` and ``health()`` (see :class:`Backend`). ``submit`` blocks until the image is
done, reports progress into the :class:`JobControl` and stops when the control is cancelled —
so the queue can run any backend in a worker thread and cancel it from another thread.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class GenerationError(RuntimeError):
    """A job failed. ``retryable`` says whether trying again later may succeed."""

    retryable = False


class BackendUnavailableError(GenerationError):
    """The backend could not be reached, answered HTTP 5xx, timed out or died mid-job."""

    retryable = True


class LoraNotFoundError(GenerationError):
    """A LoRA of the stack is not known to the backend."""


class LoraIncompatibleError(GenerationError):
    """A LoRA cannot run on this backend/base model (wrong family, unsupported network type)."""


class JobCancelledError(GenerationError):
    """The job was cancelled and its backend stopped."""


@dataclasses.dataclass
class LoraSpec:
    """One LoRA of a stack: name (alias or file stem), U-Net and text-encoder multipliers.

    ``te=None`` means "same as unet" (A1111's default). ``path`` pins a file for the diffusers backend.
    """

    name: str
    unet: float = 1.0
    te: float | None = None
    path: str | None = None

    @property
    def te_weight(self) -> float:
        return self.unet if self.te is None else self.te

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> LoraSpec:
        return cls(
            name=str(d["name"]),
            unet=float(d.get("unet", d.get("weight", 1.0))),
            te=None if d.get("te") is None else float(d["te"]),
            path=d.get("path"),
        )


@dataclasses.dataclass
class GenerationRequest:
    """Everything one image needs. ``prompt`` holds no ``<lora:…>`` tags; the stack is ``loras``."""

    prompt: str
    negative_prompt: str = ""
    loras: list[LoraSpec] = dataclasses.field(default_factory=list)
    seed: int = -1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    sampler: str = "Euler"
    model: str | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["loras"] = [lora.to_dict() for lora in self.loras]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GenerationRequest:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["loras"] = [LoraSpec.from_dict(x) for x in d.get("loras", [])]
        return cls(**kw)

    def with_seed(self, seed: int) -> GenerationRequest:
        return dataclasses.replace(self, seed=seed)


@dataclasses.dataclass
class GenerationResult:
    """One finished image: PNG bytes (with A1111 infotext embedded) and its parameters."""

    png: bytes
    seed: int
    width: int
    height: int
    infotext: str
    params: dict[str, Any]
    lora_hashes: dict[str, str] = dataclasses.field(default_factory=dict)
    backend: str = ""
    elapsed_s: float = 0.0


@dataclasses.dataclass
class LoraInfo:
    """A LoRA as a backend lists it."""

    name: str
    alias: str | None = None
    path: str | None = None
    metadata: dict = dataclasses.field(default_factory=dict)


class JobControl:
    """Progress and cancellation for one running job, shared by the queue and the backend."""

    def __init__(self, on_progress: Callable[[JobControl], None] | None = None) -> None:
        self._cancel = threading.Event()
        self._on_progress = on_progress
        self._cancel_hooks: list[Callable[[], None]] = []
        self.step = 0
        self.steps = 0
        self.progress = 0.0
        self.updated = time.monotonic()
        self.message = ""

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop; runs the backend's interrupt hooks once."""
        if self._cancel.is_set():
            return
        self._cancel.set()
        for hook in list(self._cancel_hooks):
            try:
                hook()
            except Exception:  # the backend may already be gone; the job still stops on its own
                pass

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Register how to interrupt the backend; runs at once when already cancelled."""
        self._cancel_hooks.append(hook)
        if self._cancel.is_set():
            hook()

    def report(self, step: int, steps: int, message: str = "") -> None:
        self.step, self.steps = step, steps
        self.progress = min(1.0, step / steps) if steps else 0.0
        self.message = message
        self.updated = time.monotonic()
        if self._on_progress is not None:
            self._on_progress(self)

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelledError("cancelled")


class Backend(Protocol):
    """The small protocol the queue, CLI and views use for every backend."""

    kind: str

    def submit(self, request: GenerationRequest, control: JobControl | None = None) -> GenerationResult: ...

    def cancel(self, control: JobControl) -> None: ...

    def list_loras(self) -> list[LoraInfo]: ...

    def health(self) -> dict: ...
