"""Quality-control figures: central slices of each modality with the tumour labels overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from mmseg_robust.atomic import atomic_output
from mmseg_robust.data.labels import LabelConvention
from mmseg_robust.data.modalities import MODALITIES, MODALITY_SHORT_NAMES

#: Overlay colours of the sub-regions, as BraTS figures usually draw them.
SUBREGION_COLOURS: dict[str, str] = {"edema": "#2ca02c", "ncr": "#d62728", "et": "#ffd700"}


def _tumour_slice(label: np.ndarray | None, axis_length: int) -> int:
    """Axial index through the tumour's centre of mass, or the volume's centre without one."""
    if label is None or not np.any(label):
        return axis_length // 2
    return int(round(np.argwhere(label > 0)[:, 0].mean()))


def save_case_overview(images: Mapping[str, np.ndarray], label: np.ndarray | None,
                       convention: LabelConvention, path: str | Path, title: str = "") -> Path:
    """Draw one axial slice per modality (z-y-x arrays), plain and with the labels overlaid.

    The slice goes through the tumour's centre of mass (the volume's centre without a label or a
    tumour); each slice is windowed to the 0.5-99.5 percentiles of its positive voxels. Drawn without
    pyplot, so it needs no display and leaves no global figure state.

    Args:
        images: modality -> array (z, y, x), all on one grid; drawn in canonical modality order.
        label: the label map on that grid, or None for the images alone (one row instead of two).
        convention: the label values of ``label`` (which value is edema, NCR, ET).
        path: the image file; its suffix picks the format (``.png``).
        title: the figure's title, before the slice number.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DiskFullError: no space left for the file (nothing partial is kept).
    """
    present = [m for m in MODALITIES if m in images]
    z = _tumour_slice(label, next(iter(images.values())).shape[0])
    rows = 2 if label is not None else 1
    # The object-oriented API needs no pyplot state or display backend.
    figure = Figure(figsize=(3 * len(present), 3 * rows))
    axes = figure.subplots(rows, len(present), squeeze=False)
    overlay = None
    if label is not None:
        codes = np.zeros(label.shape[1:], dtype=np.int8)
        for code, sub_region in enumerate(("edema", "ncr", "et"), start=1):
            codes[label[z] == getattr(convention, sub_region)] = code
        overlay = np.ma.masked_equal(codes, 0)
    colours = ListedColormap([SUBREGION_COLOURS[k] for k in ("edema", "ncr", "et")])
    for column, modality in enumerate(present):
        plane = images[modality][z]
        low, high = np.percentile(plane[plane > 0], (0.5, 99.5)) if np.any(plane > 0) else (0, 1)
        for row in range(rows):
            axis = axes[row, column]
            axis.imshow(plane, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if row == 1 and overlay is not None:
                axis.imshow(overlay, cmap=colours, vmin=1, vmax=3, alpha=0.5, interpolation="nearest")
            axis.set_axis_off()
        axes[0, column].set_title(MODALITY_SHORT_NAMES[modality])
    if overlay is not None:
        axes[1, 0].text(0.02, 0.02, "ED green, NCR red, ET yellow", color="white", fontsize=8,
                        transform=axes[1, 0].transAxes)
    figure.suptitle(f"{title} (axial slice {z})".strip())
    figure.tight_layout()
    target = Path(path)
    with atomic_output(target) as tmp:
        figure.savefig(tmp, dpi=100, format=target.suffix.lstrip(".") or "png")
    return target
