"""Where mmrobust keeps raw data, preprocessed data and results, and how dataset names resolve."""

from __future__ import annotations

import os
from pathlib import Path

from mmseg_robust.errors import ConfigurationError, DatasetError

#: Environment variable and CLI flag of each data folder.
FOLDER_VARIABLES: dict[str, tuple[str, str]] = {
    "raw": ("MMROBUST_RAW", "--raw"),
    "preprocessed": ("MMROBUST_PREPROCESSED", "--preprocessed"),
    "results": ("MMROBUST_RESULTS", "--results"),
}

#: Folder names of the official downloads, tried when ``<raw>/<name>`` does not exist.
DATASET_ALIASES: dict[str, tuple[str, ...]] = {
    "brats2018": ("MICCAI_BraTS_2018_Data_Training",),
    "brats2019": ("MICCAI_BraTS_2019_Data_Training",),
    "brats2020": ("MICCAI_BraTS2020_TrainingData",),
    "brats2021": ("RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021", "BraTS2021_Training_Data"),
    "brats2023": ("ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData",),
}


def data_folder(kind: str, override: str | os.PathLike[str] | None = None) -> Path:
    """Return the ``raw``/``preprocessed``/``results`` base folder: the flag, else the variable."""
    variable, flag = FOLDER_VARIABLES[kind]
    value = override if override is not None else os.environ.get(variable)
    if not value:
        raise ConfigurationError(
            f"{variable} is not set: export {variable}=/path/to/{kind} or pass {flag} PATH")
    return Path(value).expanduser()


def resolve_raw_dataset(name: str, raw: str | os.PathLike[str] | None = None) -> Path:
    """Resolve a dataset name to its raw folder under ``$MMROBUST_RAW`` (or ``raw``).

    ``name`` may also be a path to the dataset folder itself. ``BraTS2018`` also finds the
    official download's folder name (``MICCAI_BraTS_2018_Data_Training``).
    """
    as_path = Path(name).expanduser()
    if (os.sep in name or as_path.is_absolute()) and as_path.is_dir():
        return as_path
    base = data_folder("raw", raw)
    candidates = [base / name] + [base / alias for alias in DATASET_ALIASES.get(name.lower(), ())]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetError(f"{base / name}: dataset folder does not exist "
                       f"(looked for {', '.join(c.name for c in candidates)} in {base})")
