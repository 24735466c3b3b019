"""Writing and reading ``<lora:…>`` prompt tags in the two dialects people use.

A1111/SD.Next: ``<lora:NAME:TE[:UNET[:DYN]]>`` (second field text encoder, third U-Net, U-Net
defaults to TE) plus named ``te=``, ``unet=``, ``dyn=``. ComfyUI-Lora-Manager:
``<lora:NAME:MODEL[:CLIP]>`` (second field model/U-Net, third clip). Tags are parsed into
:class:`~workbench.generate._types.LoraSpec` (``unet``/``te`` multipliers), so a prompt written in
one dialect can be written back in the other without changing what runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from workbench.generate._types import LoraSpec

A1111 = "a1111"
COMFYUI = "comfyui"
DIALECTS = (A1111, COMFYUI)

_TAG = re.compile(r"<(lora|lyco):([^<>]*)>", re.IGNORECASE)


class PromptSyntaxError(ValueError):
    """A ``<lora:…>`` tag that cannot be read (empty name, non-numeric weight)."""


def _number(text: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PromptSyntaxError(f"weight {text!r} in {tag!r} is not a number") from None


def parse_tag(body: str, dialect: str = A1111) -> LoraSpec:
    """Parse the inside of one tag (``name:0.8:0.5`` or ``name:te=0.5:unet=1``)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use one of {DIALECTS}")
    tag = f"<lora:{body}>"
    parts = body.split(":")
    name = parts[0].strip()
    if not name:
        raise PromptSyntaxError(f"{tag!r} has no LoRA name")
    positional: list[float] = []
    named: dict[str, float] = {}
    for part in parts[1:]:
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            key, _, value = part.partition("=")
            key = key.strip().lower()
            if key in ("te", "unet", "dyn", "model", "clip"):
                named[key] = _number(value.strip(), tag)
            # in=/mid=/out=/lbw=/step schedules: kept in the text, not modelled here
        else:
            positional.append(_number(part, tag))
    if dialect == A1111:
        te = named.get("te", positional[0] if positional else 1.0)
        unet = named.get("unet", positional[1] if len(positional) > 1 else te)
    else:
        unet = named.get("model", named.get("unet", positional[0] if positional else 1.0))
        te = named.get("clip", named.get("te", positional[1] if len(positional) > 1 else unet))
    return LoraSpec(name=name, unet=unet, te=None if te == unet else te)


def parse_prompt(prompt: str, dialect: str = A1111) -> tuple[str, list[LoraSpec]]:
    """Split a prompt into its text without tags and the LoRA stack the tags describe.

    A name given twice keeps its last weights (as A1111 applies it once).
    """
    stack: dict[str, LoraSpec] = {}
    for match in _TAG.finditer(prompt):
        spec = parse_tag(match.group(2), dialect)
        stack.pop(spec.name, None)
        stack[spec.name] = spec
    text = _TAG.sub("", prompt)
    text = re.sub(r"\s*,\s*(,\s*)+", ", ", text)
    text = re.sub(r"[ \t]{2,}", " ", text).strip().strip(",").strip()
    return text, list(stack.values())


def _w(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"


def format_tag(spec: LoraSpec, dialect: str = A1111) -> str:
    """One tag; the short ``<lora:NAME:W>`` form when both multipliers are equal."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use one of {DIALECTS}")
    if ":" in spec.name or ">" in spec.name or "<" in spec.name:
        raise PromptSyntaxError(f"LoRA name {spec.name!r} cannot appear in a prompt tag (':', '<' or '>')")
    te, unet = spec.te_weight, spec.unet
    if te == unet:
        return f"<lora:{spec.name}:{_w(unet)}>"
    if dialect == A1111:
        return f"<lora:{spec.name}:{_w(te)}:{_w(unet)}>"
    return f"<lora:{spec.name}:{_w(unet)}:{_w(te)}>"


def compose_prompt(
    prompt: str,
    loras: Iterable[LoraSpec],
    dialect: str = A1111,
    trigger_words: Mapping[str, Iterable[str]] | None = None,
    triggers: str = "prepend",
) -> str:
    """The prompt a user would type: trigger words inserted, then one tag per LoRA at the end.

    ``triggers``: ``"prepend"`` (before the text), ``"append"`` (after it) or ``"none"``. Trigger
    words already in the prompt (case-insensitive) are not repeated.
    """
    if triggers not in ("prepend", "append", "none"):
        raise ValueError("triggers must be 'prepend', 'append' or 'none'")
    loras = list(loras)
    text = insert_trigger_words(prompt, loras, trigger_words or {}, triggers)
    tags = " ".join(format_tag(spec, dialect) for spec in loras)
    return f"{text} {tags}".strip() if tags else text


def insert_trigger_words(
    prompt: str, loras: Iterable[LoraSpec], trigger_words: Mapping[str, Iterable[str]], where: str = "prepend"
) -> str:
    """Add each LoRA's trigger words that the prompt does not already contain."""
    if where == "none":
        return prompt
    lowered = prompt.lower()
    missing: list[str] = []
    for spec in loras:
        for word in trigger_words.get(spec.name, ()):
            word = str(word).strip()
            if word and word.lower() not in lowered and word not in missing:
                missing.append(word)
    if not missing:
        return prompt
    words = ", ".join(missing)
    if not prompt.strip():
        return words
    return f"{words}, {prompt}" if where == "prepend" else f"{prompt}, {words}"


def convert(prompt: str, source: str, target: str) -> str:
    """Rewrite every tag of ``prompt`` from one dialect to the other, keeping the text in place."""
    return _TAG.sub(lambda m: format_tag(parse_tag(m.group(2), source), target), prompt)
