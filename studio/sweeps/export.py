"""A sweep for download: the labelled grid as one image, and a ZIP of every cell's PNG with a manifest."""

from __future__ import annotations

import io
import json
import zipfile

from PIL import Image, ImageDraw, ImageOps

from studio.media.storage import AssetStore
from studio.spreadsheets import csv_text
from studio.sweeps.results import Cell, Sweep

GRID_CELL_SIDE = 256
GRID_LABEL_HEIGHT = 22
MANIFEST_HEADER = ("file", "job_id", "status", "strength", "seed", "guidance", "credits", "recipe")


def cell_label(sweep: Sweep, cell: Cell) -> str:
    label = f"strength {cell.strength:g}"
    if sweep.axis is not None:
        label += f" · {sweep.axis_label} {sweep.row_value(cell):g}"
    return label


def grid_image(sweep: Sweep, store: AssetStore, *, side: int = GRID_CELL_SIDE) -> Image.Image:
    """The sweep as one labelled image: strengths across, the second axis down; empty cells stay grey."""
    rows = sweep.rows or (None,)
    columns = len(sweep.strengths)
    grid = Image.new("RGB", (columns * side, len(rows) * (side + GRID_LABEL_HEIGHT)), (235, 235, 235))
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        for c, strength in enumerate(sweep.strengths):
            x, y = c * side, r * (side + GRID_LABEL_HEIGHT)
            cell = sweep.cell(row, strength)
            if cell is not None and cell.result is not None:
                with Image.open(store.path(cell.result.sha256)) as image:
                    grid.paste(ImageOps.contain(image.convert("RGB"), (side, side)), (x, y + GRID_LABEL_HEIGHT))
            if cell is not None:
                draw.text((x + 4, y + 4), cell_label(sweep, cell), fill=(20, 20, 20))
    return grid


def sweep_zip(sweep: Sweep, store: AssetStore) -> bytes:
    """Every finished cell's PNG (recipe inside), the grid, and manifest.csv with one row per cell."""
    buffer, rows = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for cell in sweep.cells:
            name = ""
            if cell.result is not None:
                name = f"cell-{cell.job.id}-strength-{cell.strength:g}-seed-{cell.seed}-guidance-{cell.guidance:g}"
                if sweep.lora:
                    name += f"-lora-weight-{cell.lora_weights[sweep.lora]:g}"
                name += ".png"
                archive.writestr(name, store.read(cell.result.sha256))
            rows.append(
                [
                    name,
                    cell.job.id,
                    cell.job.status.value,
                    cell.strength,
                    cell.seed,
                    cell.guidance,
                    cell.job.cost,
                    json.dumps(cell.job.recipe or cell.job.params, sort_keys=True),
                ]
            )
        grid = io.BytesIO()
        grid_image(sweep, store).save(grid, format="PNG")
        archive.writestr("grid.png", grid.getvalue())
        archive.writestr("manifest.csv", csv_text(MANIFEST_HEADER, rows))
    return buffer.getvalue()
