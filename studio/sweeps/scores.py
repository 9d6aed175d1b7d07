"""How much of the source's structure a result kept: SSIM of the luminance and the F1 of edge maps
(numpy, scikit-image; no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


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
