"""Make docs/weights_heatmap.png: the block heatmap of a real SD1.5 LoRA (../shared/data/loras), as the
detail view shows it. Needs plotly + kaleido (kaleido drives Chromium; BROWSER_PATH may point at it).

    PYTHONPATH=. python docs/weights_heatmap.py [path/to/lora.safetensors]
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.files import analyze_weights
from workbench.views.weights import block_heatmap

_DEFAULT = (
    Path(__file__).resolve().parents[2] / "shared/data/loras/wellCh4n_pokemon_sd15_pytorch_lora_weights.safetensors"
)

if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else _DEFAULT
    analysis = analyze_weights(source)
    if not analysis.ok:
        raise SystemExit(f"{source}: {analysis.error}")
    record = {"ok": True, **analysis.summary()}
    ranks = analysis.rank_summary()
    figure = block_heatmap(
        record,
        title=f"{source.stem}: ‖ΔW‖ per block and layer kind — rank {ranks['nominal_rank']}, "
        f"90 % of the energy in {ranks['rank90_median']:g} directions (median module)",
    )
    figure.update_layout(width=1000, height=340, title_font_size=13)
    out = Path(__file__).with_name("weights_heatmap.png")
    figure.write_image(out, scale=1)
    print(f"wrote {out}")
