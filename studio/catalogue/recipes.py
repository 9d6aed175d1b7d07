"""Recipes: everything needed to reproduce a result, stored on the job and inside the result PNG."""

from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

RECIPE_CHUNK = "img2img-studio:recipe"
# 2: tasks (inpaint, upscale), style, ControlNet and inpaint options, user prompts, mask hash
# 3: the catalogue model that ran (None: the configured model), which a re-run is priced by
# 4: the model's family and the conditioning it ran with (Family.recipe: SDXL's sizes), its CPU offload
# 5: outpainting's format, placement, fill and seam (`outpaint`, written only for those runs)
# 6: the LoRAs a run applied (`loras`: [{name, sha256, weight}], written only for runs with LoRAs)
# 7: the reference image an IP-Adapter read (`reference`: {sha256, scale, ip_adapter, ip_adapter_sha256,
#    image_encoder_sha256}, written only for runs with one)
# 8: the team brand kit a run came from (`kit`: {id, name, saved_at}, written only for those; a re-run needs neither
#    kit nor team)
RECIPE_VERSION = 8


def png_with_recipe(image: Image.Image, recipe: dict) -> bytes:
    """Encode `image` as PNG with `recipe` as JSON in an iTXt chunk (nothing else in the metadata)."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(RECIPE_CHUNK, json.dumps(recipe, sort_keys=True, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_recipe(png_bytes: bytes) -> dict | None:
    """The recipe embedded by `png_with_recipe`, or None for any other file."""
    try:
        with Image.open(io.BytesIO(png_bytes)) as image:
            raw = image.info.get(RECIPE_CHUNK) if image.format == "PNG" else None
    except (OSError, ValueError):
        return None
    if raw is None:
        return None
    try:
        recipe = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return recipe if isinstance(recipe, dict) else None
