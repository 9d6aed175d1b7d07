"""Planning a strength sweep: strengths across, an optional second axis (seed, guidance or one LoRA's weight) down,
one request per cell. Each cell is its own job (priced, charged and refunded on its own); the cells share a sweep_id,
so a worker runs them in one denoising pass (pipelines.sweep). Adapters are set on the whole model, so cells with
different LoRA weights cannot share a pass: each weight's row runs as a pass of its own. An edit has no strength: its
sweep is one column (the edit's strength, EDIT_SWEEP) down its seeds, guidance scales or LoRA weights, run cell
after cell.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from pipelines.params import LIMITS, MAX_GUIDANCE, MAX_SEED, MAX_SWEEP_MEMBERS, Task
from studio.catalogue.requests import JobRequest
from studio.config import Settings
from studio.errors import Refused
from studio.jobs.submit import quote


class SecondAxis(StrEnum):
    seed = "seed"
    guidance = "guidance"
    lora_weight = "lora_weight"  # the weight of one of the request's LoRAs (SweepPlan.lora)

    @property
    def label(self) -> str:
        return "LoRA weight" if self is SecondAxis.lora_weight else self.value


# The one "strength" column of an editor's sweep (pipelines.edit.EDIT_STRENGTH: every step runs).
EDIT_SWEEP = (1.0,)


@dataclass(frozen=True)
class SweepPlan:
    strengths: tuple[float, ...]  # the columns
    axis: SecondAxis | None = None  # the rows, if any
    values: tuple[float, ...] = ()  # seeds, guidance scales or LoRA weights, one per row
    lora: str = ""  # the LoRA whose weight the lora_weight axis varies

    @property
    def cells(self) -> int:
        return len(self.strengths) * max(1, len(self.values))


def strength_range(start: float, stop: float, step: float) -> tuple[float, ...]:
    """start, start + step, … up to stop (included when the steps land on it), rounded to 3 decimals."""
    if step <= 0:
        raise Refused(f"The strength step must be more than 0, got {step}.")
    if not 0 < start <= stop <= 1:
        raise Refused(f"Strengths go from a start to a stop within (0, 1], got {start} to {stop}.")
    count = int(round((stop - start) / step, 9)) + 1
    if count > MAX_SWEEP_MEMBERS:
        raise Refused(f"{count} strengths is more than a sweep's {MAX_SWEEP_MEMBERS} cells; use a larger step.")
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
            raise Refused(f"{what}: {part.strip()!r} is not a number.") from None
        if value not in values:
            values.append(value)
    if not values:
        raise Refused(f"{what}: give at least one value.")
    return tuple(values)


def check_plan(plan: SweepPlan) -> None:
    if plan.cells > MAX_SWEEP_MEMBERS:
        raise Refused(f"This sweep has {plan.cells} cells; the most is {MAX_SWEEP_MEMBERS}.")
    for strength in plan.strengths:
        if not 0 < strength <= 1:
            raise Refused(f"Strengths are between 0 and 1, got {strength}.")
    if (plan.axis is None) != (not plan.values):
        raise Refused("A second axis needs its values, and values need an axis.")
    for value in plan.values:
        if plan.axis is SecondAxis.seed and not (value == int(value) and 0 <= value <= MAX_SEED):
            raise Refused(f"Seeds are whole numbers from 0 to {MAX_SEED}, got {value:g}.")
        if plan.axis is SecondAxis.guidance and not 0 <= value <= MAX_GUIDANCE:
            raise Refused(f"Guidance is between 0 and {MAX_GUIDANCE:g}, got {value:g}.")
        low, high = LIMITS["lora_weight"]
        if plan.axis is SecondAxis.lora_weight and not low <= value <= high:
            raise Refused(f"LoRA weights are between {low:g} and {high:g}, got {value:g}.")
    if (plan.axis is SecondAxis.lora_weight) != bool(plan.lora):
        raise Refused("A LoRA-weight axis names the LoRA it varies (and only that axis names one).")


def sweep_cells(request: JobRequest, plan: SweepPlan) -> list[JobRequest]:
    """One request per cell, row by row: the base request with the cell's strength (and seed, guidance or the weight
    of the LoRA `plan.lora`)."""
    check_plan(plan)
    if request.task not in (Task.img2img, Task.inpaint, Task.edit) or request.spec.control is not None:
        raise Refused(
            "Sweeps run image-to-image and inpainting without structure guidance; turn ControlNet off or pick "
            "another style."
        )
    if request.task == Task.edit and (plan.strengths != EDIT_SWEEP or request.references):
        raise Refused(
            "An edit's sweep varies seeds, guidance or a LoRA's weight (an edit has no strength), without reference "
            "images."
        )
    if plan.lora and plan.lora not in [lora.name for lora in request.loras]:
        raise Refused(f"The LoRA-weight axis varies {plan.lora!r}: add that LoRA to the run first.")
    rows = plan.values or (None,)
    cells = []
    for row in rows:
        for strength in plan.strengths:
            params = replace(request.spec.params, strength=strength)
            if plan.axis is SecondAxis.seed:
                params = replace(params, seed=int(row))
            elif plan.axis is SecondAxis.guidance:
                params = replace(params, guidance=float(row))
            cell = replace(request, spec=replace(request.spec, params=params))
            if plan.axis is SecondAxis.lora_weight:
                weight = float(row)
                cell = replace(
                    cell, loras=tuple(replace(lo, weight=weight) if lo.name == plan.lora else lo for lo in cell.loras)
                )
            cells.append(cell)
    return cells


def sweep_cost(*, settings: Settings, cells: list[JobRequest], width: int, height: int) -> int:
    """What the whole sweep costs: the sum of its cells' prices (each cell is charged as the run it is, whether it
    shares a pass or runs in one of its own; a LoRA's weight does not change a price)."""
    return sum(quote(settings=settings, request=cell, width=width, height=height).credits for cell in cells)


# Reading a sweep back
