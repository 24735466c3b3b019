"""Recipes on a real catalog: preferred weights, trigger words, save/load, JSON export/import validation."""

from __future__ import annotations

import json

import pytest
from lora_factory import write_kohya_lora

import workbench
from workbench.generate import LoraSpec, Recipe, RecipeError, parse_recipe

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("recipes") / "lib"
    write_kohya_lora(lib / "inkwash.safetensors", seed=1, metadata={"ss_output_name": "inkwash"})
    write_kohya_lora(lib / "neon.safetensors", seed=2, metadata={"ss_output_name": "neon"})
    return lib


@pytest.fixture(scope="module")
def empty_wb(tmp_path_factory):
    return workbench.open(tmp_path_factory.mktemp("empty") / "home")


@pytest.fixture()
def wb(tmp_path, library):
    bench = workbench.open(tmp_path / "home")
    bench.scan([library], progress=False, workers=1)
    ink = int(bench.catalog.query(text="inkwash")["id"][0])
    bench.catalog.update(ink, preferred_weight=0.65, trigger_words=["ink wash", "sumi-e"])
    bench.hash(progress=False, workers=1)
    return bench


def test_added_lora_gets_preferred_weight_else_one(wb):
    r = wb.recipes.add(Recipe("r"), "inkwash")
    r = wb.recipes.add(r, "neon")
    r = wb.recipes.add(r, "not_in_catalog")
    assert [(s.name, s.unet, s.te) for s in r.loras] == [
        ("inkwash", 0.65, None),
        ("neon", 1.0, None),
        ("not_in_catalog", 1.0, None),
    ]
    r = wb.recipes.add(r, "neon", 0.3, te=0.1)  # explicit weights win, same name replaces
    assert [(s.name, s.unet, s.te) for s in r.loras][-1] == ("neon", 0.3, 0.1) and len(r.loras) == 3


def test_request_inserts_trigger_words_per_policy(wb):
    r = Recipe(
        "r",
        [LoraSpec("inkwash", 0.65), LoraSpec("neon", 0.5)],
        {"prompt": "a heron", "seed": 3, "steps": 6, "triggers": "prepend"},
    )
    req = wb.recipes.request(r)
    assert req.prompt == "ink wash, sumi-e, a heron" and req.seed == 3 and req.steps == 6
    assert [s.name for s in req.loras] == ["inkwash", "neon"]
    r.params["triggers"] = "append"
    assert wb.recipes.request(r).prompt == "a heron, ink wash, sumi-e"
    r.params["triggers"] = "none"
    assert wb.recipes.request(r, prompt="ink wash heron").prompt == "ink wash heron"
    r.params["triggers"] = "prepend"
    assert wb.recipes.request(r, prompt="Ink Wash heron").prompt == "sumi-e, Ink Wash heron"  # not repeated


def test_save_load_list_delete_roundtrip(wb):
    r = Recipe(
        "Ink study",
        [LoraSpec("inkwash", 0.65, te=0.4), LoraSpec("neon", 1.0)],
        {
            "prompt": "a heron",
            "negative_prompt": "blurry",
            "seed": 42,
            "steps": 8,
            "cfg_scale": 6.5,
            "width": 64,
            "height": 64,
            "sampler": "DDIM",
            "backend": "diffusers",
        },
        description="two styles",
    )
    wb.recipes.save(r)
    back = wb.recipes.get("Ink study")
    assert back.loras == r.loras and back.params == r.params and back.description == "two styles"
    assert len(back.hashes["inkwash"]) == 64  # the catalog's SHA-256 travels with the recipe
    with pytest.raises(RecipeError, match="exists already"):
        wb.recipes.save(r, overwrite=False)
    frame = wb.recipes.list()
    assert list(frame["name"]) == ["Ink study"] and frame["loras"][0] == ["inkwash:0.65", "neon:1.0"]
    wb.recipes.delete("Ink study")
    assert wb.recipes.names() == []
    with pytest.raises(KeyError):
        wb.recipes.get("Ink study")


def test_export_import_json_and_file(wb, tmp_path):
    wb.recipes.save(Recipe("share me", [LoraSpec("neon", 0.8)], {"prompt": HOSTILE, "seed": 1}))
    text = wb.recipes.export_json("share me")
    doc = json.loads(text)
    assert doc["format"] == "lora-workbench-recipe" and doc["version"] == 1
    assert "path" not in json.dumps(doc) and str(tmp_path) not in text  # no local paths leave the machine
    path = wb.recipes.export_file("share me", tmp_path / "r.json")
    other = workbench.open(tmp_path / "other")
    got = other.recipes.import_file(path)
    assert got.params["prompt"] == HOSTILE and other.recipes.get("share me").loras == [LoraSpec("neon", 0.8)]
    with pytest.raises(RecipeError, match="exists already"):
        other.recipes.import_json(text)
    assert other.recipes.import_json(text, rename="copy").name == "copy"


def test_import_maps_renamed_lora_by_sha256(wb):
    sha = wb.catalog.query(text="neon")["sha256"][0]
    doc = {"name": "from a friend", "loras": [{"name": "friends_neon_v2", "unet": 0.7, "sha256": sha}]}
    got = wb.recipes.import_json(json.dumps(doc))
    assert got.loras == [LoraSpec("neon", 0.7)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"name": "x", "colour": 1}', "unknown field in the recipe: colour"),
        ('{"loras": []}', "name is missing"),
        ('{"name": 5}', "name must be a string"),
        ('{"name": "x", "format": "other"}', "format must be"),
        ('{"name": "x", "version": 9}', "version 9 is not supported"),
        ('{"name": "x", "loras": {"a": 1}}', "loras must be a list"),
        ('{"name": "x", "loras": [{"name": "a", "unet": "strong"}]}', r"loras\[0\].unet must be a number"),
        ('{"name": "x", "loras": [{"name": "a", "unet": true}]}', r"loras\[0\].unet must be a number"),
        ('{"name": "x", "loras": [{"name": "a", "weight": 1}]}', r"unknown field in loras\[0\]: weight"),
        ('{"name": "x", "loras": [{"unet": 1}]}', r"loras\[0\].name is missing"),
        ('{"name": "x", "loras": [{"name": "a"}, {"name": "a"}]}', "twice"),
        ('{"name": "x", "loras": [{"name": "a", "sha256": "zz"}]}', "64 hex"),
        ('{"name": "x", "loras": [{"name": "a", "unet": 1e9}]}', "between"),
        ('{"name": "x", "params": {"steps": "20"}}', "params.steps must be int"),
        ('{"name": "x", "params": {"steps": 0}}', "params.steps has an invalid value"),
        ('{"name": "x", "params": {"cfg_scale": NaN}}', "finite|must be"),
        ('{"name": "x", "params": {"eval": "os.system"}}', "unknown field in params: eval"),
        ('{"name": "x", "params": {"backend": "shell"}}', "params.backend has an invalid value"),
        ('{"name": "x", "params": {"triggers": "sideways"}}', "params.triggers has an invalid value"),
    ],
)
def test_invalid_json_is_refused_with_a_clear_error(text, message, empty_wb):
    with pytest.raises(RecipeError, match=message):
        empty_wb.recipes.import_json(text)
    assert empty_wb.recipes.names() == []


def test_hostile_strings_stay_data_and_html_is_escaped():
    r = parse_recipe(
        {
            "name": HOSTILE,
            "loras": [{"name": "<img src=x onerror=alert(1)>", "unet": 1}],
            "params": {"prompt": "'; DROP TABLE recipes; --"},
        }
    )
    assert r.name == HOSTILE and r.params["prompt"].startswith("'; DROP")
    html = r._repr_html_()
    assert "<script>" not in html and "<img" not in html and "&lt;script&gt;" in html
