"""What a generation request may ask for: the one home of the size, step, CFG, seed, weight and prompt limits.

Checked before a job is queued (``JobQueue.submit``, the CLI) and again by an RQ worker, so a request
that would allocate 40 GB, loop forever or poison the catalog with ``NaN`` is refused with a message
that names the field, the value and the allowed range — and nothing is stored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from workbench.generate._types import GenerationRequest


class InvalidRequestError(ValueError):
    """A generation parameter is outside what the backend accepts; the message names it and the range."""


@dataclasses.dataclass(frozen=True)
class GenerationLimits:
    """Limits of one backend kind. A queue holds one per kind (``JobQueue.limits``) and may raise them."""

    max_side: int = 4096
    max_pixels: int = 4096 * 4096
    size_multiple: int = 8
    min_side: int = 8
    max_steps: int = 150
    min_cfg: float = 0.0
    max_cfg: float = 30.0
    max_seed: int = 2**32 - 1  # -1 means "random"
    max_abs_weight: float = 10.0
    max_prompt_chars: int = 32_768
    max_loras: int = 64
    max_name_chars: int = 255


#: Per backend kind: A1111/SD.Next and diffusers take 32-bit seeds; ComfyUI takes 64-bit seeds and CFG up to 100.
BACKEND_LIMITS: dict[str, GenerationLimits] = {
    "diffusers": GenerationLimits(),
    "a1111": GenerationLimits(),
    "comfyui": GenerationLimits(max_cfg=100.0, max_seed=2**64 - 1),
}


def limits_for(backend: str) -> GenerationLimits:
    """The default limits of a backend kind (unknown kinds get the strictest common ones)."""
    return BACKEND_LIMITS.get(backend, GenerationLimits())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            return int(value)
        raise InvalidRequestError(f"{field} must be a whole number, got {_short(value)}")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"{field} must be a number, got {_short(value)}")
    if isinstance(value, int) and abs(value) > 2**53:
        raise InvalidRequestError(f"{field} {_short(value)} is out of range")
    if not math.isfinite(value):
        raise InvalidRequestError(f"{field} must be a finite number, got {value}")
    return float(value)


def _text(value: Any, field: str, cap: int) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{field} must be text, got {type(value).__name__}")
    if len(value) > cap:
        raise InvalidRequestError(f"{field} is {len(value):,} characters long; at most {cap:,} are accepted")
    if "\x00" in value:
        raise InvalidRequestError(f"{field} contains a NUL character")
    return value


def validate_request(request: GenerationRequest, limits: GenerationLimits | None = None) -> GenerationRequest:
    """Check every parameter against ``limits``; returns the request or raises :class:`InvalidRequestError`."""
    lim = limits or GenerationLimits()
    if not isinstance(request, GenerationRequest):
        raise InvalidRequestError(f"expected a GenerationRequest, got {type(request).__name__}")
    _text(request.prompt, "prompt", lim.max_prompt_chars)
    _text(request.negative_prompt, "negative prompt", lim.max_prompt_chars)
    _text(request.sampler, "sampler", lim.max_name_chars)
    if request.model is not None:
        _text(request.model, "model", 4096)
    for field in ("width", "height"):
        side = _whole(getattr(request, field), field)
        if side < lim.min_side or side > lim.max_side:
            raise InvalidRequestError(f"{field} must be from {lim.min_side} to {lim.max_side} pixels, got {side}")
        if side % lim.size_multiple:
            raise InvalidRequestError(f"{field} must be a multiple of {lim.size_multiple}, got {side}")
    if request.width * request.height > lim.max_pixels:
        raise InvalidRequestError(
            f"size {request.width}x{request.height} is {request.width * request.height:,} pixels; "
            f"at most {lim.max_pixels:,} are accepted"
        )
    steps = _whole(request.steps, "steps")
    if not 1 <= steps <= lim.max_steps:
        raise InvalidRequestError(f"steps must be from 1 to {lim.max_steps}, got {steps}")
    cfg = _number(request.cfg_scale, "cfg scale")
    if not lim.min_cfg <= cfg <= lim.max_cfg:
        raise InvalidRequestError(f"cfg scale must be from {lim.min_cfg:g} to {lim.max_cfg:g}, got {cfg:g}")
    seed = _whole(request.seed, "seed")
    if seed != -1 and not 0 <= seed <= lim.max_seed:
        raise InvalidRequestError(f"seed must be -1 (random) or from 0 to {lim.max_seed}, got {_short(seed)}")
    if not isinstance(request.loras, list):
        raise InvalidRequestError("loras must be a list")
    if len(request.loras) > lim.max_loras:
        raise InvalidRequestError(f"at most {lim.max_loras} LoRAs in one stack, got {len(request.loras)}")
    for spec in request.loras:
        name = _text(spec.name, "LoRA name", lim.max_name_chars)
        if not name.strip():
            raise InvalidRequestError("a LoRA of the stack has an empty name")
        for field, value in (("weight", spec.unet), ("text-encoder weight", spec.te)):
            if value is None and field != "weight":
                continue
            number = _number(value, f"{field} of LoRA {name!r}")
            if abs(number) > lim.max_abs_weight:
                raise InvalidRequestError(
                    f"{field} of LoRA {name!r} must be from -{lim.max_abs_weight:g} to {lim.max_abs_weight:g}, "
                    f"got {number:g}"
                )
        if spec.path is not None:
            _text(spec.path, f"path of LoRA {name!r}", 4096)
    return request


def request_from_stored(params: Any) -> GenerationRequest:
    """Rebuild a stored job's request; a row that cannot be rebuilt raises :class:`InvalidRequestError`."""
    try:
        return GenerationRequest.from_dict(params["request"])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise InvalidRequestError(f"the stored job parameters are unreadable: {type(exc).__name__}: {exc}") from None
