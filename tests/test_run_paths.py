"""One rule for a run's results folder: what training writes is what predict and evaluate read."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmseg_robust.cli.options import resolve_model_dirs
from mmseg_robust.errors import ConfigurationError
from mmseg_robust.runs.config import TrainingConfig
from mmseg_robust.runs.paths import RunFolderError, resolve_run_folders, run_folder


@pytest.mark.parametrize("model, strategy, fusion", [
    ("ds", None, None), ("ds", "gmd", "mean"), ("ds", "gmd+cggm", "weighted"), ("early_fusion", None, None),
])
def test_train_writes_where_predict_and_evaluate_read(tmp_path, model, strategy, fusion) -> None:
    """The same flags give the same folder, whichever command reads them; the defaults agree."""
    trained = TrainingConfig("D", "2d", 3, model=model, strategy=strategy, fusion=fusion).output_dir(tmp_path)
    # predict/evaluate's flags: their --strategy/--fusion have defaults, train's are None (the config decides).
    flag_strategy = strategy or "plain"
    flag_fusion = fusion or "weighted"
    read = resolve_model_dirs((), "D", "2d", (3,), flag_strategy, model, flag_fusion, str(tmp_path))
    assert read == [trained] == resolve_run_folders(None, "D", "2d", [3], model, strategy, fusion, tmp_path)
    assert trained == run_folder(tmp_path, "D", "2d", 3, model, strategy, fusion)


def test_run_folders_are_named_one_way_or_the_other(tmp_path) -> None:
    assert resolve_run_folders(None, "D", "3d_fullres", results=tmp_path) == [
        tmp_path / "D" / "3d_fullres__plain__weightedfusion" / "fold_0"]
    assert resolve_run_folders(["a", "b"], None, "2d") == [Path("a"), Path("b")]
    with pytest.raises(RunFolderError, match="^give either model_dirs or dataset/configuration/folds, not both$"):
        resolve_run_folders(["a"], "D", "2d")
    with pytest.raises(RunFolderError, match="^no model: give model_dirs or dataset/configuration/folds$"):
        resolve_run_folders((), None, "2d")
    # The command line names its flags.
    with pytest.raises(ConfigurationError, match=r"^give either -m RESULTS_DIR or -d NAME -c CONFIG -f FOLD, not"):
        resolve_model_dirs(("a",), "D", "2d", (), "plain", "ds", "weighted", None)
