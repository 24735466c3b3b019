"""Weight-space analysis of single files: low-rank maths against dense numpy, layouts, blocks, bad input."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from lora_factory import write_safetensors
from weights_factory import (
    dense,
    dense_cosine,
    merged,
    random_lora,
    refactorised,
    rescaled_alpha,
    sdxl_lora,
    write_kohya,
    write_peft,
)

from workbench.files import LoraWeights, analyze_weights, block_of, canonical_module, weights_cosine

# --- the maths, checked against dense numpy ------------------------------------------------------------


def _check_module(lora: LoraWeights, key: str, expected: np.ndarray) -> None:
    delta = lora.module(key)
    assert delta.shape == expected.shape
    np.testing.assert_allclose(delta.dense(), expected, rtol=1e-4, atol=1e-6)
    assert delta.norm2() == pytest.approx(float(np.sum(expected.astype(np.float64) ** 2)), rel=1e-5)
    if min(expected.shape) > 768:  # a dense SVD that large costs seconds on a shared CPU; the norm is checked
        return
    expected_sv = np.linalg.svd(expected.astype(np.float64), compute_uv=False)
    got = delta.singular_values()
    # through float32 Gram matrices: values resolved to ~1e-3 of the largest (enough for energy ranks)
    np.testing.assert_allclose(got[: len(expected_sv)], expected_sv[: len(got)], rtol=1e-3, atol=2e-3 * expected_sv[0])


def test_lora_and_locon_deltas_match_dense(tmp_path: Path) -> None:
    lora = random_lora(1, rank=4, alpha=3.0)
    path = write_kohya(tmp_path / "a.safetensors", lora)
    expected = dense(lora)
    with LoraWeights(path) as weights:
        assert len(weights.modules) == len(lora)
        for module, matrix in expected.items():
            _check_module(weights, canonical_module(module), matrix)


def test_locon_mid_loha_lokr_dora_and_full_match_dense(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)

    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    mid, down, up = r(4, 4, 3, 3), r(4, 32, 1, 1), r(16, 4, 1, 1)
    w1a, w1b, w2a, w2b = r(64, 2), r(2, 48), r(64, 3), r(3, 48)
    k1, k2a, k2b = r(4, 4), r(16, 2), r(2, 12)
    kf1, kf2 = r(2, 3), r(8, 4)
    d_down, d_up = r(4, 40), r(24, 4)
    diff = r(10, 20)
    tensors = {
        "lora_unet_conv_in.lora_mid.weight": mid,
        "lora_unet_conv_in.lora_down.weight": down,
        "lora_unet_conv_in.lora_up.weight": up,
        "lora_unet_conv_in.alpha": np.array(2.0, np.float32),
        "lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": w1a,
        "lora_unet_mid_block_attentions_0_proj_in.hada_w1_b": w1b,
        "lora_unet_mid_block_attentions_0_proj_in.hada_w2_a": w2a,
        "lora_unet_mid_block_attentions_0_proj_in.hada_w2_b": w2b,
        "lora_unet_mid_block_attentions_0_proj_in.alpha": np.array(1.0, np.float32),
        "lora_unet_mid_block_attentions_0_proj_out.lokr_w1": k1,
        "lora_unet_mid_block_attentions_0_proj_out.lokr_w2_a": k2a,
        "lora_unet_mid_block_attentions_0_proj_out.lokr_w2_b": k2b,
        "lora_unet_mid_block_attentions_0_proj_out.alpha": np.array(1.0, np.float32),
        "lora_unet_up_blocks_0_resnets_0_conv1.lokr_w1": kf1,
        "lora_unet_up_blocks_0_resnets_0_conv1.lokr_w2": kf2,
        "lora_unet_up_blocks_0_resnets_0_conv1.alpha": np.array(1.0, np.float32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": d_down,
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": d_up,
        "lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale": r(24, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": np.array(8.0, np.float32),
        "lora_unet_up_blocks_0_resnets_1_conv2.diff": diff,
        "lora_unet_up_blocks_0_resnets_1_conv2.alpha": np.array(1.0, np.float32),
    }
    path = write_safetensors(tmp_path / "mixed.safetensors", tensors)
    locon = 0.5 * np.einsum("oa,abhw,bi->oihw", up[:, :, 0, 0], mid, down[:, :, 0, 0]).reshape(16, -1)
    expected = {
        "unet/conv_in": locon,
        "unet/mid_block_attentions_0_proj_in": 0.5 * (w1a @ w1b) * (w2a @ w2b),
        "unet/mid_block_attentions_0_proj_out": 0.5 * np.kron(k1, k2a @ k2b),
        "unet/up_blocks_0_resnets_0_conv1": np.kron(kf1, kf2),
        "unet/down_blocks_0_attentions_0_proj_in": 2.0 * d_up @ d_down,
        "unet/up_blocks_0_resnets_1_conv2": diff,
    }
    with LoraWeights(path) as weights:
        assert set(weights.modules) == set(expected)
        for key, matrix in expected.items():
            _check_module(weights, key, matrix)
    result = analyze_weights(path)
    assert result.ok, result.error
    assert any("DoRA" in w for w in result.warnings) or result.network_type != "DoRA"


def test_effective_rank_of_a_padded_lora(tmp_path: Path) -> None:
    """A rank-16 file holding a rank-2 update (common: trained at high rank, little used) shows rank 2."""
    rng = np.random.default_rng(3)
    up = np.zeros((320, 16), np.float32)
    down = np.zeros((16, 768), np.float32)
    up[:, :2] = rng.standard_normal((320, 2))
    down[:2] = rng.standard_normal((2, 768))
    path = write_safetensors(
        tmp_path / "r.safetensors",
        {
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": down,
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": up,
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": np.array(16, np.float32),
        },
    )
    result = analyze_weights(path)
    assert result.ok
    ranks = result.rank_summary()
    assert ranks["nominal_rank"] == 16
    assert ranks["rank99_max"] <= 2
    assert result.modules[0]["block"] == "IN01"


# --- layouts and blocks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
            "unet/down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
        ),
        (
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
            "unet/down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
        ),
        (
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out",
            "unet/down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
        ),
        (
            "lora_unet_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
            "unet/down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
        ),
        (
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
            "unet/down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k",
        ),
        ("lora_unet_input_blocks_1_0_in_layers_2", "unet/down_blocks_0_resnets_0_conv1"),
        ("lora_unet_input_blocks_3_0_op", "unet/down_blocks_0_downsamplers_0_conv"),
        ("lora_unet_middle_block_1_proj_in", "unet/mid_block_attentions_0_proj_in"),
        ("lora_unet_middle_block_2_out_layers_3", "unet/mid_block_resnets_1_conv2"),
        ("lora_unet_output_blocks_5_1_proj_in", "unet/up_blocks_1_attentions_2_proj_in"),
        ("lora_unet_output_blocks_2_2_conv", "unet/up_blocks_0_upsamplers_0_conv"),
        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", "te1/text_model_encoder_layers_0_self_attn_q_proj"),
        (
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
            "te1/text_model_encoder_layers_0_self_attn_q_proj",
        ),
        ("lora_te2_text_model_encoder_layers_3_mlp_fc1", "te2/text_model_encoder_layers_3_mlp_fc1"),
        ("text_encoder_2.text_model.encoder.layers.3.mlp.fc1", "te2/text_model_encoder_layers_3_mlp_fc1"),
        ("unet:12", "unet/#12"),
    ],
)
def test_canonical_module_names(module: str, expected: str) -> None:
    assert canonical_module(module) == expected


@pytest.mark.parametrize(
    ("module", "family", "block", "stage", "level"),
    [
        ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", "SD1", "IN01", "input", 0),
        ("unet.down_blocks.1.attentions.1.proj_in", "SD1", "IN05", "input", 1),
        ("unet.down_blocks.2.downsamplers.0.conv", "SD1", "IN09", "input", 2),
        ("unet.mid_block.attentions.0.proj_in", "SD1", "MID", "middle", 3),
        ("unet.up_blocks.1.attentions.2.proj_in", "SD1", "OUT05", "output", 2),
        ("unet.up_blocks.3.attentions.0.proj_out", "SD1", "OUT09", "output", 0),
        ("lora_unet_input_blocks_4_1_proj_in", "SDXL", "IN04", "input", 1),
        ("lora_unet_output_blocks_5_1_proj_in", "SDXL", "OUT05", "output", 1),
        ("lora_unet_middle_block_1_proj_in", "SDXL", "MID", "middle", 2),
        ("lora_unet_double_blocks_7_img_attn_qkv", "FLUX", "D07", "double", None),
        ("transformer.transformer_blocks.7.attn.to_q", "FLUX", "D07", "double", None),
        ("lora_unet_single_blocks_12_linear1", "FLUX", "S12", "single", None),
        ("transformer.single_transformer_blocks.12.proj_out", "FLUX", "S12", "single", None),
        ("lora_te1_text_model_encoder_layers_0_mlp_fc1", "SDXL", "TE", "text encoder", None),
        ("lora_te2_text_model_encoder_layers_0_mlp_fc1", "SDXL", "TE2", "text encoder", None),
    ],
)
def test_blocks_as_block_weight_users_count(
    module: str, family: str, block: str, stage: str, level: int | None
) -> None:
    found = block_of(canonical_module(module), family)
    assert (found.block, found.stage, found.level) == (block, stage, level)


def test_real_flux_key_lists_get_double_and_single_blocks(shared_data: Path) -> None:
    for name in ("flux_lora_kohya_format", "flux_lora_diffusers_format"):
        keys = json.loads((shared_data / "metadata" / f"{name}.json").read_text())["state_dict_keys"]
        modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
        stages = {block_of(canonical_module(m), "FLUX").stage for m in modules}
        assert {"double", "single"} <= stages, (name, stages)


# --- similarity ------------------------------------------------------------------------------------------


def test_same_weights_written_differently_compare_equal(tmp_path: Path) -> None:
    a, b = random_lora(1), random_lora(2)
    original = write_kohya(tmp_path / "a.safetensors", a)
    variants = {
        "fp16": write_kohya(tmp_path / "a_fp16.safetensors", a, dtype=np.float16),
        "alpha": write_kohya(tmp_path / "a_alpha.safetensors", rescaled_alpha(a)),
        "refactorised": write_kohya(tmp_path / "a_refac.safetensors", refactorised(a)),
        "peft": write_peft(tmp_path / "a_peft.safetensors", a),
        "peft_fp16_refac": write_peft(tmp_path / "a_peft16.safetensors", refactorised(a, 7), dtype=np.float16),
    }
    for name, path in variants.items():
        result = weights_cosine(original, path)
        assert result.cosine >= 0.999, name
        assert result.common_modules == len(a), name
    other = write_kohya(tmp_path / "b.safetensors", b)
    assert abs(weights_cosine(original, other).cosine) < 0.05
    mix = write_peft(tmp_path / "mix.safetensors", merged(a, b))
    cos_mix = weights_cosine(original, mix).cosine
    assert cos_mix == pytest.approx(dense_cosine(a, merged(a, b)), abs=1e-4)
    assert 0.6 < cos_mix < 0.8


def test_sdxl_sgm_names_match_diffusers_names(tmp_path: Path) -> None:
    lora, sgm_names = sdxl_lora(4)
    kohya = write_kohya(tmp_path / "xl_kohya.safetensors", lora, names=sgm_names)
    peft = write_peft(tmp_path / "xl_peft.safetensors", lora, dtype=np.float16)
    result = weights_cosine(kohya, peft)
    assert result.common_modules == len(lora)
    assert result.cosine >= 0.999


def test_signatures_estimate_cosines(tmp_path: Path) -> None:
    a, b = random_lora(1), random_lora(2)
    sig = {
        name: analyze_weights(write_kohya(tmp_path / f"{name}.safetensors", lora)).signature
        for name, lora in {"a": a, "a2": refactorised(a), "b": b, "m": merged(a, b)}.items()
    }
    assert float(sig["a"] @ sig["a2"]) > 0.99
    assert abs(float(sig["a"] @ sig["b"])) < 0.3
    assert 0.4 < float(sig["a"] @ sig["m"]) < 0.95


# --- the real files ---------------------------------------------------------------------------------------


def _independent_dense(path: Path) -> dict[str, np.ndarray]:
    """Dense ΔW per module of the real files, parsed here without the workbench (their layouts carry no alpha:
    scale 1)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header.pop("__metadata__", None)
    dtypes = {"F16": np.float16, "F32": np.float32}
    tensors = {}
    for key, info in header.items():
        begin, end = info["data_offsets"]
        tensors[key] = np.frombuffer(raw[8 + length + begin : 8 + length + end], dtype=dtypes[info["dtype"]]).reshape(
            info["shape"]
        )
    out = {}
    for key, down in tensors.items():
        for down_suffix, up_suffix in (
            (".down.weight", ".up.weight"),
            ("_lora_down.weight", "_lora_up.weight"),
            (":down", ":up"),
        ):
            if key.endswith(down_suffix):
                module = key[: -len(down_suffix)]
                up = tensors[module + up_suffix]
                out[module] = up.astype(np.float64) @ down.astype(np.float64)
    return out


@pytest.mark.parametrize(
    "name",
    [
        "analog_svd_rank4",
        "catundchat_weapons_sd15_pytorch_lora_weights",
        "wellCh4n_pokemon_sd15_pytorch_lora_weights",
        "timohavdk_sd-lora_new_malformed-kohya-conversion",
    ],
)
def test_real_files_against_dense_numpy(shared_data: Path, name: str) -> None:
    path = shared_data / "loras" / f"{name}.safetensors"
    expected = _independent_dense(path)
    result = analyze_weights(path)
    assert result.ok, result.error
    assert len(result.modules) == len(expected)
    total = 0.0
    checked = 0
    for row in result.modules:
        # the module name the file uses; diffusers_attn modules end in `_lora` in the file
        matrix = expected.get(row["source"]) if row["source"] in expected else expected[row["source"] + "_lora"]
        norm = float(np.linalg.norm(matrix))
        assert row["norm"] == pytest.approx(norm, rel=1e-4)
        if min(matrix.shape) <= 320:  # dense SVDs of the larger deltas cost seconds each on a shared CPU
            values = np.linalg.svd(matrix, compute_uv=False) ** 2
            rank90 = int(np.searchsorted(np.cumsum(values) / values.sum(), 0.9 * (1 - 1e-9)) + 1)
            assert row["rank90"] == rank90
            checked += 1
        total += norm**2
    assert checked >= 20
    assert result.total_norm == pytest.approx(total**0.5, rel=1e-5)
    assert result.family == "SD1"


def test_real_files_cosine_against_dense_numpy(shared_data: Path) -> None:
    loras = shared_data / "loras"
    a = loras / "wellCh4n_pokemon_sd15_pytorch_lora_weights.safetensors"
    b = loras / "catundchat_weapons_sd15_pytorch_lora_weights.safetensors"
    c = loras / "timohavdk_sd-lora_new_malformed-kohya-conversion.safetensors"
    da, db, dc = _independent_dense(a), _independent_dense(b), _independent_dense(c)

    def cos(x: dict[str, np.ndarray], y: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> float:
        inner = sum(float(np.vdot(x[p], y[q])) for p, q in pairs)
        return inner / np.sqrt(
            sum(float(np.vdot(x[p], x[p])) for p, _ in pairs) * sum(float(np.vdot(y[q], y[q])) for _, q in pairs)
        )

    same_keys = [(k, k) for k in da]
    assert weights_cosine(a, b).cosine == pytest.approx(cos(da, db, same_keys), abs=1e-6)
    # the botched kohya conversion names modules `lora_unet_unet_<path with _>` and `to_out_0` for `to_out_lora`
    mapped = []
    for k in da:
        path = k.replace(".processor.", ".").replace("to_out_lora", "to_out.0").replace("_lora", "")
        mapped.append((k, "lora_unet_unet_" + path.replace(".", "_")))
    assert all(q in dc for _, q in mapped)
    result = weights_cosine(a, c)
    assert result.common_modules == len(mapped)
    assert result.cosine == pytest.approx(cos(da, dc, mapped), abs=1e-6)


# --- bad input --------------------------------------------------------------------------------------------

_MOD = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
_MOD2 = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"


def _good_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    tensors = {}
    for mod in (_MOD, _MOD2):
        tensors[f"{mod}.lora_down.weight"] = rng.standard_normal((4, 768)).astype(np.float32)
        tensors[f"{mod}.lora_up.weight"] = rng.standard_normal((320, 4)).astype(np.float32)
        tensors[f"{mod}.alpha"] = np.array(4.0, np.float32)
    return tensors


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, words the error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, str]] = {}

    def write(name: str, tensors: dict[str, np.ndarray], words: str) -> None:
        cases[name] = (write_safetensors(folder / f"{name}.safetensors", tensors), words)

    t = _good_tensors()
    t[f"{_MOD}.lora_up.weight"] = np.ones((320, 8), np.float32)
    write("mismatched", t, "rank 8")
    t = _good_tensors()
    del t[f"{_MOD2}.alpha"]
    write("missing_alpha", t, "no alpha")
    t = _good_tensors()
    t[f"{_MOD}.lora_down.weight"][0, 3] = np.nan
    write("nan", t, "NaN or Inf")
    t = _good_tensors()
    t[f"{_MOD2}.lora_up.weight"][5, 0] = np.inf
    write("inf", t, "NaN or Inf")
    t = _good_tensors()
    for key in t:
        if not key.endswith("alpha"):
            t[key] = np.zeros_like(t[key])
    write("zero", t, "all-zero")
    t = _good_tensors()
    t[f"{_MOD}.alpha"] = np.array(np.nan, np.float32)
    write("nan_alpha", t, "alpha is nan")
    loha = {
        f"{_MOD}.hada_w1_a": np.ones((320, 4), np.float32),
        f"{_MOD}.hada_w1_b": np.ones((4, 768), np.float32),
        f"{_MOD}.hada_w2_a": np.ones((320, 4), np.float32),
        f"{_MOD}.hada_w2_b": np.ones((2, 768), np.float32),
        f"{_MOD}.alpha": np.array(1.0, np.float32),
    }
    write("loha_odd", loha, "LoHa factors do not fit")
    lokr = {
        f"{_MOD}.lokr_w1": np.ones((4, 4), np.float32),
        f"{_MOD}.lokr_w2_a": np.ones((80, 4), np.float32),
        f"{_MOD}.lokr_w2_b": np.ones((6, 192), np.float32),
        f"{_MOD}.alpha": np.array(1.0, np.float32),
    }
    write("lokr_odd", lokr, "does not fit")
    # truncated tensor data
    good = write_safetensors(folder / "tmp.safetensors", _good_tensors())
    data = good.read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[:-100])
    cases["truncated"] = (folder / "truncated.safetensors", "truncated")
    # a header lying about offsets (two tensors overlap) and about dtype (F16 for F32 bytes, shape kept)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    lying = dict(header)
    first, second = f"{_MOD}.lora_down.weight", f"{_MOD}.lora_up.weight"
    lying[second] = {**header[second], "data_offsets": header[first]["data_offsets"]}
    cases["lying_offsets"] = (
        _rewrite(folder / "lying_offsets.safetensors", lying, data[8 + length :]),
        "not a readable",
    )
    lying = dict(header)
    lying[first] = {**header[first], "dtype": "F16", "shape": [8, 768]}
    # F32 bytes read as F16 come out as NaN/garbage, or the shapes stop fitting: either way the module is named
    cases["lying_dtype"] = (_rewrite(folder / "lying_dtype.safetensors", lying, data[8 + length :]), _MOD)
    lying = dict(header)
    lying[first] = {**header[first], "dtype": "I32"}
    cases["int_dtype"] = (_rewrite(folder / "int_dtype.safetensors", lying, data[8 + length :]), "not a floating-point")
    good.unlink()
    (folder / "not_safetensors.safetensors").write_bytes(b"\x80\x04pickle")
    cases["pickle"] = (folder / "not_safetensors.safetensors", "not a readable")
    return cases


def _rewrite(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_bad_files_get_a_clear_error_and_no_signature(tmp_path: Path) -> None:
    for name, (path, words) in _bad_files(tmp_path / "bad").items():
        result = analyze_weights(path)
        assert not result.ok, name
        assert words in result.error, (name, result.error)
        assert result.signature is None, name


def test_no_alpha_anywhere_means_scale_one(tmp_path: Path) -> None:
    t = _good_tensors()
    scaled = analyze_weights(write_safetensors(tmp_path / "a.safetensors", t))
    for key in [k for k in t if k.endswith("alpha")]:
        del t[key]
    unscaled = analyze_weights(write_safetensors(tmp_path / "b.safetensors", t))
    assert unscaled.ok and scaled.ok
    assert unscaled.total_norm == pytest.approx(scaled.total_norm, rel=1e-6)  # alpha 4 / rank 4 = 1


def _module_set(keys: list[str]) -> set[str]:
    analysis, module_keys = sys.modules["workbench.files._analysis"], sys.modules["workbench.files._module_keys"]
    key_facts, fused_parts = analysis.key_facts, module_keys.fused_parts  # white-box: the key parsing itself
    out: set[str] = set()
    for facts in key_facts(keys):
        if facts.param and facts.param != "alpha":
            canonical = canonical_module(facts.module)
            split = fused_parts(canonical)
            out |= {key for key, _, _ in split[1]} if split else {canonical}
    return out


def test_real_flux_kohya_and_diffusers_key_lists_name_the_same_modules(shared_data: Path) -> None:
    """The BFL/kohya list (fused qkv / linear1) and the diffusers list (split q, k, v, proj_mlp) of two real
    FLUX LoRAs target the same 494 modules once fused modules are split."""
    lists = {
        name: list(json.loads((shared_data / "metadata" / f"{name}.json").read_text())["state_dict_keys"])
        for name in ("flux_lora_kohya_format", "flux_lora_diffusers_format")
    }
    kohya, diffusers = (_module_set(keys) for keys in lists.values())
    assert len(kohya) == 494 and kohya == diffusers


def test_flux_fused_kohya_file_equals_its_diffusers_conversion(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    rank, hidden = 4, 3072
    fused = {  # kohya module: (down, up) with FLUX widths
        "lora_unet_double_blocks_0_img_attn_qkv": (rank, hidden, 3 * hidden),
        "lora_unet_double_blocks_0_img_attn_proj": (rank, hidden, hidden),
        "lora_unet_single_blocks_3_linear1": (rank, hidden, 7 * hidden),
        "lora_unet_single_blocks_3_linear2": (rank, 5 * hidden, hidden),
    }
    kohya: dict[str, np.ndarray] = {}
    peft: dict[str, np.ndarray] = {}
    splits = {
        "lora_unet_double_blocks_0_img_attn_qkv": [f"transformer_blocks.0.attn.to_{p}" for p in "qkv"],
        "lora_unet_double_blocks_0_img_attn_proj": ["transformer_blocks.0.attn.to_out.0"],
        "lora_unet_single_blocks_3_linear1": [f"single_transformer_blocks.3.attn.to_{p}" for p in "qkv"]
        + ["single_transformer_blocks.3.proj_mlp"],
        "lora_unet_single_blocks_3_linear2": ["single_transformer_blocks.3.proj_out"],
    }
    for name, (r, width_in, width_out) in fused.items():
        down = (rng.standard_normal((r, width_in)) / 10).astype(np.float32)
        up = (rng.standard_normal((width_out, r)) / 10).astype(np.float32)
        kohya[f"{name}.lora_down.weight"], kohya[f"{name}.lora_up.weight"] = down, up
        kohya[f"{name}.alpha"] = np.array(2.0, np.float32)
        row = 0
        for target in splits[name]:
            rows = 4 * hidden if target.endswith("proj_mlp") else hidden
            peft[f"transformer.{target}.lora_A.weight"] = down
            peft[f"transformer.{target}.lora_B.weight"] = (up[row : row + rows] * 0.5).astype(np.float16)
            row += rows
        assert row == width_out
    a = write_safetensors(tmp_path / "flux_kohya.safetensors", kohya)
    b = write_safetensors(tmp_path / "flux_peft.safetensors", peft)
    result = weights_cosine(a, b)
    assert result.common_modules == 9
    assert result.cosine >= 0.999
    analysis = analyze_weights(a)
    assert analysis.ok and analysis.family == "FLUX"
    assert {row["block"] for row in analysis.modules} == {"D00", "S03"}
    assert len(analysis.modules) == 9


def test_unsupported_modules_are_skipped_with_a_warning(tmp_path: Path) -> None:
    t = _good_tensors()
    t["lora_unet_mid_block_attentions_0_proj_in.oft_blocks"] = np.ones((4, 80, 80), np.float32)
    result = analyze_weights(write_safetensors(tmp_path / "mixed.safetensors", t))
    assert result.ok, result.error
    assert [row["flag"] for row in result.modules].count("skipped") == 1
    assert any("oft_blocks" in warning for warning in result.warnings)
    only = analyze_weights(
        write_safetensors(
            tmp_path / "oft.safetensors", {"lora_unet_conv_in.oft_blocks": np.ones((4, 8, 8), np.float32)}
        )
    )
    assert not only.ok and "no module of a supported type" in only.error
