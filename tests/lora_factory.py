"""Small but structurally real LoRA files for tests (kohya SD1/SDXL, PEFT), written with real bytes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_SD1_MODULES = [
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 768, 320),
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v", 768, 320),
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 320, 320),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k", 768, 1280),
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
]
_SDXL_MODULES = [
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048, 640),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_v", 2048, 640),
    ("lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q", 1280, 1280),
    ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
    ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280),
]


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Write a real safetensors file (header + data) without torch."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    blobs = []
    dtypes = {np.dtype("float16"): "F16", np.dtype("float32"): "F32"}
    for key, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        header[key] = {
            "dtype": dtypes[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for blob in blobs:
            handle.write(blob)
    return path


def write_stored(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> Path:
    """A safetensors file with tensors stored as F16, BF16, F32 or F64, in this order and unpadded (so a float32
    tensor after an odd number of float16 values lies at an offset that is not a multiple of 4)."""
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for key, (dtype, array) in tensors.items():
        if dtype == "BF16":
            data = (np.asarray(array, np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            data = np.asarray(array, {"F16": np.float16, "F32": np.float32, "F64": np.float64}[dtype]).tobytes()
        header[key] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    return path


def write_kohya_lora(
    path: Path,
    base: str = "SD1",
    rank: int = 4,
    alpha: float = 2.0,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A kohya-layout LoRA for SD1 or SDXL with real module names and widths."""
    rng = np.random.default_rng(seed)
    modules = _SD1_MODULES if base == "SD1" else _SDXL_MODULES
    tensors: dict[str, np.ndarray] = {}
    for name, width_in, width_out in modules:
        tensors[f"{name}.lora_down.weight"] = rng.standard_normal((rank, width_in)).astype(np.float16)
        tensors[f"{name}.lora_up.weight"] = rng.standard_normal((width_out, rank)).astype(np.float16)
        tensors[f"{name}.alpha"] = np.array(alpha, dtype=np.float16)
    meta = {"ss_network_dim": str(rank), "ss_network_alpha": str(alpha), "ss_network_module": "networks.lora"}
    meta.update(metadata or {})
    return write_safetensors(path, tensors, meta)
