"""The diffusers backend on the real tiny random-weight pipeline (CPU, one thread)."""

import pytest
from safetensors.torch import save_file

from tests.fake_servers import pixels, shared_tiny, tiny_request
from workbench.files import TINY_BASE_MODEL, base_model_family
from workbench.generate import (
    JobCancelledError,
    JobControl,
    LoraIncompatibleError,
    LoraNotFoundError,
    LoraSpec,
    inspect_file,
    kohya_metadata,
    make_lora_tensors,
    parse_infotext,
    read_infotext,
)


@pytest.fixture(scope="module")
def tiny():
    return shared_tiny()


def test_same_seed_and_stack_give_identical_bytes(tiny):
    backend, _ = tiny
    req = tiny_request(loras=[LoraSpec("tiny_watercolor", 0.8)])
    assert backend.submit(req).png == backend.submit(req).png


def test_weight_changes_change_the_image_and_zero_equals_base(tiny):
    backend, _ = tiny
    base = pixels(backend.submit(tiny_request()).png)
    w1 = pixels(backend.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 1.0)])).png)
    w05 = pixels(backend.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.5)])).png)
    w0 = pixels(backend.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.0)])).png)
    assert abs(w1 - base).mean() > 1.0
    assert abs(w1 - w05).mean() > 1.0
    assert (w0 == base).all()
    # no LoRA after LoRAs were loaded: back to the base image exactly (adapters disabled)
    assert (pixels(backend.submit(tiny_request()).png) == base).all()


def test_unet_and_text_encoder_weights_are_separate(tiny):
    backend, _ = tiny
    full = pixels(backend.submit(tiny_request(loras=[LoraSpec("tiny_pixelart", 1.0)])).png)
    unet_only = pixels(backend.submit(tiny_request(loras=[LoraSpec("tiny_pixelart", 1.0, te=0.0)])).png)
    assert abs(full - unet_only).mean() > 1.0


def test_stack_of_two_and_kohya_alias_resolution(tiny):
    backend, _ = tiny
    one = backend.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.7)]))
    two = backend.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.7), LoraSpec("tiny_neon_unet_only", 0.4)]))
    assert one.png != two.png
    assert set(two.lora_hashes) == {"tiny_watercolor", "tiny_neon_unet_only"}
    assert all(len(h) == 12 for h in two.lora_hashes.values())


def test_png_carries_infotext_with_lora_hashes_and_random_weights_label(tiny):
    backend, _ = tiny
    res = backend.submit(tiny_request(loras=[LoraSpec("tiny_watercolor", 0.6, te=0.3)], negative_prompt="blurry"))
    text = read_infotext(res.png)
    assert text == res.infotext
    parsed = parse_infotext(text)
    assert parsed["prompt"] == "a lighthouse at dusk <lora:tiny_watercolor:0.3:0.6>"
    assert parsed["negative_prompt"] == "blurry"
    assert parsed["params"]["Seed"] == "7" and parsed["params"]["Size"] == "64x64"
    assert parsed["params"]["Lora hashes"] == f"tiny_watercolor: {res.lora_hashes['tiny_watercolor']}"
    assert "random weights" in parsed["params"]["Note"]


def test_loha_is_refused_naming_the_backends_that_run_it(tiny):
    backend, _ = tiny
    with pytest.raises(LoraIncompatibleError, match="LoHa.*a1111.*comfyui"):
        backend.submit(tiny_request(loras=[LoraSpec("tiny_loha_lycoris")]))


def test_mismatched_base_model_is_refused_before_loading(tiny, tmp_path):
    backend, _ = tiny
    tensors = make_lora_tensors(9)
    meta = kohya_metadata("sdxl_thing", ["x"], 4, 4)
    meta["ss_base_model_version"] = "sdxl_base_v1-0"
    save_file(tensors, str(tmp_path / "sdxl_thing.safetensors"), metadata=meta)
    with pytest.raises(LoraIncompatibleError, match="for SDXL but the diffusers pipeline is tiny-sd1"):
        backend.submit(tiny_request(loras=[LoraSpec("sdxl_thing", path=str(tmp_path / "sdxl_thing.safetensors"))]))
    # te2 keys (SDXL second text encoder) on a one-encoder pipeline
    te2 = {k.replace("lora_te_", "lora_te2_"): v for k, v in make_lora_tensors(10).items()}
    save_file(te2, str(tmp_path / "te2.safetensors"))
    with pytest.raises(LoraIncompatibleError, match="second-text-encoder"):
        backend.submit(tiny_request(loras=[LoraSpec("te2", path=str(tmp_path / "te2.safetensors"))]))


def test_partial_match_is_an_error_not_a_silent_partial_application(tiny, tmp_path):
    backend, _ = tiny
    tensors = make_lora_tensors(11, layout="peft")
    # a module that does not exist in the tiny U-Net (right width, wrong place): diffusers would skip it silently
    tensors["unet.down_blocks.3.attentions.0.proj_in.lora_A.weight"] = tensors[
        "unet.down_blocks.1.attentions.0.proj_in.lora_A.weight"
    ].clone()
    tensors["unet.down_blocks.3.attentions.0.proj_in.lora_B.weight"] = tensors[
        "unet.down_blocks.1.attentions.0.proj_in.lora_B.weight"
    ].clone()
    save_file(tensors, str(tmp_path / "partial.safetensors"))
    with pytest.raises(LoraIncompatibleError, match="partially|could not be loaded"):
        backend.submit(tiny_request(loras=[LoraSpec("partial", path=str(tmp_path / "partial.safetensors"))]))
    # and the pipeline is unharmed
    assert backend.submit(tiny_request()).png == backend.submit(tiny_request()).png


def test_unknown_lora_name(tiny):
    backend, _ = tiny
    with pytest.raises(LoraNotFoundError, match="no_such_lora"):
        backend.submit(tiny_request(loras=[LoraSpec("no_such_lora")]))


def test_cancel_stops_the_pipeline_between_steps(tiny):
    backend, _ = tiny

    def cancel_at_two(control):
        if control.step == 2:
            control.cancel()

    control = JobControl(on_progress=cancel_at_two)
    with pytest.raises(JobCancelledError, match="step 2/20"):
        backend.submit(tiny_request(steps=20), control)
    assert control.step == 2


def test_progress_is_reported_every_step(tiny):
    backend, _ = tiny
    seen = []
    backend.submit(tiny_request(steps=5), JobControl(on_progress=lambda c: seen.append((c.step, c.steps))))
    assert seen == [(i, 5) for i in range(1, 6)]


def test_file_inspection_and_families(tiny):
    _, lora_dir = tiny
    info = inspect_file(lora_dir / "tiny_watercolor.safetensors")
    assert (info.layout, info.network_type, info.family, info.family_from_shapes) == (
        "kohya",
        "LoRA",
        TINY_BASE_MODEL,
        TINY_BASE_MODEL,
    )
    assert info.te_modules == 12 and info.unet_modules == 48
    peft = inspect_file(lora_dir / "tiny_pixelart.safetensors")
    assert peft.layout == "peft" and peft.has_text_encoder
    assert inspect_file(lora_dir / "tiny_loha_lycoris.safetensors").network_type == "LoHa"
    assert base_model_family("sd_v1") == "SD1" and base_model_family("Pony") == "SDXL"
    assert base_model_family("sdxl_base_v1-0") == "SDXL" and base_model_family("sd_v2_768_v") == "SD2"


def test_health_and_listing(tiny):
    backend, _ = tiny
    h = backend.health()
    assert h["ok"] and h["family"] == TINY_BASE_MODEL and h["random_weights"]
    names = {x.name for x in backend.list_loras()}
    assert {"tiny_watercolor", "tiny_pixelart", "tiny_neon_unet_only"} <= names
