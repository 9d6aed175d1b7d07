"""Reading a sweep back: its cells, in grid order, with their results."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from studio.db.tables import Asset, Job
from studio.sweeps.plan import SecondAxis


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

    @property
    def lora_weights(self) -> dict[str, float]:
        """Each of the cell's LoRAs by name, with its weight."""
        return {lora["name"]: lora["weight"] for lora in self.job.params.get("loras", [])}


@dataclass(frozen=True)
class Sweep:
    id: str
    cells: list[Cell]  # in job order: row by row
    strengths: tuple[float, ...]
    axis: SecondAxis | None
    rows: tuple[float, ...]
    lora: str = ""  # the LoRA whose weight the rows vary (axis lora_weight)

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
        if self.axis is SecondAxis.lora_weight:
            return cell.lora_weights[self.lora]
        return None

    @property
    def axis_label(self) -> str:
        """The rows' name in captions: "seed", "guidance", or "LoRA <name> weight"."""
        if self.axis is SecondAxis.lora_weight:
            return f"LoRA {self.lora} weight"
        return self.axis.value if self.axis is not None else ""

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
    varied = [name for name in cells[0].lora_weights if len({cell.lora_weights[name] for cell in cells}) > 1]
    lora = ""
    if len(seeds) > 1:
        axis, rows = SecondAxis.seed, seeds
    elif len(guidances) > 1:
        axis, rows = SecondAxis.guidance, guidances
    elif varied:
        lora = varied[0]  # a sweep varies one LoRA's weight (studio.sweeps.plan)
        axis, rows = SecondAxis.lora_weight, tuple(dict.fromkeys(cell.lora_weights[lora] for cell in cells))
    else:
        axis, rows = None, ()
    return Sweep(id=sweep_id, cells=cells, strengths=strengths, axis=axis, rows=rows, lora=lora)


# How much structure a cell kept
