"""LoRA families with real tensors, written in kohya and diffusers/PEFT layouts, for weight-space tests.

A LoRA here is ``{diffusers module path: (up, down, alpha)}``; writers turn it into files with the real key
naming of each layout. The variants are what circulates in real libraries: fp16 copies, alpha changed with
``up`` rescaled, re-factorised (up·Q, Q⁻¹·down), converted to PEFT, and 50/50 merges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lora_factory import write_safetensors

Lora = dict[str, tuple[np.ndarray, np.ndarray, float]]

# (diffusers path, in, out, kernel) — real SD1.5 module names and widths; one 3×3 conv (LoCon).
SD1_MODULES = [
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 320, 320, 1),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 768, 320, 1),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", 768, 320, 1),
    ("unet.down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_out.0", 640, 640, 1),
    ("unet.down_blocks.0.resnets.0.conv1", 320, 320, 3),
    ("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k", 768, 1280, 1),
    ("unet.up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2", 5120, 1280, 1),
    ("unet.up_blocks.3.attentions.0.proj_out", 320, 320, 1),
    ("text_encoder.text_model.encoder.layers.0.self_attn.q_proj", 768, 768, 1),
]

# SDXL modules: (kohya SGM name, diffusers path, in, out)
SDXL_MODULES = [
    (
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
        2048,
        640,
    ),
    (
        "lora_unet_input_blocks_8_1_transformer_blocks_1_attn1_to_q",
        "unet.down_blocks.2.attentions.1.transformer_blocks.1.attn1.to_q",
        1280,
        1280,
    ),
    (
        "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v",
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
        2048,
        1280,
    ),
    ("lora_unet_output_blocks_5_1_proj_in", "unet.up_blocks.1.attentions.2.proj_in", 640, 640),
    ("lora_unet_input_blocks_1_0_in_layers_2", "unet.down_blocks.0.resnets.0.conv1", 320, 320),
    ("lora_te2_text_model_encoder_layers_3_mlp_fc1", "text_encoder_2.text_model.encoder.layers.3.mlp.fc1", 1280, 5120),
]


def kohya_name(path: str) -> str:
    """diffusers module path → kohya key prefix (`unet.a.b` → `lora_unet_a_b`)."""
    component, _, rest = path.partition(".")
    prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}[component]
    return prefix + rest.replace(".", "_")


def random_lora(seed: int, rank: int = 4, alpha: float = 2.0, modules: list | None = None) -> Lora:
    """A LoRA with Gaussian factors (what a trained LoRA looks like to the maths: no structure shared by chance)."""
    rng = np.random.default_rng(seed)
    lora: Lora = {}
    for path, width_in, width_out, kernel in modules or SD1_MODULES:
        down = rng.standard_normal((rank, width_in, kernel, kernel) if kernel > 1 else (rank, width_in))
        up = rng.standard_normal((width_out, rank, 1, 1) if kernel > 1 else (width_out, rank))
        lora[path] = (up.astype(np.float32) / 10, down.astype(np.float32) / 10, alpha)
    return lora


def dense(lora: Lora) -> dict[str, np.ndarray]:
    """Independent dense ΔW per module (numpy, flattened kernels) for checking the low-rank maths."""
    out = {}
    for path, (up, down, alpha) in lora.items():
        rank = down.shape[0]
        out[path] = (alpha / rank) * up.reshape(up.shape[0], rank).astype(np.float64) @ down.reshape(rank, -1)
    return out


def dense_cosine(a: Lora, b: Lora) -> float:
    da, db = dense(a), dense(b)
    common = sorted(set(da) & set(db))
    inner = sum(float(np.vdot(da[k], db[k])) for k in common)
    na = sum(float(np.vdot(da[k], da[k])) for k in common)
    nb = sum(float(np.vdot(db[k], db[k])) for k in common)
    return inner / np.sqrt(na * nb)


def write_kohya(path: Path, lora: Lora, dtype: type = np.float32, names: dict[str, str] | None = None) -> Path:
    """kohya layout: `<name>.lora_down.weight`, `.lora_up.weight`, `.alpha` (names: diffusers path → kohya)."""
    tensors: dict[str, np.ndarray] = {}
    for module, (up, down, alpha) in lora.items():
        name = (names or {}).get(module) or kohya_name(module)
        tensors[f"{name}.lora_down.weight"] = down.astype(dtype)
        tensors[f"{name}.lora_up.weight"] = up.astype(dtype)
        tensors[f"{name}.alpha"] = np.array(alpha, dtype=dtype)
    rank = next(iter(lora.values()))[1].shape[0]
    return write_safetensors(path, tensors, {"ss_network_dim": str(rank), "ss_network_module": "networks.lora"})


def write_peft(path: Path, lora: Lora, dtype: type = np.float32) -> Path:
    """diffusers/PEFT layout: `<path>.lora_A.weight` / `.lora_B.weight`, no alpha (the scale is folded into B)."""
    tensors: dict[str, np.ndarray] = {}
    for module, (up, down, alpha) in lora.items():
        scale = alpha / down.shape[0]
        tensors[f"{module}.lora_A.weight"] = down.astype(dtype)
        tensors[f"{module}.lora_B.weight"] = (up * scale).astype(dtype)
    return write_safetensors(path, tensors)


def rescaled_alpha(lora: Lora, factor: float = 4.0) -> Lora:
    """The same weights with alpha × factor and up ÷ factor."""
    return {k: (up / factor, down, alpha * factor) for k, (up, down, alpha) in lora.items()}


def refactorised(lora: Lora, seed: int = 99) -> Lora:
    """The same ΔW as up·Q and Q⁻¹·down for a random invertible Q."""
    rng = np.random.default_rng(seed)
    out: Lora = {}
    for k, (up, down, alpha) in lora.items():
        rank = down.shape[0]
        q = rng.standard_normal((rank, rank)) + 3 * np.eye(rank)
        up2 = (up.reshape(up.shape[0], rank) @ q).reshape(up.shape)
        down2 = (np.linalg.inv(q) @ down.reshape(rank, -1)).reshape(down.shape)
        out[k] = (up2.astype(np.float32), down2.astype(np.float32), alpha)
    return out


def merged(a: Lora, b: Lora, weight: float = 0.5) -> Lora:
    """weight·A + (1-weight)·B as one LoRA of rank r_a + r_b (factors stacked, alpha = rank: scale 1)."""
    out: Lora = {}
    for k in a:
        up_a, down_a, alpha_a = a[k]
        up_b, down_b, alpha_b = b[k]
        ra, rb = down_a.shape[0], down_b.shape[0]
        up = np.concatenate([up_a * (weight * alpha_a / ra), up_b * ((1 - weight) * alpha_b / rb)], axis=1)
        down = np.concatenate([down_a, down_b], axis=0)
        out[k] = (up.astype(np.float32), down.astype(np.float32), float(ra + rb))
    return out


def sdxl_lora(seed: int, rank: int = 4) -> tuple[Lora, dict[str, str]]:
    """An SDXL LoRA and the kohya SGM names of its modules (input_blocks/middle_block/output_blocks)."""
    modules = [(path, width_in, width_out, 1) for _, path, width_in, width_out in SDXL_MODULES]
    return random_lora(seed, rank=rank, modules=modules), {path: sgm for sgm, path, _, _ in SDXL_MODULES}
