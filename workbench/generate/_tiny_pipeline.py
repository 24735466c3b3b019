"""A tiny Stable-Diffusion-shaped pipeline with RANDOM weights, built offline from configs.

No real SD weights can be obtained offline, so tests, demos, benchmarks and
``workbench generate --model tiny`` use this pipeline: every component is created from a small
config with ``torch.manual_seed``, so every process builds bitwise-identical weights. Its images
are noise-like and carry no meaning; everything that records them says "random weights".

Also writes small LoRA files (kohya and PEFT layouts, with kohya ``ss_*`` metadata) shaped for it.
"""

from __future__ import annotations

import json
import pathlib

from workbench.files import TINY_BASE_MODEL, TINY_BASE_MODEL_VERSION, TINY_CROSS_ATTENTION_DIM

TINY_MODEL_NAME = "tiny-sd1-random"
_RECIPE_VERSION = "1"
_MARKER = "workbench_tiny.json"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode table (a byte-level vocabulary needs no merges)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _tokenizer():
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _components() -> dict:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(4, 8),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
        attention_head_dim=2,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=514,
            hidden_size=TINY_CROSS_ATTENTION_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def build_tiny_pipeline(cache_dir: str | pathlib.Path) -> pathlib.Path:
    """Build the tiny random-weight pipeline once and cache it as a local diffusers folder.

    Returns the folder (``<cache_dir>/tiny-sd1-random``); reuses it when already built by the same
    recipe. Load it with ``workbench.generate.backends._diffusers.load_pipeline``.
    """
    folder = pathlib.Path(cache_dir) / TINY_MODEL_NAME
    marker = folder / _MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("recipe") == _RECIPE_VERSION:
                return folder
        except ValueError:
            pass
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    tmp = folder.with_name(folder.name + ".tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]  # a DiffusionPipeline method
    (tmp / _MARKER).write_text(
        json.dumps(
            {
                "recipe": _RECIPE_VERSION,
                "base_model": TINY_BASE_MODEL,
                "note": "random weights: images carry no meaning; for tests and demos only",
            }
        )
    )
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def is_tiny_pipeline_folder(path: str | pathlib.Path) -> bool:
    return (pathlib.Path(path) / _MARKER).is_file()


# ---------------------------------------------------------------- LoRA files for the tiny pipeline

# Module names of the tiny pipeline that LoRAs target (diffusers naming). proj_in/proj_out are 1x1 convs.
_UNET_ATTN = [
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
]
_UNET_BLOCKS = [
    "down_blocks.1.attentions.0",
    "up_blocks.0.attentions.0",
    "up_blocks.0.attentions.1",
    "mid_block.attentions.0",
]
_TE_MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"]


def _unet_shapes() -> dict[str, tuple[int, int, bool]]:
    """module -> (in_features, out_features, is_conv) for the tiny U-Net (channels 8 in attention blocks)."""
    ch, ctx = 8, TINY_CROSS_ATTENTION_DIM
    shapes: dict[str, tuple[int, int, bool]] = {}
    for block in _UNET_BLOCKS:
        shapes[f"{block}.proj_in"] = (ch, ch, True)
        shapes[f"{block}.proj_out"] = (ch, ch, True)
        tb = f"{block}.transformer_blocks.0"
        for m in _UNET_ATTN:
            if m.startswith("attn2.to_k") or m.startswith("attn2.to_v"):
                shapes[f"{tb}.{m}"] = (ctx, ch, False)
            elif m == "ff.net.0.proj":
                shapes[f"{tb}.{m}"] = (ch, ch * 8, False)  # GEGLU: 4*dim*2
            elif m == "ff.net.2":
                shapes[f"{tb}.{m}"] = (ch * 4, ch, False)
            else:
                shapes[f"{tb}.{m}"] = (ch, ch, False)
    return shapes


def _te_shapes() -> dict[str, tuple[int, int, bool]]:
    h, inter = TINY_CROSS_ATTENTION_DIM, 64
    shapes = {}
    for layer in range(2):
        for m in _TE_MODULES:
            i, o = (h, inter) if m == "mlp.fc1" else (inter, h) if m == "mlp.fc2" else (h, h)
            shapes[f"text_model.encoder.layers.{layer}.{m}"] = (i, o, False)
    return shapes


def _lora_pair(gen, in_f: int, out_f: int, rank: int, conv: bool, strength: float):
    import torch

    down = torch.randn(rank, in_f, generator=gen) * (strength / in_f**0.5)
    up = torch.randn(out_f, rank, generator=gen) * (strength / rank**0.5)
    if conv:
        down, up = down[:, :, None, None], up[:, :, None, None]
    return down.contiguous(), up.contiguous()


def make_lora_tensors(
    seed: int,
    rank: int = 4,
    alpha: float | None = None,
    layout: str = "kohya",
    text_encoder: bool = True,
    strength: float = 1.5,
    network: str = "LoRA",
) -> dict:
    """Random low-rank tensors for the tiny pipeline, in ``kohya`` or ``peft`` key layout.

    ``network="LoHa"`` writes LyCORIS LoHa keys (``hada_w1_a``…) that diffusers cannot load.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    modules = dict(_unet_shapes())
    if text_encoder:
        modules.update(_te_shapes())
    tensors: dict[str, torch.Tensor] = {}
    for module, (in_f, out_f, conv) in modules.items():
        is_te = module.startswith("text_model.")
        if layout == "peft":
            prefix = ("text_encoder." if is_te else "unet.") + module
            down, up = _lora_pair(gen, in_f, out_f, rank, conv, strength)
            tensors[f"{prefix}.lora_A.weight"] = down
            tensors[f"{prefix}.lora_B.weight"] = up
            continue
        prefix = ("lora_te_" if is_te else "lora_unet_") + module.replace(".", "_")
        if network == "LoHa":
            for part in ("w1", "w2"):
                tensors[f"{prefix}.hada_{part}_a"] = torch.randn(out_f, rank, generator=gen) * 0.1
                tensors[f"{prefix}.hada_{part}_b"] = torch.randn(rank, in_f, generator=gen) * 0.1
        else:
            down, up = _lora_pair(gen, in_f, out_f, rank, conv, strength)
            tensors[f"{prefix}.lora_down.weight"] = down
            tensors[f"{prefix}.lora_up.weight"] = up
        tensors[f"{prefix}.alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
    return tensors


def kohya_metadata(
    output_name: str,
    trigger_words: list[str],
    rank: int,
    alpha: float,
    *,
    network_module: str = "networks.lora",
    text_encoder: bool = True,
    comment: str = "",
) -> dict[str, str]:
    """kohya ``ss_*`` metadata (all values strings, nested JSON as strings) naming the tiny base model."""
    tags = {t: 10 for t in trigger_words}
    tags.update({"random weights": 10, "tiny": 5})
    return {
        "ss_output_name": output_name,
        "ss_base_model_version": TINY_BASE_MODEL_VERSION,
        "ss_sd_model_name": TINY_BASE_MODEL,
        "ss_v2": "False",
        "ss_network_module": network_module,
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_network_train_unet_only": str(not text_encoder),
        "ss_training_comment": comment
        or f"random weights for the tiny test pipeline; trigger: {', '.join(trigger_words)}",
        "ss_tag_frequency": json.dumps({f"10_{output_name}": tags}),
        "ss_num_train_images": "10",
        "ss_resolution": "(64, 64)",
        "ss_seed": "0",
        "ss_learning_rate": "0.0001",
        "ss_epoch": "1",
        "ss_steps": "100",
        "ss_training_started_at": "1700000000.0",
        "ss_training_finished_at": "1700000100.0",
        "modelspec.architecture": "tiny-sd1/lora",
        "modelspec.title": output_name,
        "modelspec.trigger_phrase": ", ".join(trigger_words),
        "modelspec.description": "Random-weight LoRA for the tiny test pipeline (random weights, not a real style).",
    }


TINY_LORAS = [
    # stem, layout, seed, rank, alpha, text_encoder, trigger words, network
    ("tiny_watercolor", "kohya", 1, 4, 2.0, True, ["wtrclr style"], "LoRA"),
    ("tiny_pixelart", "peft", 2, 4, 4.0, True, ["pxl art", "8bit"], "LoRA"),
    ("tiny_neon_unet_only", "kohya", 3, 8, 8.0, False, ["neon glow"], "LoRA"),
    ("tiny_loha_lycoris", "kohya", 4, 4, 4.0, True, ["loha thing"], "LoHa"),
]
"""The LoRA files ``write_tiny_loras`` writes; the LoHa one is deliberately unloadable by diffusers."""


def write_tiny_loras(dest_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Write small LoRA files shaped for the tiny pipeline into ``dest_dir`` (deterministic bytes).

    kohya and PEFT layouts, with ``ss_*`` metadata (``ss_base_model_version="tiny_sd1"``),
    meaningful output names and trigger words. One LyCORIS LoHa file is included on purpose: the
    diffusers backend refuses it with an error naming the backends that can run it.
    """
    from safetensors.torch import save_file

    dest = pathlib.Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, layout, seed, rank, alpha, te, triggers, network in TINY_LORAS:
        tensors = make_lora_tensors(seed, rank=rank, alpha=alpha, layout=layout, text_encoder=te, network=network)
        meta = kohya_metadata(
            stem,
            triggers,
            rank,
            alpha,
            text_encoder=te,
            network_module="lycoris.kohya" if network == "LoHa" else "networks.lora",
        )
        if network == "LoHa":
            meta["ss_network_args"] = json.dumps({"algo": "loha"})
        path = dest / f"{stem}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        paths.append(path)
    return paths
