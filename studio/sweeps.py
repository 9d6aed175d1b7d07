"""Strength sweeps: one source through several strengths (and optionally seeds or guidance scales).

A sweep is a grid: strengths across, an optional second axis (seed or guidance) down. Each cell is its
own job (priced, charged and refunded on its own); the cells share a sweep_id, so a worker runs them
in one denoising pass (pipelines.sweep). This module builds the cells, reads a sweep back, scores how
much of the source's structure each cell kept, and packs the grid, the cells and a manifest for download.
Torch-free (numpy, Pillow and scikit-image).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from sqlmodel import Session, col, select

from pipelines.params import MAX_GUIDANCE, MAX_SEED, MAX_SWEEP_MEMBERS, Task
from studio.config import Settings
from studio.job_requests import JobRequest, SubmitRefused
from studio.models import Asset, Job
from studio.queue import quote
from studio.storage import AssetStore

GRID_CELL_SIDE = 256
GRID_LABEL_HEIGHT = 22


class SecondAxis(StrEnum):
    seed = "seed"
    guidance = "guidance"


@dataclass(frozen=True)
class SweepPlan:
    strengths: tuple[float, ...]  # the columns
    axis: SecondAxis | None = None  # the rows, if any
    values: tuple[float, ...] = ()  # seeds or guidance scales, one per row

    @property
    def cells(self) -> int:
        return len(self.strengths) * max(1, len(self.values))


def strength_range(start: float, stop: float, step: float) -> tuple[float, ...]:
    """start, start + step, … up to stop (included when the steps land on it), rounded to 3 decimals."""
    if step <= 0:
        raise SubmitRefused(f"The strength step must be more than 0, got {step}.")
    if not 0 < start <= stop <= 1:
        raise SubmitRefused(f"Strengths go from a start to a stop within (0, 1], got {start} to {stop}.")
    count = int(round((stop - start) / step, 9)) + 1
    if count > MAX_SWEEP_MEMBERS:
        raise SubmitRefused(f"{count} strengths is more than a sweep's {MAX_SWEEP_MEMBERS} cells; use a larger step.")
    return tuple(round(start + index * step, 3) for index in range(count))


def parse_values(text: str, *, what: str) -> tuple[float, ...]:
    """A comma-separated list of numbers ("0.2, 0.35, 0.5"), in the order written, without repeats."""
    values: list[float] = []
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        try:
            value = float(part)
        except ValueError:
            raise SubmitRefused(f"{what}: {part.strip()!r} is not a number.") from None
        if value not in values:
            values.append(value)
    if not values:
        raise SubmitRefused(f"{what}: give at least one value.")
    return tuple(values)


def check_plan(plan: SweepPlan) -> None:
    if plan.cells > MAX_SWEEP_MEMBERS:
        raise SubmitRefused(f"This sweep has {plan.cells} cells; the most is {MAX_SWEEP_MEMBERS}.")
    for strength in plan.strengths:
        if not 0 < strength <= 1:
            raise SubmitRefused(f"Strengths are between 0 and 1, got {strength}.")
    if (plan.axis is None) != (not plan.values):
        raise SubmitRefused("A second axis needs its values, and values need an axis.")
    for value in plan.values:
        if plan.axis is SecondAxis.seed and not (value == int(value) and 0 <= value <= MAX_SEED):
            raise SubmitRefused(f"Seeds are whole numbers from 0 to {MAX_SEED}, got {value:g}.")
        if plan.axis is SecondAxis.guidance and not 0 <= value <= MAX_GUIDANCE:
            raise SubmitRefused(f"Guidance is between 0 and {MAX_GUIDANCE:g}, got {value:g}.")


def sweep_cells(request: JobRequest, plan: SweepPlan) -> list[JobRequest]:
    """One request per cell, row by row: the base request with the cell's strength (and seed or guidance)."""
    check_plan(plan)
    if request.task not in (Task.img2img, Task.inpaint) or request.spec.control is not None:
        raise SubmitRefused(
            "Sweeps run image-to-image and inpainting without structure guidance; turn ControlNet off or pick "
            "another style."
        )
    rows = plan.values or (None,)
    cells = []
    for row in rows:
        for strength in plan.strengths:
            params = replace(request.spec.params, strength=strength)
            if plan.axis is SecondAxis.seed:
                params = replace(params, seed=int(row))
            elif plan.axis is SecondAxis.guidance:
                params = replace(params, guidance=float(row))
            cells.append(replace(request, spec=replace(request.spec, params=params)))
    return cells


def sweep_cost(*, settings: Settings, cells: list[JobRequest], width: int, height: int) -> int:
    """What the whole sweep costs: the sum of its cells' prices."""
    return sum(quote(settings=settings, request=cell, width=width, height=height).credits for cell in cells)


# Reading a sweep back


@dataclass(frozen=True)
class Cell:
    job: Job
    result: Asset | None

    @property
    def strength(self) -> float:
        return self.job.params["strength"]

    @property
    def seed(self) -> int:
        return self.job.params["seed"]

    @property
    def guidance(self) -> float:
        return self.job.params["guidance"]


@dataclass(frozen=True)
class Sweep:
    id: str
    cells: list[Cell]  # in job order: row by row
    strengths: tuple[float, ...]
    axis: SecondAxis | None
    rows: tuple[float, ...]

    def cell(self, row: float | None, strength: float) -> Cell | None:
        for cell in self.cells:
            if cell.strength == strength and (row is None or self.row_value(cell) == row):
                return cell
        return None

    def row_value(self, cell: Cell) -> float | None:
        if self.axis is SecondAxis.seed:
            return cell.seed
        if self.axis is SecondAxis.guidance:
            return cell.guidance
        return None

    @property
    def finished(self) -> bool:
        return all(cell.job.status.is_final for cell in self.cells)


def get_user_sweep(*, session: Session, user_id: int, sweep_id: str) -> Sweep | None:
    """A sweep's cells with their results, only if the sweep belongs to the user."""
    jobs = list(session.exec(select(Job).where(Job.sweep_id == sweep_id).order_by(col(Job.id))).all())
    if not jobs or any(job.user_id != user_id for job in jobs):
        return None
    result_ids = [job.result_asset_id for job in jobs if job.result_asset_id is not None]
    assets = {a.id: a for a in session.exec(select(Asset).where(col(Asset.id).in_(result_ids)))}
    cells = [Cell(job, assets.get(job.result_asset_id)) for job in jobs]
    strengths = tuple(dict.fromkeys(cell.strength for cell in cells))
    seeds = tuple(dict.fromkeys(cell.seed for cell in cells))
    guidances = tuple(dict.fromkeys(cell.guidance for cell in cells))
    if len(seeds) > 1:
        axis, rows = SecondAxis.seed, seeds
    elif len(guidances) > 1:
        axis, rows = SecondAxis.guidance, guidances
    else:
        axis, rows = None, ()
    return Sweep(id=sweep_id, cells=cells, strengths=strengths, axis=axis, rows=rows)


# How much structure a cell kept


@dataclass(frozen=True)
class StructureScore:
    ssim: float  # structural similarity of the luminance to the source's, 1 = identical
    edges: float  # overlap (F1) of the edge maps, 1 = every edge where the source has one


def structure_score(source: Image.Image, result: Image.Image) -> StructureScore:
    """Compare a result with the source it came from (at the result's size), on luminance."""
    from skimage.feature import canny
    from skimage.metrics import structural_similarity

    reference = np.asarray(source.convert("L").resize(result.size, Image.Resampling.LANCZOS), dtype=np.float64)
    candidate = np.asarray(result.convert("L"), dtype=np.float64)
    ssim = structural_similarity(reference, candidate, data_range=255.0)
    edges_reference, edges_candidate = canny(reference, sigma=2.0), canny(candidate, sigma=2.0)
    return StructureScore(ssim=round(float(ssim), 4), edges=round(_edge_f1(edges_reference, edges_candidate), 4))


def _edge_f1(reference: np.ndarray, candidate: np.ndarray) -> float:
    """F1 of two edge maps, an edge pixel counting as matched within 1 px (edges shift by a pixel or so)."""
    from scipy.ndimage import binary_dilation

    if not reference.any() and not candidate.any():
        return 1.0
    if not reference.any() or not candidate.any():
        return 0.0
    precision = (candidate & binary_dilation(reference)).sum() / candidate.sum()
    recall = (reference & binary_dilation(candidate)).sum() / reference.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


# Downloads


def cell_label(sweep: Sweep, cell: Cell) -> str:
    label = f"strength {cell.strength:g}"
    if sweep.axis is not None:
        label += f" · {sweep.axis.value} {sweep.row_value(cell):g}"
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
    buffer = io.BytesIO()
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(["file", "job_id", "status", "strength", "seed", "guidance", "credits", "recipe"])
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for cell in sweep.cells:
            name = ""
            if cell.result is not None:
                name = f"cell-{cell.job.id}-strength-{cell.strength:g}-seed-{cell.seed}-guidance-{cell.guidance:g}.png"
                archive.writestr(name, store.read(cell.result.sha256))
            writer.writerow(
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
        archive.writestr("manifest.csv", manifest.getvalue())
    return buffer.getvalue()
