"""An independent implementation of the two lesion-wise conventions, to check mmrobust's against.

Written from the official texts, sharing no code with ``mmseg_robust.evaluation.lesions``:
connected components from ``cc3d`` (what both official tools use), the 2023 script's loop
structure (lesions combined through the dilated mask, then each lesion dilated again for
matching), surface-element HD95 from MONAI's sub-voxel edges (``get_mask_edges`` with a
spacing), and for the 2024 package panoptica's rules (Hungarian matching on 1 - Dice, mean over
the matched pairs). Slow by design: it follows the texts, not speed.
"""

from __future__ import annotations

import math

import cc3d
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

CAP_2023, CAP_2024 = 374.0, 373.0


def surface_element_hd95(reference: np.ndarray, prediction: np.ndarray, spacing) -> float:
    """MONAI's sub-voxel surfaces, area-weighted 95th percentile, larger direction; inf if one is empty."""
    import torch
    from monai.metrics.utils import get_mask_edges, get_surface_distance

    if not prediction.any() or not reference.any():
        return math.inf
    spacing = tuple(float(s) for s in spacing)
    edges_p, edges_r, areas_p, areas_r = (np.asarray(x) for x in get_mask_edges(
        torch.as_tensor(prediction), torch.as_tensor(reference), spacing=spacing))

    def percentile(distances, areas):
        order = np.argsort(distances, kind="stable")
        cumulative = np.cumsum(areas[order]) / areas.sum()
        return distances[order][min(np.searchsorted(cumulative, 0.95), len(order) - 1)]

    r_to_p = percentile(np.asarray(get_surface_distance(edges_r, edges_p, "euclidean", spacing)), areas_r[edges_r])
    p_to_r = percentile(np.asarray(get_surface_distance(edges_p, edges_r, "euclidean", spacing)), areas_p[edges_p])
    return float(max(r_to_p, p_to_r))


def pooled_hd95(reference: np.ndarray, prediction: np.ndarray, spacing) -> float:
    """panoptica's HD95: borders = mask XOR its 6-connectivity erosion, pooled 95th percentile."""
    structure = ndimage.generate_binary_structure(3, 1)
    border_r = reference ^ ndimage.binary_erosion(reference, structure)
    border_p = prediction ^ ndimage.binary_erosion(prediction, structure)
    d_r = ndimage.distance_transform_edt(~border_p, sampling=spacing)[border_r]
    d_p = ndimage.distance_transform_edt(~border_r, sampling=spacing)[border_p]
    return float(np.percentile(np.hstack([d_r, d_p]), 95))


def brats2023(prediction: np.ndarray, reference: np.ndarray, spacing=(1.0, 1.0, 1.0), dilation: int = 3,
              threshold: float = 50.0) -> tuple[float, float, int, int, int]:
    """(Dice, HD95, TP, FP, FN) by the 2023 script's rules (glioma parameters)."""
    reference_cc = cc3d.connected_components(reference.astype(np.uint8), connectivity=26)
    prediction_cc = cc3d.connected_components(prediction.astype(np.uint8), connectivity=26)
    structure = ndimage.generate_binary_structure(3, 2)
    dilated_cc = cc3d.connected_components(
        ndimage.binary_dilation(reference, structure, iterations=dilation).astype(np.uint8), connectivity=26)
    combined = np.zeros_like(dilated_cc)
    for component in range(1, int(dilated_cc.max()) + 1):
        combined[((dilated_cc == component) * reference_cc) > 0] = component
    matched_any, rows = [], []
    for lesion in range(1, int(combined.max()) + 1):
        lesion_mask = combined == lesion
        around = ndimage.binary_dilation(lesion_mask, structure, iterations=dilation)
        hits = np.unique(prediction_cc[around])
        hits = hits[hits != 0]
        matched_any += hits.tolist()
        matched = np.isin(prediction_cc, hits)
        dice = 2 * np.sum(matched & lesion_mask) / (matched.sum() + lesion_mask.sum())
        hd = surface_element_hd95(lesion_mask, matched, spacing)
        rows.append((len(hits), lesion_mask.sum() * np.prod(spacing), dice, CAP_2023 if math.isinf(hd) else hd))
    false_positives = set(np.unique(prediction_cc).tolist()) - set(matched_any) - {0}
    kept = [row for row in rows if row[1] > threshold]
    denominator = len(kept) + len(false_positives)
    counts = (sum(1 for r in kept if r[0]), len(false_positives), sum(1 for r in kept if not r[0]))
    if denominator == 0:
        return (1.0, 0.0, *counts)
    return (sum(r[2] for r in kept) / denominator,
            (sum(r[3] for r in kept) + CAP_2023 * len(false_positives)) / denominator, *counts)


def brats2024(prediction: np.ndarray, reference: np.ndarray, spacing=(1.0, 1.0, 1.0)
              ) -> tuple[float, float, int, int, int]:
    """(Dice, HD95, TP, FP, FN) by panoptica's rules under the BraTS glioma config."""
    reference_cc, n_r = cc3d.connected_components(reference.astype(np.uint8), connectivity=26, return_N=True)
    prediction_cc, n_p = cc3d.connected_components(prediction.astype(np.uint8), connectivity=26, return_N=True)
    if n_r == 0 and n_p == 0:
        return (math.nan, math.nan, 0, 0, 0)
    cost = np.full((n_r, n_p), 1.0 + 1e-6)
    for r in range(1, n_r + 1):
        for p in range(1, n_p + 1):
            a, b = reference_cc == r, prediction_cc == p
            dice = 2 * np.sum(a & b) / (a.sum() + b.sum())
            if dice >= 1e-6:
                cost[r - 1, p - 1] = 1 - dice
    pairs = [(r + 1, p + 1) for r, p in zip(*linear_sum_assignment(cost)) if cost[r, p] < 1] if n_r and n_p else []
    if not pairs:
        return (0.0, CAP_2024, 0, n_p, n_r)
    dices = [1 - cost[r - 1, p - 1] for r, p in pairs]
    hds = [pooled_hd95(reference_cc == r, prediction_cc == p, spacing) for r, p in pairs]
    return (float(np.mean(dices)), float(np.mean(hds)), len(pairs), n_p - len(pairs), n_r - len(pairs))
