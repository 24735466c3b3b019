"""The demo library and the synthetic benchmark library: real key naming, determinism, coverage.

The demo library is what notebooks, the dashboard and recommendation tests run on, so these
tests pin what it promises: byte-identical rebuilds, every sidecar format, decodable previews,
hostile strings, a malformed file, duplicates, and that the parser finds the base model, key
layout, network type and rank each file was generated for.
"""

from __future__ import annotations

import base64
import filecmp
import hashlib
import importlib.util
import io
import json
import os
import random
import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_METADATA = REPO.parent / "shared" / "data" / "metadata"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_demo_library", REPO / "data" / "make_demo_library.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


gen = _load_generator()
from benchmarks import synthetic_library as synth  # noqa: E402  (make_demo_library put the repo on sys.path)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[dict]]:
    dest = tmp_path_factory.mktemp("demo") / "library"
    gen.build_demo_library(dest, quiet=True)
    manifest = json.loads((dest / gen.MANIFEST_NAME).read_text("utf-8"))
    return dest, manifest["items"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_rebuild_is_byte_identical(demo, tmp_path):
    dest, _ = demo
    again = tmp_path / "again"
    gen.build_demo_library(again, quiet=True)
    assert _files(dest) == _files(again)
    for rel in _files(dest):
        assert filecmp.cmp(dest / rel, again / rel, shallow=False), rel
        assert (dest / rel).stat().st_mtime_ns == (again / rel).stat().st_mtime_ns, rel


def test_second_run_is_a_no_op_and_foreign_folders_are_refused(demo, tmp_path):
    dest, items = demo
    before = {rel: (dest / rel).stat().st_mtime_ns for rel in _files(dest)}
    again = gen.build_demo_library(dest, quiet=True)
    assert [it.path for it in again] == [it["path"] for it in items]
    assert before == {rel: (dest / rel).stat().st_mtime_ns for rel in _files(dest)}
    foreign = tmp_path / "not-a-demo"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        gen.build_demo_library(foreign, quiet=True)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_size_and_coverage(demo):
    dest, items = demo
    loras = list(dest.rglob("*.safetensors"))
    assert len(loras) >= 60
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert total < 60 * 2**20, total
    regular = [it for it in items if not (it["tiny"] or it["malformed"] or it["duplicate_of"])]
    assert {it["base_model"] for it in regular} >= {"SD1", "SD2", "SDXL", "FLUX"}
    assert {(it["base_model"], it["key_layout"]) for it in regular} >= {
        ("SD1", "kohya"),
        ("SD1", "peft"),
        ("SDXL", "kohya"),
        ("SDXL", "peft"),
        ("FLUX", "kohya"),
        ("FLUX", "peft"),
    }
    assert {it["network_type"] for it in regular} >= {"LoRA", "LoCon", "LoHa", "LoKr", "DoRA"}
    assert len({it["title"] for it in regular}) == len(regular)
    assert sum(1 for it in regular if it["triggers"]) >= 50
    kinds = {t for it in regular for t in it["tags"][:1]}
    assert kinds >= {"style", "character", "concept", "clothing", "background"}
    assert len({Path(it["path"]).parent for it in items}) >= 15
    assert any(len(Path(it["path"]).parts) >= 4 for it in items)


def test_every_sidecar_kind_is_present_and_well_formed(demo):
    dest, items = demo
    seen: set[str] = set()
    for it in items:
        lora = dest / it["path"]
        stem = str(lora.with_suffix(""))
        sha = _sha(lora)
        for kind in it["sidecars"]:
            seen.add(kind)
            if kind == "civitai":
                doc = json.loads(Path(stem + ".civitai.info").read_text("utf-8"))
                assert doc["files"][0]["hashes"]["SHA256"] == sha.upper()
                assert doc["files"][0]["hashes"]["AutoV2"] == sha[:10].upper()
                assert doc["model"]["type"] == "LORA" and doc["trainedWords"] == it["triggers"]
                assert doc["baseModel"]
            elif kind == "civitai_empty":
                assert Path(stem + ".civitai.info").read_text() == "{}"
            elif kind == "a1111":
                doc = json.loads(Path(stem + ".json").read_text("utf-8"))
                assert set(doc) == {
                    "description",
                    "sd version",
                    "activation text",
                    "preferred weight",
                    "negative text",
                    "notes",
                }
                assert doc["sd version"] in {"SD1", "SD2", "SDXL", "Unknown"}
            elif kind == "cbplus":
                doc = json.loads(Path(stem + ".json").read_text("utf-8"))
                assert doc["sha256"] == sha.upper() and isinstance(doc["modelId"], int)
            elif kind == "cbplus_not_found":
                doc = json.loads(Path(stem + ".json").read_text("utf-8"))
                assert doc["modelId"] == doc["modelVersionId"] == "Model not found"
            elif kind in ("sdnext", "lm_original"):
                doc = json.loads(Path(stem + ".json").read_text("utf-8"))
                versions = doc["modelVersions"]
                matching = [v for v in versions if v["files"][0]["hashes"]["SHA256"] == sha.upper()]
                assert len(versions) == 2 and len(matching) == 1
                assert doc["creator"]["username"] and doc["tags"] == it["tags"]
                if kind == "sdnext":
                    assert versions[0] is not matching[0]  # SD.Next must pick by hash, not by position
                    assert Path(stem + ".txt").read_text("utf-8").strip()
                else:
                    assert versions[0] is matching[0] and "activation text" in doc and "sd version" in doc
            elif kind == "description_txt":
                assert Path(stem + ".description.txt").read_text("utf-8").strip()
            elif kind == "lm":
                doc = json.loads(Path(stem + ".metadata.json").read_text("utf-8"))
                assert doc["sha256"] == sha and doc["file_name"] == lora.stem and doc["size"] == lora.stat().st_size
                assert set(json.loads(doc["usage_tips"])) >= {"strength", "clip_strength"}
                assert doc["civitai"]["trainedWords"] == it["triggers"]
            else:
                pytest.fail(f"unknown sidecar kind {kind}")
    assert seen == {
        "civitai",
        "civitai_empty",
        "a1111",
        "cbplus",
        "cbplus_not_found",
        "sdnext",
        "lm",
        "lm_original",
        "description_txt",
    }


def test_previews_decode_and_cover_every_naming(demo):
    from PIL import Image

    dest, items = demo
    seen = set()
    for it in items:
        preview = it["preview"]
        if not preview:
            continue
        seen.add(preview)
        lora = dest / it["path"]
        if preview in ("ssmd_cover", "modelspec_thumbnail"):
            raw = lora.read_bytes()
            md = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
            if preview == "ssmd_cover":
                data = base64.b64decode(json.loads(md["ssmd_cover_images"])[0])
            else:
                assert md["modelspec.thumbnail"].startswith("data:image/jpeg;base64,")
                data = base64.b64decode(md["modelspec.thumbnail"].split(",", 1)[1])
        else:
            data = lora.with_name(f"{lora.stem}.{preview}").read_bytes()
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.width >= 64 and img.height >= 64
        expected = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}.get(preview.split(".")[-1].lower())
        if expected:
            assert img.format == expected, (it["path"], preview, img.format)
    assert seen >= {
        "preview.png",
        "png",
        "jpg",
        "webp",
        "preview.jpeg",
        "preview.webp",
        "thumb.jpg",
        "PNG",
        "ssmd_cover",
        "modelspec_thumbnail",
    }
    assert any(it["preview"] is None and not it["tiny"] and not it["malformed"] for it in items)


def test_hostile_duplicate_and_malformed_entries(demo):
    dest, items = demo
    hostile = [it for it in items if it["hostile"]]
    assert any("<img src=x onerror=alert(1)>" in it["path"] for it in hostile)
    blob = ""
    for it in hostile:
        lora = dest / it["path"]
        for side in lora.parent.iterdir():
            if side.name.startswith(lora.stem + ".") and side.suffix != ".png":
                blob += (
                    side.read_text("utf-8", errors="replace")
                    if side.suffix != ".safetensors"
                    else side.read_bytes()[:200_000].decode("utf-8", errors="replace")
                )
    for needle in ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert(1)"):
        assert needle in blob or json.dumps(needle)[1:-1] in blob, needle
    evil = next(it for it in hostile if "<img" in it["path"])
    raw = (dest / evil["path"]).read_bytes()
    md = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
    assert md["ss_output_name"] == evil["path"].split("/")[-1].removesuffix(".safetensors")
    assert "<script>alert(1)</script>" in md["ss_tag_frequency"] and "<script>" in md["modelspec.trigger_phrase"]

    dups = [it for it in items if it["duplicate_of"]]
    assert len(dups) >= 2
    for it in dups:
        assert _sha(dest / it["path"]) == _sha(dest / it["duplicate_of"])
        assert it["path"] != it["duplicate_of"]

    (broken,) = [it for it in items if it["malformed"]]
    raw = (dest / broken["path"]).read_bytes()
    assert struct.unpack("<Q", raw[:8])[0] + 8 > len(raw)


def test_every_other_file_has_distinct_bytes(demo):
    dest, items = demo
    shas = [_sha(dest / it["path"]) for it in items if not it["duplicate_of"]]
    assert len(set(shas)) == len(shas)


def test_tiny_pipeline_loras_are_included_when_available(demo):
    _, items = demo
    tiny = [it for it in items if it["tiny"]]
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401

        from workbench.generate import TINY_LORAS
    except ImportError as exc:  # make install brings torch and safetensors: a missing one is a failure
        pytest.fail(f"the tiny pipeline cannot import: {exc}")
    assert sorted(Path(it["path"]).stem for it in tiny) == sorted(row[0] for row in TINY_LORAS)


def test_inspect_lora_finds_the_intended_facts(demo):
    from workbench.files import inspect_lora

    dest, items = demo
    wrong = []
    for it in items:
        row = inspect_lora(dest / it["path"])
        if it["malformed"]:
            assert row["error"], it["path"]
            continue
        assert not row.get("error"), (it["path"], row.get("error"))
        got = {k: row.get(k) for k in ("key_layout", "network_type", "rank")}
        want = {k: it[k] for k in ("key_layout", "network_type", "rank")}
        if not it["tiny"]:
            got["base_model"], want["base_model"] = row.get("base_model"), it["base_model"]
        preview, embedded = row.get("preview_path"), bool(row.get("preview_embedded"))
        if it["preview"] in ("ssmd_cover", "modelspec_thumbnail"):
            got["preview"], want["preview"] = embedded, True
        elif it["preview"]:
            got["preview"] = (Path(preview).name if preview else None, embedded)
            want["preview"] = (f"{Path(it['path']).stem}.{it['preview']}", False)
        else:
            got["preview"], want["preview"] = (preview, embedded), (None, False)
        if got != want:
            wrong.append((it["path"], want, got))
    assert not wrong, wrong


# --------------------------------------------------------------------------------------------
# The synthetic library used by benchmarks/scan.py
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,fname,rank",
    [("kohya_flux", "flux_lora_kohya_format.json", 16), ("peft_flux", "flux_lora_diffusers_format.json", 32)],
)
def test_flux_keys_match_real_state_dicts(family, fname, rank):
    path = SHARED_METADATA / fname
    assert path.exists(), f"{path} is missing: shared/data must lie beside the clone"
    real = json.loads(path.read_text())["state_dict_keys"]
    mods = synth.module_table(family, text_encoder=False)
    mine = {e.key: list(e.shape) for e in synth.tensor_entries(mods, "LoRA", rank, peft=family.startswith("peft"))}
    assert mine == real


def test_sd_key_naming_and_shapes():
    sd1 = {e.key: e.shape for e in synth.tensor_entries(synth.module_table("kohya_sd1"), "LoRA", 8)}
    assert len(sd1) == 792
    assert sd1["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"] == (8, 320)
    assert sd1["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"] == (8, 768)
    assert sd1["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] == (8, 320, 1, 1)
    assert sd1["lora_unet_mid_block_attentions_0_proj_out.lora_up.weight"] == (1280, 8, 1, 1)
    assert sd1["lora_te_text_model_encoder_layers_11_mlp_fc1.lora_up.weight"] == (3072, 8)
    assert sd1["lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.alpha"] == ()
    xl = {
        e.key: e.shape
        for e in synth.tensor_entries(synth.module_table("peft_sdxl", text_encoder=False), "LoRA", 4, peft=True)
    }
    assert len(xl) == 1120
    assert xl["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"] == (4, 2048)
    assert xl["unet.mid_block.attentions.0.transformer_blocks.9.attn1.to_out.0.lora_B.weight"] == (1280, 4)
    kxl = {m.key for m in synth.module_table("kohya_sdxl", conv=True)}
    assert "lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_v" in kxl
    assert "lora_unet_output_blocks_2_2_conv" in kxl and "lora_unet_input_blocks_3_0_op" in kxl
    assert "lora_te2_text_model_encoder_layers_31_mlp_fc2" in kxl


def test_write_library_is_deterministic_sparse_and_loadable(tmp_path):
    a = synth.write_library(tmp_path / "a", 40, seed=7, sidecar_fraction=0.3)
    b = synth.write_library(tmp_path / "b", 40, seed=7, sidecar_fraction=0.3)
    assert _files(a.root) == _files(b.root) and a.files == 40
    for rel in _files(a.root):
        assert filecmp.cmp(a.root / rel, b.root / rel, shallow=False), rel
    files = sorted(a.root.rglob("*.safetensors"))
    apparent = sum(p.stat().st_size for p in files)
    used = sum(p.stat().st_blocks * 512 for p in files)
    assert used < apparent / 20  # the data region is a hole
    safetensors = pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    for p in random.Random(0).sample(files, 8):
        with safetensors.safe_open(str(p), "pt") as f:
            keys = list(f.keys())
            md = f.metadata()
            alphas = [k for k in keys if k.endswith(".alpha")]
            if alphas:  # alpha scalars hold real values even in sparse files
                assert float(f.get_tensor(alphas[0]).float()) == pytest.approx(float(md["ss_network_alpha"]))
        assert len(keys) > 50 and md
    assert os.path.getsize(files[0]) > 1_000_000
    assert torch is not None
