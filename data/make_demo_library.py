"""Build the demo LoRA library: ~70 small but real-shaped LoRA files with sidecars and previews.

Why: the notebooks, dashboard, tests and recommendations need a library that looks like a real
collection (SD1/SD2/SDXL/FLUX, kohya and PEFT layouts, LyCORIS types, every sidecar format of
the tools people migrate from, previews, duplicates, hostile strings, a broken file) without
shipping anyone's model files. Everything is generated from fixed seeds, so two builds are
byte-identical; tensor shapes are the real ones, ranks are small so the whole library stays
around 50 MB.

    python data/make_demo_library.py DEST [--force]

Writes ``DEST/.demo-manifest.json`` with the intended facts of every file (base model, layout,
network type, rank, sidecars, preview) so tests can check what the parser finds.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import random
import shutil
import struct
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks.synthetic_library import (  # noqa: E402
    BASE_MODEL_OF_FAMILY,
    CIVITAI_BASE_MODEL,
    LAYOUT_OF_FAMILY,
    LoraSpec,
    _cached_body,
    kohya_metadata,
    peft_metadata,
    write_lora,
)

MANIFEST_NAME = ".demo-manifest.json"
GENERATOR_VERSION = 2
EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: file times are spread from here, one day apart

# --------------------------------------------------------------------------------------------
# The catalogue: what each demo LoRA is about
# --------------------------------------------------------------------------------------------


@dataclass
class Entry:
    stem: str
    folder: str
    family: str
    title: str
    kind: str
    triggers: list[str]
    tags: list[str]
    description: str
    author: str
    network_type: str = "LoRA"
    rank: int = 4
    civitai_base_model: str | None = None  # Civitai's label when it says more than the architecture (Pony, Illustrious)
    minimal_metadata: bool = False  # trained with --no_metadata
    bare_metadata: bool = False  # PEFT file saved by plain diffusers: only {"format": "pt"}, no base-model hint


def _e(stem, folder, family, title, kind, triggers, tags, description, author, **kw) -> Entry:
    return Entry(stem, folder, family, title, kind, list(triggers), list(tags), description, author, **kw)


CATALOGUE: list[Entry] = [
    # ---- SD 1.5, kohya layout ------------------------------------------------------------------
    _e(
        "watercolor_dreams",
        "SD1.5/styles",
        "kohya_sd1",
        "Watercolor Dreams",
        "style",
        ["wtrcolor style"],
        ["style", "watercolor", "painting", "soft colors", "traditional media"],
        "Loose wet-on-wet watercolor washes with visible paper texture and soft bleeding edges. Works best at 0.6-0.8.",
        "quietbrush",
        rank=8,
    ),
    _e(
        "ukiyoe_woodblock",
        "SD1.5/styles",
        "kohya_sd1",
        "Ukiyo-e Woodblock Print",
        "style",
        ["ukiyoe print"],
        ["style", "japanese", "woodblock", "print", "traditional art", "waves"],
        "Edo-period woodblock look: flat color areas, bold outlines, washi grain and stylised waves.",
        "kohaku_lab",
    ),
    _e(
        "neon_noir_city",
        "SD1.5/styles",
        "kohya_sd1",
        "Neon Noir",
        "style",
        ["neon noir"],
        ["style", "cyberpunk", "neon", "night", "rain", "city"],
        "Rain-soaked streets lit by magenta and cyan signs; strong reflections and deep shadows.",
        "northlight",
    ),
    _e(
        "art_nouveau_poster",
        "SD1.5/styles",
        "kohya_sd1",
        "Art Nouveau Poster",
        "style",
        ["nouveau poster"],
        ["style", "art nouveau", "poster", "ornamental", "floral frame"],
        "Decorative 1900s poster style with flowing hair, floral arches and a muted gold palette.",
        "quietbrush",
    ),
    _e(
        "pixel_quest_16bit",
        "SD1.5/styles",
        "kohya_sd1",
        "Pixel Quest 16-bit",
        "style",
        ["pixel art", "16bit"],
        ["style", "pixel art", "retro game", "sprite", "limited palette"],
        "Crisp 16-bit console pixel art with a limited palette. Downscale x8 with nearest neighbour for clean pixels.",
        "pixelwright",
    ),
    _e(
        "claymation_friends",
        "SD1.5/styles",
        "kohya_sd1",
        "Claymation Friends",
        "style",
        ["claymation"],
        ["style", "clay", "stop motion", "3d", "cute"],
        "Plasticine characters with fingerprints, soft studio light and a handmade stop-motion feel.",
        "tinkerfox",
    ),
    _e(
        "film_noir_bw",
        "SD1.5/styles",
        "kohya_sd1",
        "Film Noir B&W",
        "style",
        ["film noir"],
        ["style", "black and white", "monochrome", "cinematic", "1940s", "detective"],
        "High-contrast 1940s black and white cinematography: venetian-blind shadows, fedoras and cigarette smoke.",
        "northlight",
    ),
    _e(
        "pencil_sketchbook",
        "SD1.5/styles",
        "kohya_sd1",
        "Sketchbook Pencil",
        "style",
        ["pencil sketch"],
        ["style", "sketch", "graphite", "lineart", "monochrome"],
        "Graphite sketchbook pages with construction lines, hatching and smudges.",
        "quietbrush",
        minimal_metadata=True,
    ),
    _e(
        "stained_glass",
        "SD1.5/styles",
        "kohya_sd1",
        "Stained Glass",
        "style",
        ["stained glass"],
        ["style", "stained glass", "church window", "colorful", "mosaic"],
        "Turns any subject into a leaded stained-glass window with glowing jewel tones.",
        "lumen",
    ),
    _e(
        "vaporwave_sunset",
        "SD1.5/styles",
        "kohya_sd1",
        "Vaporwave Sunset",
        "style",
        ["vaporwave"],
        ["style", "vaporwave", "retro", "80s", "pastel", "synthwave"],
        "Pastel grids, chrome busts, palm trees and a striped retro sun.",
        "pixelwright",
    ),
    _e(
        "captain_mira_vance",
        "SD1.5/characters/original",
        "kohya_sd1",
        "Captain Mira Vance (OC)",
        "character",
        ["mira vance", "pilot jacket"],
        ["character", "original character", "sci-fi", "pilot", "woman", "short hair"],
        "Original character: a starship captain with a silver undercut, scarred cheek and a worn leather pilot jacket.",
        "aurora_ai",
        rank=8,
    ),
    _e(
        "kitsune_shrine_maiden",
        "SD1.5/characters/original",
        "kohya_sd1",
        "Aoi, Kitsune Shrine Maiden",
        "character",
        ["aoi kitsune", "fox ears"],
        ["character", "fox girl", "shrine maiden", "miko", "japanese", "anime"],
        "Aoi is a fox spirit who tends a mountain shrine: white and red miko outfit, nine tails, amber eyes.",
        "kohaku_lab",
    ),
    _e(
        "clockwork_knight",
        "SD1.5/characters",
        "kohya_sd1",
        "Clockwork Knight",
        "character",
        ["clockwork knight"],
        ["character", "steampunk", "armor", "robot", "brass"],
        "A brass automaton knight with exposed gears and a glowing boiler heart.",
        "tinkerfox",
    ),
    _e(
        "old_fisherman_tomas",
        "SD1.5/characters",
        "kohya_sd1",
        "Old Fisherman Tomas",
        "character",
        ["tomas fisherman"],
        ["character", "old man", "fisherman", "portrait", "realistic", "beard"],
        "Weathered fisherman with a white beard, wool cap and deep wrinkles. Realistic portraits.",
        "northlight",
    ),
    _e(
        "robot_barista",
        "SD1.5/characters",
        "kohya_sd1",
        "Unit-7 Robot Barista",
        "character",
        ["unit7 barista"],
        ["character", "robot", "cafe", "cute", "mecha"],
        "A round-headed café robot with a tiny apron, steam wand arms and LED eyes.",
        "tinkerfox",
    ),
    _e(
        "detail_tweaker_sd15",
        "SD1.5/concepts/sliders",
        "kohya_sd1",
        "Detail Tweaker",
        "concept",
        [],
        ["concept", "detail", "slider", "tool"],
        "No trigger. Positive weights add fine detail, negative weights simplify. Useful range -2 to 2.",
        "lumen",
        rank=4,
        minimal_metadata=True,
    ),
    _e(
        "golden_hour_light",
        "SD1.5/concepts",
        "kohya_sd1",
        "Golden Hour Lighting",
        "concept",
        ["golden hour"],
        ["concept", "lighting", "sunset", "warm light", "photography"],
        "Low warm sunlight, long shadows and glowing rim light on hair.",
        "northlight",
    ),
    _e(
        "tilt_shift_miniature",
        "SD1.5/concepts",
        "kohya_sd1",
        "Tilt-Shift Miniature",
        "concept",
        ["tiltshift"],
        ["concept", "photography", "miniature", "tilt-shift", "depth of field"],
        "Makes cityscapes look like toy models with a narrow band of focus.",
        "aurora_ai",
    ),
    _e(
        "double_exposure",
        "SD1.5/concepts",
        "kohya_sd1",
        "Double Exposure",
        "concept",
        ["double exposure"],
        ["concept", "photography", "silhouette", "surreal"],
        "Silhouette portraits blended with forests, cities or oceans.",
        "lumen",
    ),
    _e(
        "isometric_rooms",
        "SD1.5/concepts",
        "kohya_sd1",
        "Isometric Tiny Rooms",
        "concept",
        ["isometric room"],
        ["concept", "isometric", "3d", "diorama", "interior", "cute"],
        "Cut-away isometric rooms on a floating slab, soft global illumination.",
        "pixelwright",
    ),
    _e(
        "victorian_gown",
        "SD1.5/clothing",
        "kohya_sd1",
        "Victorian Ball Gown",
        "clothing",
        ["victorian gown"],
        ["clothing", "dress", "victorian", "historical", "lace"],
        "Bustled 1880s ball gowns with lace, corsetry and silk sheen.",
        "quietbrush",
    ),
    _e(
        "techwear_jacket",
        "SD1.5/clothing",
        "kohya_sd1",
        "Techwear Jacket",
        "clothing",
        ["techwear"],
        ["clothing", "techwear", "streetwear", "jacket", "cyberpunk"],
        "Black waterproof shells with straps, buckles and utility pockets.",
        "mossgarden",
    ),
    _e(
        "cozy_knit_sweater",
        "SD1.5/clothing",
        "kohya_sd1",
        "Cozy Knit Sweater",
        "clothing",
        ["chunky knit sweater"],
        ["clothing", "sweater", "knitwear", "winter", "cozy"],
        "Oversized cable-knit sweaters in oatmeal and forest green.",
        "mossgarden",
    ),
    _e(
        "cozy_library_interior",
        "SD1.5/backgrounds",
        "kohya_sd1",
        "Cozy Library",
        "background",
        ["cozy library"],
        ["background", "interior", "library", "books", "warm light"],
        "Wooden shelves to the ceiling, reading nooks, lamps and a sleeping cat.",
        "mossgarden",
    ),
    _e(
        "floating_islands",
        "SD1.5/backgrounds",
        "kohya_sd1",
        "Floating Sky Islands",
        "background",
        ["floating islands"],
        ["background", "fantasy", "sky", "landscape", "waterfall"],
        "Grass-topped rocks drifting above clouds, with waterfalls pouring into the void.",
        "aurora_ai",
    ),
    _e(
        "mushroom_forest",
        "SD1.5/backgrounds",
        "kohya_sd1",
        "Glowing Mushroom Forest",
        "background",
        ["glowshroom forest"],
        ["background", "fantasy", "forest", "mushrooms", "bioluminescent"],
        "A night forest of giant bioluminescent mushrooms and drifting spores.",
        "mossgarden",
    ),
    # LyCORIS / DoRA on SD 1.5
    _e(
        "impasto_oil_locon",
        "SD1.5/lycoris",
        "kohya_sd1",
        "Impasto Oil (LoCon)",
        "style",
        ["impasto"],
        ["style", "oil painting", "impasto", "brush strokes", "texture"],
        "Thick palette-knife oil paint; the conv layers carry the brush texture.",
        "quietbrush",
        network_type="LoCon",
    ),
    _e(
        "lowpoly_world_locon",
        "SD1.5/lycoris",
        "kohya_sd1",
        "Low-Poly World (LoCon)",
        "style",
        ["lowpoly"],
        ["style", "low poly", "3d", "geometric"],
        "Flat-shaded low-poly landscapes and characters.",
        "pixelwright",
        network_type="LoCon",
    ),
    _e(
        "cel_shaded_anime_loha",
        "SD1.5/lycoris",
        "kohya_sd1",
        "Cel-Shaded Anime (LoHa)",
        "style",
        ["cel shading"],
        ["style", "anime", "cel shading", "flat colors"],
        "Two-tone cel shading with clean lineart, TV-anime look.",
        "kohaku_lab",
        network_type="LoHa",
    ),
    _e(
        "samurai_armor_loha",
        "SD1.5/lycoris",
        "kohya_sd1",
        "Samurai Armor (LoHa)",
        "clothing",
        ["o-yoroi armor"],
        ["clothing", "armor", "samurai", "japanese", "historical"],
        "Lacquered o-yoroi plates, silk lacing and kabuto helmets.",
        "kohaku_lab",
        network_type="LoHa",
    ),
    _e(
        "corgi_dora",
        "SD1.5/animals",
        "kohya_sd1",
        "Corgi Companion (DoRA)",
        "animal",
        ["corgi pup"],
        ["animal", "dog", "corgi", "cute", "pet"],
        "A fluffy tricolor corgi; DoRA keeps the breed features stable across styles.",
        "tinkerfox",
        network_type="DoRA",
    ),
    # SD 1.5, PEFT / diffusers layout
    _e(
        "polaroid_memories",
        "SD1.5/photography",
        "peft_sd1",
        "Polaroid Memories",
        "photography",
        ["polaroid photo"],
        ["photography", "polaroid", "vintage", "film", "instant camera"],
        "Faded instant-film colors, white frame and light leaks.",
        "northlight",
    ),
    _e(
        "cherry_blossom_street",
        "SD1.5/backgrounds",
        "peft_sd1",
        "Cherry Blossom Street",
        "background",
        ["sakura street"],
        ["background", "cherry blossoms", "japan", "spring", "street"],
        "Narrow Japanese streets under full cherry blossom, petals in the air.",
        "kohaku_lab",
    ),
    _e(
        "potion_shop_props",
        "SD1.5/objects",
        "peft_sd1",
        "Potion Shop Props",
        "object",
        ["potion bottles"],
        ["object", "potions", "fantasy", "alchemy", "still life"],
        "Shelves of glowing potion bottles, corks, labels and herbs.",
        "tinkerfox",
        bare_metadata=True,
    ),
    # SD 2.1
    _e(
        "snowy_cabin_sd21",
        "SD2",
        "kohya_sd2",
        "Snowy Mountain Cabin (SD 2.1 768)",
        "background",
        ["snowy cabin"],
        ["background", "winter", "snow", "cabin", "mountains"],
        "Log cabin in deep snow at blue hour, warm windows. Trained on SD 2.1 768-v.",
        "northlight",
    ),
    # ---- SDXL -----------------------------------------------------------------------------------
    _e(
        "xl_cinematic_film_grain",
        "SDXL/styles",
        "kohya_sdxl",
        "Cinematic Film Grain XL",
        "style",
        ["cinematic still"],
        ["style", "cinematic", "film grain", "photography", "color grading"],
        "Anamorphic widescreen frames with teal-orange grading and 35mm grain.",
        "northlight",
        rank=8,
    ),
    _e(
        "xl_desert_nomad_sahra",
        "SDXL/characters",
        "kohya_sdxl",
        "Sahra the Desert Nomad XL",
        "character",
        ["sahra nomad"],
        ["character", "original character", "desert", "nomad", "scarf"],
        "Original character: a desert courier with an indigo scarf, brass compass and sun-bleached cloak.",
        "aurora_ai",
    ),
    _e(
        "xl_steampunk_goggles",
        "SDXL/clothing",
        "kohya_sdxl",
        "Steampunk Goggles XL",
        "clothing",
        ["brass goggles"],
        ["clothing", "steampunk", "goggles", "accessory"],
        "Layered brass goggles with tinted lenses and leather straps.",
        "tinkerfox",
    ),
    _e(
        "xl_pony_pastel_anime",
        "SDXL/pony",
        "kohya_sdxl",
        "Pastel Anime (Pony)",
        "style",
        ["pastel anime style"],
        ["style", "anime", "pastel", "pony"],
        "Soft pastel anime rendering for Pony Diffusion V6 XL. Use score_9, score_8_up.",
        "kohaku_lab",
        civitai_base_model="Pony",
    ),
    _e(
        "xl_illustrious_ink_wash",
        "SDXL/illustrious",
        "kohya_sdxl",
        "Ink Wash (Illustrious)",
        "style",
        ["ink wash painting"],
        ["style", "ink", "sumi-e", "monochrome", "illustrious"],
        "Sumi-e brush and ink washes for Illustrious XL checkpoints.",
        "quietbrush",
        civitai_base_model="Illustrious",
    ),
    _e(
        "xl_volumetric_fog",
        "SDXL/concepts",
        "kohya_sdxl",
        "Volumetric Fog XL",
        "concept",
        ["volumetric fog"],
        ["concept", "lighting", "fog", "atmosphere", "god rays"],
        "Light shafts through haze, dusty interiors and misty forests.",
        "lumen",
    ),
    _e(
        "xl_mech_pilot_lokr",
        "SDXL/lycoris",
        "kohya_sdxl",
        "Mech Pilot Suit (LoKr)",
        "clothing",
        ["mech pilot suit"],
        ["clothing", "bodysuit", "sci-fi", "mecha", "pilot"],
        "Form-fitting pilot suits with armored panels and glowing seams.",
        "pixelwright",
        network_type="LoKr",
    ),
    _e(
        "xl_vintage_cars_lokr",
        "SDXL/lycoris",
        "kohya_sdxl",
        "Vintage Cars (LoKr)",
        "vehicle",
        ["vintage car"],
        ["vehicle", "car", "1950s", "retro", "chrome"],
        "1950s American cars with chrome bumpers and whitewall tyres.",
        "northlight",
        network_type="LoKr",
    ),
    _e(
        "xl_watercolor_botanical",
        "SDXL/styles",
        "peft_sdxl",
        "Botanical Watercolor XL",
        "style",
        ["botanical illustration"],
        ["style", "watercolor", "botanical", "flowers", "scientific illustration"],
        "Scientific botanical plates: precise linework, delicate watercolor and Latin labels.",
        "quietbrush",
        rank=8,
    ),
    _e(
        "xl_witch_apprentice_lila",
        "SDXL/characters",
        "peft_sdxl",
        "Lila, Witch Apprentice XL",
        "character",
        ["lila witch"],
        ["character", "witch", "magic", "hat", "original character"],
        "Original character: a clumsy apprentice witch with a patched hat and a black cat familiar.",
        "aurora_ai",
    ),
    _e(
        "xl_underwater_ruins",
        "SDXL/backgrounds",
        "peft_sdxl",
        "Underwater Ruins XL",
        "background",
        ["sunken ruins"],
        ["background", "underwater", "ruins", "ocean", "caustics"],
        "Sunken temples with caustic light, kelp and drifting fish.",
        "mossgarden",
    ),
    _e(
        "xl_cyberpunk_alley",
        "SDXL/backgrounds",
        "peft_sdxl",
        "Cyberpunk Alley XL",
        "background",
        ["neon alley"],
        ["background", "cyberpunk", "alley", "neon", "rain", "night"],
        "Cramped alleys with holographic signs, cables and steam vents.",
        "northlight",
    ),
    _e(
        "xl_macro_insects",
        "SDXL/photography",
        "peft_sdxl",
        "Macro Insects XL",
        "photography",
        ["macro photo"],
        ["photography", "macro", "insects", "nature", "bokeh"],
        "Extreme close-ups of beetles and dragonflies with dew drops and creamy bokeh.",
        "lumen",
        bare_metadata=True,
    ),
    _e(
        "xl_kimono_florals",
        "SDXL/clothing",
        "peft_sdxl",
        "Floral Kimono XL",
        "clothing",
        ["floral kimono"],
        ["clothing", "kimono", "japanese", "floral pattern", "traditional"],
        "Silk kimonos with peony and crane patterns, obi details.",
        "kohaku_lab",
    ),
    _e(
        "xl_dragon_hatchling",
        "SDXL/animals",
        "peft_sdxl",
        "Dragon Hatchling XL",
        "animal",
        ["baby dragon"],
        ["animal", "dragon", "fantasy", "cute", "creature"],
        "Tiny dragons hatching from speckled eggs, big eyes and soft scales.",
        "tinkerfox",
    ),
    _e(
        "xl_retro_space_suit",
        "SDXL/clothing",
        "peft_sdxl",
        "Retro Space Suit XL",
        "clothing",
        ["retro spacesuit"],
        ["clothing", "space suit", "sci-fi", "retro futurism", "astronaut"],
        "1960s retro-futurist spacesuits with fishbowl helmets.",
        "pixelwright",
    ),
    # ---- FLUX.1 ---------------------------------------------------------------------------------
    _e(
        "flux_analog_portra",
        "Flux/photography",
        "kohya_flux",
        "Analog Portra 400 (Flux)",
        "photography",
        ["portra400"],
        ["photography", "film", "analog", "portrait", "35mm"],
        "Warm skin tones and gentle grain of 400-speed color negative film.",
        "northlight",
        rank=2,
    ),
    _e(
        "flux_storybook_gouache",
        "Flux/styles",
        "kohya_flux",
        "Storybook Gouache (Flux)",
        "style",
        ["gouache storybook"],
        ["style", "gouache", "children's book", "illustration"],
        "Matte gouache illustrations for picture books, chunky shapes and warm palettes.",
        "quietbrush",
        rank=2,
    ),
    _e(
        "flux_better_hands",
        "Flux/concepts",
        "kohya_flux",
        "Better Hands (Flux)",
        "concept",
        [],
        ["concept", "hands", "anatomy", "fix"],
        "No trigger needed; improves finger count and hand poses at 0.5-0.8.",
        "lumen",
        rank=2,
    ),
    _e(
        "flux_neon_sign_text",
        "Flux/concepts",
        "kohya_flux",
        "Neon Sign Lettering (Flux)",
        "concept",
        ["neon sign"],
        ["concept", "typography", "neon", "signage", "text"],
        "Legible bent-glass neon lettering. Put the text in quotes.",
        "pixelwright",
        rank=2,
    ),
    _e(
        "flux_paper_cutout",
        "Flux/styles",
        "kohya_flux",
        "Paper Cutout Diorama (Flux)",
        "style",
        ["paper cutout"],
        ["style", "papercraft", "layered paper", "diorama"],
        "Layered cut-paper scenes with soft drop shadows between layers.",
        "tinkerfox",
        rank=2,
    ),
    _e(
        "flux_brutalist_arch",
        "Flux/backgrounds",
        "kohya_flux",
        "Brutalist Architecture (Flux)",
        "background",
        ["brutalist building"],
        ["background", "architecture", "brutalism", "concrete", "urban"],
        "Raw concrete megastructures under overcast skies.",
        "mossgarden",
        rank=2,
    ),
    _e(
        "flux_pixel_sprites",
        "Flux/styles",
        "peft_flux",
        "Pixel Sprites (Flux)",
        "style",
        ["pixel sprite"],
        ["style", "pixel art", "sprite sheet", "game asset"],
        "Game-ready pixel sprites on plain backgrounds.",
        "pixelwright",
        rank=2,
    ),
    _e(
        "flux_golden_retriever",
        "Flux/animals",
        "peft_flux",
        "Golden Retriever Pal (Flux)",
        "animal",
        ["goldie dog"],
        ["animal", "dog", "golden retriever", "pet", "photography"],
        "A specific golden retriever, photographed outdoors.",
        "northlight",
        rank=2,
        bare_metadata=True,
    ),
    _e(
        "flux_lighthouse_coast",
        "Flux/backgrounds",
        "peft_flux",
        "Lighthouse Coast (Flux)",
        "background",
        ["lighthouse coast"],
        ["background", "lighthouse", "coast", "sea", "seascape"],
        "Rugged coastlines with a red and white lighthouse, crashing waves.",
        "mossgarden",
        rank=2,
    ),
    _e(
        "flux_chef_marco",
        "Flux/characters",
        "peft_flux",
        "Chef Marco (Flux)",
        "character",
        ["chef marco"],
        ["character", "chef", "kitchen", "man", "original character"],
        "Original character: a cheerful Italian chef with a curled moustache and flour on his apron.",
        "aurora_ai",
        rank=2,
    ),
    _e(
        "flux_isometric_icons",
        "Flux/concepts",
        "peft_flux",
        "Isometric Icons (Flux)",
        "concept",
        ["iso icon"],
        ["concept", "isometric", "icon", "3d", "ui"],
        "Glossy isometric app icons on white.",
        "pixelwright",
        rank=2,
    ),
]

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"

HOSTILE: list[Entry] = [
    _e(
        IMG,
        "hostile",
        "kohya_sd1",
        SCRIPT,
        "style",
        [SCRIPT, "xss <b>bold</b>"],
        ["style", IMG, '"><svg onload=alert(1)>', SCRIPT],
        f'<p>Looks harmless.</p>{SCRIPT}{IMG}<a href="javascript:alert(1)">click</a>',
        f"mallory{IMG}",
    ),
    _e(
        "javascript_link",
        "hostile",
        "kohya_sd1",
        "javascript:alert(1)",
        "concept",
        ["'; DROP TABLE loras; --"],
        ["concept", "<iframe src=javascript:alert(1)>", "{{7*7}}"],
        "</textarea><script>alert(document.cookie)</script>",
        "<svg/onload=alert(1)>",
    ),
    _e(
        'quotes_&_ampersands\'_"name"',
        "hostile",
        "peft_sdxl",
        'Tom & Jerry\'s "quoted" <style>',
        "style",
        ["a & b", '"quoted"'],
        ["style", "&amp;", "<u>under</u>"],
        "Entities &lt;script&gt; and raw & < > \" ' characters everywhere.",
        "o'brien&co",
    ),
]

# Sidecar kinds: civitai (.civitai.info), civitai_empty ({} = not found), a1111 (.json user metadata),
# cbplus (A1111 .json written by Civitai Browser+), cbplus_not_found, sdnext (.json Civitai model JSON + .txt),
# lm (ComfyUI-Lora-Manager .metadata.json), lm_original (the original LoRA Manager's Civitai model .json),
# description_txt (<base>.description.txt).
SIDECAR_PATTERNS: list[tuple[str, ...]] = [
    ("civitai", "a1111"),
    ("civitai",),
    ("lm",),
    ("cbplus",),
    ("sdnext",),
    (),
    ("civitai", "lm"),
    ("lm_original",),
    ("a1111", "description_txt"),
    ("civitai", "cbplus"),
]
PREVIEW_PATTERNS: list[str | None] = [
    "preview.png",
    "png",
    "jpg",
    "webp",
    "preview.jpeg",
    "thumb.jpg",
    None,
    "preview.webp",
    "PNG",
    "jpeg",
]
PREVIEW_OVERRIDES = {"pixel_quest_16bit": "ssmd_cover", "xl_cinematic_film_grain": "modelspec_thumbnail"}
SIDECAR_OVERRIDES = {"tilt_shift_miniature": ("civitai_empty",), "robot_barista": ("cbplus_not_found",)}
DUPLICATES = [
    ("watercolor_dreams", "downloads/watercolor_dreams (1).safetensors"),
    ("xl_cinematic_film_grain", "downloads/cinematic-film-grain-xl.safetensors"),
    ("flux_analog_portra", "Flux/photography/old/flux_analog_portra_copy.safetensors"),
]
MALFORMED = "broken/truncated_download.safetensors"

BUDGET = {"SD1": 560_000, "SD2": 700_000, "SDXL": 900_000, "FLUX": 1_100_000}
FLUX_BLOCK_CHOICES = ["7,12,16,20", "7,20", "12", "7"]
THEME_COLOURS = {
    "style": (120, 80, 160),
    "character": (200, 110, 60),
    "concept": (60, 130, 170),
    "clothing": (170, 60, 100),
    "background": (70, 140, 90),
    "photography": (110, 110, 110),
    "animal": (180, 140, 60),
    "object": (90, 90, 150),
    "vehicle": (150, 60, 60),
}


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


@dataclass
class ManifestItem:
    path: str  # relative to DEST, posix
    title: str
    base_model: str | None  # architecture: SD1 | SD2 | SDXL | FLUX (None: unknown/tiny/malformed)
    key_layout: str | None
    network_type: str | None
    rank: int | None
    alpha: float | None
    triggers: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    civitai_base_model: str | None = None
    sidecars: list[str] = field(default_factory=list)
    preview: str | None = None  # file suffix after the stem, or "ssmd_cover"/"modelspec_thumbnail"
    duplicate_of: str | None = None
    hostile: bool = False
    malformed: bool = False
    tiny: bool = False
    module_filter: str | None = None


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _module_filter(e: Entry, te: bool, conv_rank: int | None) -> str | None:
    """Pick the smallest real-shaped subset of modules that fits the size budget of the base model."""
    base = BASE_MODEL_OF_FAMILY[e.family]
    budget = BUDGET[base]

    def size(f: str | None) -> int:
        return _cached_body(e.family, e.network_type, e.rank, "F16", te, conv_rank, f, None, False)[1]

    candidates: list[str | None] = [None]
    if base == "FLUX":
        candidates += [f"blocks:{b}" for b in FLUX_BLOCK_CHOICES]
    candidates += [f"sparse:{k}" for k in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)]
    for f in candidates:
        if size(f) <= budget:
            return f
    return candidates[-1]


def _alpha(e: Entry, rng: random.Random) -> float:
    return float(rng.choice([e.rank, e.rank / 2, 1.0])) if e.family.startswith("kohya") else float(e.rank)


def _training_tags(e: Entry, rng: random.Random) -> dict[str, int]:
    generic = [
        "solo",
        "looking at viewer",
        "outdoors",
        "indoors",
        "upper body",
        "full body",
        "simple background",
        "day",
        "night",
        "smile",
        "standing",
        "sky",
        "tree",
        "detailed background",
        "depth of field",
    ]
    tags: dict[str, int] = {}
    top = rng.randint(40, 160)
    for t in e.triggers[:1]:
        tags[t] = top
    for t in e.tags:
        if t not in tags:
            tags[t] = rng.randint(5, top)
    for t in rng.sample(generic, 6):
        tags.setdefault(t, rng.randint(1, top // 2))
    return tags


def _metadata(
    e: Entry, rng: random.Random, rank: int, alpha: float, conv_rank: int | None, extra: dict[str, str]
) -> dict[str, str]:
    base = BASE_MODEL_OF_FAMILY[e.family]
    trigger = ", ".join(e.triggers) if e.triggers else None
    if e.family.startswith("kohya"):
        md = kohya_metadata(
            rng,
            name=e.stem,
            base_model=base,
            network_type=e.network_type,
            rank=rank,
            alpha=alpha,
            tags=_training_tags(e, rng),
            dataset_dir=f"10_{e.stem.split('_')[0]}",
            title=e.title,
            author=e.author,
            description=e.description,
            trigger=trigger,
            conv_rank=conv_rank,
            modelspec=not e.minimal_metadata,
            minimal=e.minimal_metadata,
            extra=extra,
        )
        if not e.minimal_metadata:
            md.setdefault("modelspec.tags", ", ".join(e.tags))
        return md
    return peft_metadata(
        base_model=base,
        rank=rank,
        alpha=alpha,
        title=None if e.bare_metadata else e.title,
        trigger=trigger,
        extra=extra,
    )


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _preview_image(title: str, subtitle: str, colour: tuple[int, int, int], size=(256, 320)):
    """A labelled gradient card: readable title and base model so a human can tell previews apart."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size)
    d = ImageDraw.Draw(img)
    r0, g0, b0 = colour
    for y in range(h):
        t = y / h
        d.line(
            [(0, y), (w, y)], fill=(int(r0 * (1 - t) + 20 * t), int(g0 * (1 - t) + 20 * t), int(b0 * (1 - t) + 30 * t))
        )
    d.ellipse((w * 0.2, h * 0.12, w * 0.8, h * 0.12 + w * 0.6), outline=(255, 255, 255), width=3)
    words, lines, line = title.split(), [], ""
    f = _font(20)
    for word in words:
        cand = (line + " " + word).strip()
        if d.textlength(cand, font=f) > w - 20 and line:
            lines.append(line)
            line = word
        else:
            line = cand
    lines.append(line)
    y = int(h * 0.62)
    for ln in lines[:3]:
        d.text((10, y), ln, fill=(255, 255, 255), font=f)
        y += 24
    d.text((10, h - 26), subtitle, fill=(230, 230, 230), font=_font(14))
    d.text((w - 74, h - 26), "demo", fill=(200, 200, 200), font=_font(14))
    return img


def _encode(img, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", optimize=False)
    elif fmt == "JPEG":
        img.save(buf, "JPEG", quality=85)
    else:
        img.save(buf, "WEBP", quality=80, method=4)
    return buf.getvalue()


_FMT_OF_SUFFIX = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


def _hashes(data: bytes) -> dict[str, str]:
    sha = hashlib.sha256(data).hexdigest()
    return {
        "SHA256": sha.upper(),
        "AutoV2": sha[:10].upper(),
        "AutoV1": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8].upper(),
        "CRC32": f"{zlib.crc32(data) & 0xFFFFFFFF:08X}",
    }


def _iso(ts: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _civitai_version(e: Entry, rng: random.Random, ids: tuple[int, int], file_name: str, data: bytes, ts: int) -> dict:
    """Civitai model-version JSON, as Civitai Helper stores it in ``.civitai.info``."""
    model_id, version_id = ids
    base = e.civitai_base_model or CIVITAI_BASE_MODEL[BASE_MODEL_OF_FAMILY[e.family]]
    prompt = ", ".join(e.triggers + e.tags[1:4] + ["masterpiece", "best quality"])
    return {
        "id": version_id,
        "modelId": model_id,
        "name": f"v{1 + version_id % 3}.0",
        "createdAt": _iso(ts),
        "updatedAt": _iso(ts + 3600),
        "publishedAt": _iso(ts + 7200),
        "trainedWords": e.triggers,
        "trainingStatus": None,
        "trainingDetails": None,
        "baseModel": base,
        "baseModelType": "Standard",
        "earlyAccessTimeFrame": 0,
        "description": f"<p>{e.description}</p>",
        "uploadType": "Created",
        "status": "Published",
        "stats": {
            "downloadCount": rng.randint(50, 90_000),
            "ratingCount": rng.randint(0, 400),
            "rating": round(rng.uniform(3.5, 5.0), 2),
            "thumbsUpCount": rng.randint(0, 3000),
        },
        "model": {"name": e.title, "type": "LORA", "nsfw": False, "poi": False},
        "files": [
            {
                "id": version_id + 7,
                "sizeKB": round(len(data) / 1024, 4),
                "name": file_name,
                "type": "Model",
                "pickleScanResult": "Success",
                "pickleScanMessage": "No Pickle imports",
                "virusScanResult": "Success",
                "scannedAt": _iso(ts + 600),
                "metadata": {"format": "SafeTensor", "size": None, "fp": "fp16"},
                "hashes": _hashes(data),
                "primary": True,
                "downloadUrl": f"https://civitai.com/api/download/models/{version_id}",
            }
        ],
        "images": [
            {
                "url": f"https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/demo-{version_id}-{i}/width=512",
                "nsfwLevel": 1,
                "width": 512,
                "height": 768,
                "hash": "U8Fr?]00~q9F%MD%WB-;00Rj?b-;",
                "type": "image",
                "meta": {
                    "prompt": prompt,
                    "negativePrompt": "lowres, bad anatomy, worst quality",
                    "seed": rng.randrange(2**32),
                    "steps": 28,
                    "sampler": "DPM++ 2M Karras",
                    "cfgScale": 7,
                    "Size": "512x768",
                    "resources": [{"name": e.stem, "type": "lora", "weight": 0.8}],
                },
            }
            for i in range(2)
        ],
        "downloadUrl": f"https://civitai.com/api/download/models/{version_id}",
    }


def _civitai_model(e: Entry, rng: random.Random, version: dict, ts: int, matching_first: bool) -> dict:
    """Civitai *model* JSON (SD.Next sidecar / original LoRA Manager import) holding this version."""
    older = json.loads(json.dumps(version))
    older["id"] = version["id"] - 1000
    older["name"] = "v0.9"
    older["createdAt"] = _iso(ts - 40 * 86400)
    for f in older["files"]:
        f["hashes"] = {
            k: ("0" * len(v)) if k != "SHA256" else hashlib.sha256(e.stem.encode()).hexdigest().upper()
            for k, v in f["hashes"].items()
        }
        f["name"] = f["name"].replace(".safetensors", "_v09.safetensors")
    versions = [version, older] if matching_first else [older, version]
    slim = []
    for v in versions:
        v = {
            k: v[k]
            for k in (
                "id",
                "modelId",
                "name",
                "createdAt",
                "updatedAt",
                "publishedAt",
                "trainedWords",
                "baseModel",
                "description",
                "stats",
                "files",
                "images",
                "downloadUrl",
            )
        }
        slim.append(v)
    return {
        "id": version["modelId"],
        "name": e.title,
        "description": f"<h2>{e.title}</h2><p>{e.description}</p>",
        "type": "LORA",
        "poi": False,
        "nsfw": False,
        "allowNoCredit": True,
        "allowCommercialUse": ["Image"],
        "allowDerivatives": True,
        "tags": e.tags,
        "creator": {"username": e.author, "image": None},
        "stats": {
            "downloadCount": version["stats"]["downloadCount"],
            "favoriteCount": rng.randint(0, 5000),
            "commentCount": rng.randint(0, 90),
            "ratingCount": version["stats"]["ratingCount"],
            "rating": version["stats"]["rating"],
        },
        "modelVersions": slim,
    }


def _sd_version(e: Entry, cbplus: bool) -> str:
    base = BASE_MODEL_OF_FAMILY[e.family]
    if base in ("SD1", "SD2", "SDXL"):
        return base
    return "Other" if cbplus else "Unknown"


def _write_sidecars(
    lora: Path,
    e: Entry,
    kinds: tuple[str, ...],
    rng: random.Random,
    data: bytes,
    rel: str,
    ts: int,
    preview_rel: str | None,
) -> None:
    ids = (70_000 + (zlib.crc32(e.stem.encode()) % 90_000), 300_000 + (zlib.crc32(e.stem.encode()[::-1]) % 600_000))
    version = _civitai_version(e, rng, ids, lora.name, data, ts)
    stem = lora.with_suffix("")
    sha = hashlib.sha256(data).hexdigest()
    for kind in kinds:
        if kind == "civitai":
            Path(f"{stem}.civitai.info").write_text(json.dumps(version, indent=4, ensure_ascii=False), "utf-8")
        elif kind == "civitai_empty":
            Path(f"{stem}.civitai.info").write_text("{}", "utf-8")
        elif kind == "a1111":
            doc = {
                "description": e.description,
                "sd version": _sd_version(e, False),
                "activation text": ", ".join(e.triggers),
                "preferred weight": round(rng.choice([0, 0.6, 0.8, 1.0]), 2),
                "negative text": "lowres, blurry" if rng.random() < 0.5 else "",
                "notes": f"Works well with {rng.choice(['DPM++ 2M Karras', 'Euler a', 'DDIM'])}; by {e.author}.",
            }
            Path(f"{stem}.json").write_text(json.dumps(doc, indent=4, ensure_ascii=False), "utf-8")
        elif kind in ("cbplus", "cbplus_not_found"):
            found = kind == "cbplus"
            doc = {
                "activation text": ", ".join(e.triggers),
                "sd version": _sd_version(e, True),
                "description": f"<p>{e.description}</p>" if found else "",
                "preferred weight": 0,
                "notes": "",
                "negative text": "",
                "sha256": sha.upper(),
                "modelId": ids[0] if found else "Model not found",
                "modelVersionId": ids[1] if found else "Model not found",
            }
            Path(f"{stem}.json").write_text(json.dumps(doc, indent=4, ensure_ascii=False), "utf-8")
        elif kind == "sdnext":
            Path(f"{stem}.json").write_text(
                json.dumps(_civitai_model(e, rng, version, ts, matching_first=False), indent=2, ensure_ascii=False),
                "utf-8",
            )
            Path(f"{stem}.txt").write_text(e.description + "\n", "utf-8")
        elif kind == "lm_original":
            doc = _civitai_model(e, rng, version, ts, matching_first=True)
            doc.update(
                {
                    "sd version": _sd_version(e, False),
                    "activation text": ", ".join(e.triggers),
                    "nsfwLevel": 1,
                    "supportsGeneration": True,
                }
            )
            Path(f"{stem}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False), "utf-8")
        elif kind == "description_txt":
            Path(f"{stem}.description.txt").write_text(e.description + "\n", "utf-8")
        elif kind == "lm":
            stale_root = "/home/demo/ComfyUI/models/loras/"
            civ = dict(version)
            civ["trainedWords"] = e.triggers
            doc = {
                "file_name": lora.stem,
                "model_name": e.title,
                "file_path": stale_root + rel,
                "size": len(data),
                "modified": float(ts),
                "sha256": sha,
                "base_model": e.civitai_base_model or CIVITAI_BASE_MODEL[BASE_MODEL_OF_FAMILY[e.family]],
                "preview_url": (stale_root + preview_rel) if preview_rel else "",
                "preview_nsfw_level": 0,
                "notes": f"favourite {e.kind} LoRA" if rng.random() < 0.5 else "",
                "from_civitai": True,
                "usage_tips": json.dumps(
                    {
                        "strength_min": 0.4,
                        "strength_max": 1.0,
                        "strength": round(rng.choice([0.6, 0.7, 0.8, 1.0]), 2),
                        "clip_strength": 1.0,
                        "clip_skip": 2,
                    }
                ),
                "tags": e.tags,
                "modelDescription": f"<p>{e.description}</p>",
                "favorite": rng.random() < 0.3,
                "exclude": False,
                "civitai_deleted": False,
                "metadata_source": "civitai_api",
                "hash_status": "completed",
                "last_checked_at": float(ts + 60),
                "db_checked": False,
                "civitai": civ,
            }
            Path(f"{stem}.metadata.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False), "utf-8")
        else:
            raise ValueError(kind)


def _touch(path: Path, ts: int) -> None:
    os.utime(path, (ts, ts))


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def _write_entry(dest: Path, idx: int, e: Entry, hostile: bool) -> ManifestItem:
    rng = random.Random(f"demo:{e.stem}")
    base = BASE_MODEL_OF_FAMILY[e.family]
    kohya = e.family.startswith("kohya")
    te = kohya and base != "FLUX" and rng.random() < 0.7
    conv_rank = 2 if e.network_type in ("LoCon", "LoHa", "LoKr") else None
    alpha = _alpha(e, rng)
    ts = EPOCH + idx * 86_400 + rng.randrange(0, 80_000)
    colour = THEME_COLOURS.get(e.kind, (100, 100, 100))
    preview = PREVIEW_OVERRIDES.get(e.stem, PREVIEW_PATTERNS[idx % len(PREVIEW_PATTERNS)])
    sidecars = SIDECAR_OVERRIDES.get(e.stem, SIDECAR_PATTERNS[idx % len(SIDECAR_PATTERNS)])
    if hostile:
        sidecars, preview = {0: ("civitai", "a1111"), 1: ("lm",), 2: ("civitai", "sdnext")}[idx % 3], "preview.png"
    extra: dict[str, str] = {}
    label = f"{base} · {e.network_type}"
    if preview == "ssmd_cover":
        cover = _encode(_preview_image(e.title, label, colour, (128, 160)), "PNG")
        extra.update(
            {
                "ssmd_cover_images": json.dumps([base64.b64encode(cover).decode()]),
                "ssmd_display_name": e.title,
                "ssmd_author": e.author,
                "ssmd_keywords": ", ".join(e.triggers),
                "ssmd_description": e.description,
                "ssmd_tags": ", ".join(e.tags),
                "ssmd_rating": "4",
            }
        )
    elif preview == "modelspec_thumbnail":
        thumb = _encode(_preview_image(e.title, label, colour, (128, 160)), "JPEG")
        extra["modelspec.thumbnail"] = "data:image/jpeg;base64," + base64.b64encode(thumb).decode()
    mfilter = _module_filter(e, te, conv_rank)
    md = _metadata(e, rng, e.rank, alpha, conv_rank, extra)
    spec = LoraSpec(
        family=e.family,
        network_type=e.network_type,
        rank=e.rank,
        alpha=alpha,
        dtype="F16",
        text_encoder=te,
        conv_rank=conv_rank,
        module_filter=mfilter,
        metadata=md,
    )
    lora = dest / e.folder / f"{e.stem}.safetensors"
    write_lora(lora, spec, sparse=False, data_seed=zlib.crc32(e.stem.encode()))
    data = lora.read_bytes()
    rel = lora.relative_to(dest).as_posix()
    preview_rel = None
    if preview and preview not in ("ssmd_cover", "modelspec_thumbnail"):
        suffix = preview.split(".")[-1]
        img = _preview_image(e.title, label, colour)
        p = lora.with_name(f"{lora.stem}.{preview}")
        p.write_bytes(_encode(img, _FMT_OF_SUFFIX[suffix.lower()]))
        _touch(p, ts)
        preview_rel = p.relative_to(dest).as_posix()
    _write_sidecars(lora, e, sidecars, rng, data, rel, ts, preview_rel)
    for side in lora.parent.glob(_glob_escape(lora.stem) + ".*"):
        _touch(side, ts)
    return ManifestItem(
        path=rel,
        title=e.title,
        base_model=base,
        key_layout=LAYOUT_OF_FAMILY[e.family],
        network_type=e.network_type,
        rank=e.rank,
        alpha=alpha if kohya else None,
        triggers=e.triggers,
        tags=e.tags,
        civitai_base_model=e.civitai_base_model,
        sidecars=list(sidecars),
        preview=preview,
        hostile=hostile,
        module_filter=mfilter,
    )


def _glob_escape(s: str) -> str:
    import glob

    return glob.escape(s)


def _canonicalise_header(path: Path) -> None:
    """Rewrite a safetensors header with ``__metadata__`` keys sorted.

    safetensors' ``save_file`` serialises metadata from a Rust HashMap, so the key order (and
    the file's bytes) change from run to run; the demo library must be byte-reproducible.
    """
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    out = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | header
    text = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _write_tiny(dest: Path, items: list[ManifestItem]) -> str | None:
    """LoRAs shaped for the tiny random-weight pipeline (generation helper's module)."""
    try:
        from workbench.generate import TINY_LORAS, write_tiny_loras
    except ImportError as exc:  # torch/safetensors or the module itself missing
        return f"tiny-pipeline LoRAs skipped ({exc})"
    try:
        paths = write_tiny_loras(dest / "tiny")
    except ImportError as exc:
        return f"tiny-pipeline LoRAs skipped ({exc})"
    layouts = {row[0]: (row[1], row[7], row[3], row[6]) for row in TINY_LORAS}
    for i, p in enumerate(sorted(paths)):
        _canonicalise_header(p)
        layout, network, rank, triggers = layouts.get(p.stem, (None, None, None, []))
        _touch(p, EPOCH + 400 * 86_400 + i)
        items.append(
            ManifestItem(
                path=p.relative_to(dest).as_posix(),
                title=p.stem,
                base_model=None,
                key_layout=layout,
                network_type=network,
                rank=rank,
                alpha=None,
                triggers=list(triggers),
                tiny=True,
            )
        )
    return None


def build_demo_library(dest: Path | str, force: bool = False, quiet: bool = False) -> list[ManifestItem]:
    """Build (or confirm up to date) the demo library in ``dest``; returns the manifest items."""
    dest = Path(dest)
    manifest_path = dest / MANIFEST_NAME
    if dest.exists() and any(dest.iterdir()):
        ours = manifest_path.exists()
        if ours and not force:
            doc = json.loads(manifest_path.read_text("utf-8"))
            if doc.get("generator_version") == GENERATOR_VERSION and all(
                (dest / it["path"]).exists() for it in doc["items"]
            ):
                if not quiet:
                    print(f"{dest}: demo library already up to date ({len(doc['items'])} files); --force rebuilds")
                return [ManifestItem(**it) for it in doc["items"]]
        if not ours and not force:
            raise SystemExit(f"{dest} exists and is not a demo library; pass --force to replace its contents")
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)

    items: list[ManifestItem] = []
    for idx, e in enumerate(CATALOGUE):
        items.append(_write_entry(dest, idx, e, hostile=False))
    for j, e in enumerate(HOSTILE):
        items.append(_write_entry(dest, len(CATALOGUE) + j, e, hostile=True))
    by_stem = {Path(it.path).stem: it for it in items}
    for k, (src_stem, rel) in enumerate(DUPLICATES):
        src = by_stem[src_stem]
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dest / src.path, target)
        _touch(target, EPOCH + 500 * 86_400 + k)
        items.append(
            ManifestItem(
                path=rel,
                title=src.title,
                base_model=src.base_model,
                key_layout=src.key_layout,
                network_type=src.network_type,
                rank=src.rank,
                alpha=src.alpha,
                triggers=src.triggers,
                tags=src.tags,
                duplicate_of=src.path,
                module_filter=src.module_filter,
                preview=src.preview if src.preview in ("ssmd_cover", "modelspec_thumbnail") else None,
            )
        )
    # A download cut short: the header claims more JSON than the file holds.
    broken = dest / MALFORMED
    broken.parent.mkdir(parents=True, exist_ok=True)
    good = (dest / by_stem["golden_hour_light"].path).read_bytes()
    broken.write_bytes(good[:4096])
    _touch(broken, EPOCH + 510 * 86_400)
    items.append(
        ManifestItem(
            path=MALFORMED,
            title="truncated_download",
            base_model=None,
            key_layout=None,
            network_type=None,
            rank=None,
            alpha=None,
            malformed=True,
        )
    )
    tiny_notice = _write_tiny(dest, items)

    manifest = {"generator_version": GENERATOR_VERSION, "items": [asdict(it) for it in items]}
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), "utf-8")
    _touch(manifest_path, EPOCH)
    if not quiet:
        _print_summary(dest, items, tiny_notice)
    return items


def _print_summary(dest: Path, items: list[ManifestItem], tiny_notice: str | None) -> None:
    from collections import Counter

    files = [p for p in dest.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    n_lora = sum(1 for p in files if p.suffix == ".safetensors")
    print(f"Demo library in {dest}: {n_lora} .safetensors, {len(files)} files, {total / 1e6:.1f} MB")
    print("  base models :", dict(Counter(it.base_model or ("tiny" if it.tiny else "?") for it in items)))
    print("  layouts     :", dict(Counter(it.key_layout or "?" for it in items)))
    print("  network     :", dict(Counter(it.network_type or "?" for it in items)))
    print("  sidecars    :", dict(Counter(k for it in items for k in it.sidecars)))
    print("  previews    :", dict(Counter(it.preview for it in items if it.preview)))
    print(
        f"  duplicates  : {sum(1 for it in items if it.duplicate_of)}, hostile: {sum(it.hostile for it in items)}, "
        f"malformed: {sum(it.malformed for it in items)}, tiny-pipeline: {sum(it.tiny for it in items)}"
    )
    if tiny_notice:
        print("  NOTICE:", tiny_notice)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", type=Path, help="folder to build the library in (e.g. data/demo-library)")
    ap.add_argument("--force", action="store_true", help="delete and rebuild even if up to date / not ours")
    args = ap.parse_args(argv)
    build_demo_library(args.dest, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
