"""<lora:…> tags in both dialects, trigger words, infotext round trips."""

import pytest

from workbench.generate import (
    A1111,
    COMFYUI,
    LoraSpec,
    PromptSyntaxError,
    build_infotext,
    compose_prompt,
    convert,
    format_lora_hashes,
    format_tag,
    parse_infotext,
    parse_lora_hashes,
    parse_prompt,
    parse_tag,
)


def test_a1111_fields_are_te_then_unet():
    s = parse_tag("style:0.4:0.9", A1111)
    assert (s.name, s.te_weight, s.unet) == ("style", 0.4, 0.9)
    s = parse_tag("style:0.7", A1111)
    assert (s.te_weight, s.unet) == (0.7, 0.7)
    s = parse_tag("style:te=0.2:unet=0.5:dyn=8", A1111)
    assert (s.te_weight, s.unet) == (0.2, 0.5)
    assert parse_tag("style", A1111).unet == 1.0


def test_comfyui_lora_manager_fields_are_model_then_clip():
    s = parse_tag("style:0.4:0.9", COMFYUI)
    assert (s.unet, s.te_weight) == (0.4, 0.9)


def test_round_trip_and_dialect_conversion():
    spec = LoraSpec("x", unet=0.9, te=0.4)
    assert format_tag(spec, A1111) == "<lora:x:0.4:0.9>"
    assert format_tag(spec, COMFYUI) == "<lora:x:0.9:0.4>"
    assert parse_tag(format_tag(spec, COMFYUI)[6:-1], COMFYUI) == spec
    assert convert("a <lora:x:0.4:0.9> b", A1111, COMFYUI) == "a <lora:x:0.9:0.4> b"
    assert format_tag(LoraSpec("x", 1.0), A1111) == "<lora:x:1.0>"


def test_parse_prompt_strips_tags_and_keeps_last_duplicate():
    text, stack = parse_prompt("a cat, <lora:a:0.5>, sitting <lyco:b:1:0.3> <lora:a:0.8>", A1111)
    assert text == "a cat, sitting"
    assert [(s.name, s.unet, s.te_weight) for s in stack] == [("b", 0.3, 1.0), ("a", 0.8, 0.8)]


def test_bad_tags_are_errors():
    with pytest.raises(PromptSyntaxError):
        parse_tag(":0.5")
    with pytest.raises(PromptSyntaxError):
        parse_tag("x:heavy")
    with pytest.raises(PromptSyntaxError):
        format_tag(LoraSpec("a:b"))


def test_trigger_words_inserted_once_and_configurable():
    stack = [LoraSpec("wc", 0.8), LoraSpec("px", 0.5)]
    triggers = {"wc": ["wtrclr style"], "px": ["pxl art", "8bit"]}
    assert (
        compose_prompt("a cat", stack, A1111, triggers)
        == "wtrclr style, pxl art, 8bit, a cat <lora:wc:0.8> <lora:px:0.5>"
    )
    assert (
        compose_prompt("a cat, 8BIT", stack, A1111, triggers, triggers="append")
        == "a cat, 8BIT, wtrclr style, pxl art <lora:wc:0.8> <lora:px:0.5>"
    )
    assert compose_prompt("a cat", stack, COMFYUI, triggers, triggers="none") == "a cat <lora:wc:0.8> <lora:px:0.5>"


def test_infotext_round_trip_with_quoted_lora_hashes():
    params = {
        "Steps": 20,
        "Sampler": "Euler a",
        "CFG scale": 7.0,
        "Seed": 1,
        "Size": "512x512",
        "Lora hashes": format_lora_hashes({"a": "0123456789ab", "b": "ba9876543210"}),
    }
    text = build_infotext("a cat <lora:a:0.5>\nsecond line", "ugly, blurry", params)
    assert 'Lora hashes: "a: 0123456789ab, b: ba9876543210"' in text
    parsed = parse_infotext(text)
    assert parsed["prompt"] == "a cat <lora:a:0.5>\nsecond line" and parsed["negative_prompt"] == "ugly, blurry"
    assert parse_lora_hashes(parsed["params"]["Lora hashes"]) == {"a": "0123456789ab", "b": "ba9876543210"}
    assert parsed["params"]["Sampler"] == "Euler a"
