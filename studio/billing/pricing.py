"""What a job costs, in whole credits, shown before submit and charged at submit.

cost = ceil(base × quality multiplier × high-resolution surcharge). The multipliers are exact
fractions and the result is rounded up once, so the same request always costs the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from pipelines.params import output_size, upscale_source_size
from studio.config import PREVIEW_MODEL, Settings

# Basic models cost 1–2 credits a run, advanced ones 3–5 (the style catalogue sets them per style).
PREVIEW_MODEL_COST = 1
DEFAULT_MODEL_COST = 2
HIGH_RES_LONG_SIDE = 1024
HIGH_RES_SURCHARGE = Fraction(3, 2)


class Quality(StrEnum):
    standard = "standard"
    high = "high"
    ultra = "ultra"


@dataclass(frozen=True)
class QualityTier:
    label: str
    steps: int  # the default schedule length
    max_steps: int  # what this tier pays for; more steps need a higher tier
    multiplier: Fraction


QUALITY_TIERS: dict[Quality, QualityTier] = {
    Quality.standard: QualityTier("Standard", 20, 25, Fraction(1)),
    Quality.high: QualityTier("High", 30, 40, Fraction(3, 2)),
    Quality.ultra: QualityTier("Ultra", 50, 60, Fraction(2)),
}


@dataclass(frozen=True)
class Price:
    credits: int
    base: int
    quality: Quality
    high_res: bool

    def explain(self) -> str:
        parts = [f"{self.base} base", f"× {QUALITY_TIERS[self.quality].multiplier} {self.quality.value}"]
        if self.high_res:
            parts.append(f"× {HIGH_RES_SURCHARGE} high resolution (> {HIGH_RES_LONG_SIDE} px)")
        return " ".join(parts) + f", rounded up = {self.credits} credit{'s' if self.credits != 1 else ''}"


def base_cost(model: str, configured_cost: int | None = None) -> int:
    if configured_cost is not None:
        return configured_cost
    return PREVIEW_MODEL_COST if model == PREVIEW_MODEL else DEFAULT_MODEL_COST


def configured_model_credits(settings: Settings) -> int:
    """Base credits per run of the configured model (STUDIO_MODEL): STUDIO_MODEL_COST, or by kind."""
    return base_cost(settings.model, settings.model_cost)


def price(
    *, base: int, quality: Quality, width: int, height: int, max_side: int, upscale_factor: int | None = None
) -> Price:
    """The price of one run on a source of width×height (the result's size decides high resolution).

    An upscale's result is `upscale_factor` times the source (its sides rounded down to what the upscaler
    takes); any other run's is the source fitted to max_side.
    """
    if upscale_factor is None:
        out_width, out_height = output_size(width, height, max_side)
    else:
        source_width, source_height = upscale_source_size(width, height, upscale_factor)
        out_width, out_height = source_width * upscale_factor, source_height * upscale_factor
    high_res = max(out_width, out_height) > HIGH_RES_LONG_SIDE
    amount = base * QUALITY_TIERS[quality].multiplier * (HIGH_RES_SURCHARGE if high_res else 1)
    return Price(credits=math.ceil(amount), base=base, quality=quality, high_res=high_res)
