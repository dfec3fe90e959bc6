"""`mmrobust predict`: sliding window and Gaussian weighting, TTA, export geometry and label
conventions, every modality subset of a tiny trained model, folder mode and bad inputs."""

from __future__ import annotations

import itertools
import logging
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from mmseg_robust.inference.export import probabilities_to_input_grid, regions_to_label, remove_small_et
from mmseg_robust.inference.inputs import InputError, find_input_cases
from mmseg_robust.inference.predictor import PredictionSettings, Predictor
from mmseg_robust.inference.sliding_window import (
    gaussian_importance,
    mirror_axes,
    sliding_window_predict,
    window_starts,
    with_mirroring,
)
from mmseg_robust.preprocessing.preprocessor import prepare_images, read_case_images

from mmseg_robust.data.labels import BRATS_2018, BRATS_2023, label_to_subregions, subregions_to_regions
from mmseg_robust.data.nifti_io import read_image

DATASET = "Tiny"
MODALITIES = ("flair", "t1", "t1ce", "t2")


# --------------------------------------------------------------------------- sliding window
def test_window_starts_cover_the_axis_with_the_requested_overlap() -> None:
    assert window_starts(10, 16, 0.5) == [0]
    assert window_starts(16, 16, 0.5) == [0]
    starts = window_starts(100, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(0 < b - a <= 16 for a, b in zip(starts, starts[1:]))


def test_gaussian_importance_peaks_in_the_centre_and_is_positive() -> None:
    g = gaussian_importance((9, 12))
    assert g.shape == (9, 12) and float(g.max()) == pytest.approx(1.0) and float(g.min()) > 0
    assert float(g[4, 5]) == pytest.approx(float(g[4, 6]))  # symmetric about the centre of an even axis
    sigma = 9 / 8
    assert float(g[0, 5]) / float(g[4, 5]) == pytest.approx(np.exp(-0.5 * (4 / sigma) ** 2), rel=1e-5)


@pytest.mark.parametrize("shape", [(20, 37, 29), (11, 13, 9)])
def test_pointwise_model_is_reproduced_exactly_at_borders_and_when_padded(shape) -> None:
    """A voxel-wise model: every window agrees, so the Gaussian-weighted mean must equal the model
    applied to the whole volume, including borders (weights normalised) and padded volumes."""
    torch.manual_seed(0)
    image = torch.randn((2,) + shape)

    def pointwise(windows: torch.Tensor) -> torch.Tensor:
        return torch.stack([windows[:, 0] * 2 - windows[:, 1], windows[:, 1] ** 2, windows.sum(1)], dim=1)

    result = sliding_window_predict(pointwise, image, (12, 16, 16), step=0.5, sw_batch=3)
    assert result.shape == (3,) + shape
    assert torch.allclose(result, pointwise(image[None])[0], atol=1e-5)


def test_overlapping_windows_are_blended_with_the_gaussian() -> None:
    """A model that returns its window's index as a constant: the result is the Gaussian-weighted
    average of the windows covering each voxel, computed here independently."""
    image = torch.zeros((1, 24))
    calls = []

    def constant(windows: torch.Tensor) -> torch.Tensor:
        out = []
        for _ in range(windows.shape[0]):
            calls.append(len(calls))
            out.append(torch.full((1, 16), float(len(calls) - 1)))
        return torch.stack(out)

    result = sliding_window_predict(constant, image, (16,), step=0.5, sw_batch=1)
    starts, g = window_starts(24, 16, 0.5), gaussian_importance((16,)).double()
    numerator, denominator = torch.zeros(24, dtype=torch.float64), torch.zeros(24, dtype=torch.float64)
    for index, start in enumerate(starts):
        numerator[start:start + 16] += index * g
        denominator[start:start + 16] += g
    assert torch.allclose(result[0].double(), numerator / denominator, atol=1e-6)


@pytest.mark.parametrize("shape, sw_batch", [((5, 37, 29), 3), ((4, 11, 20), 2)])
def test_2d_windows_batched_across_slices_equal_slice_by_slice(shape, sw_batch) -> None:
    """A 2D patch on a volume: the windows of every z slice are batched together (fuller batches,
    one buffer), and the result is what sliding over each slice on its own gives, padding included."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(4, 3, 3, padding=1))
    image = torch.randn((2,) + shape)
    sizes = []

    def predict(windows: torch.Tensor) -> torch.Tensor:
        sizes.append(windows.shape[0])
        return network(windows)

    with torch.no_grad():
        batched = sliding_window_predict(predict, image, (12, 16), step=0.5, sw_batch=sw_batch)
        batched_calls = len(sizes)
        by_slice = torch.stack([sliding_window_predict(predict, image[:, z], (12, 16), step=0.5, sw_batch=sw_batch)
                                for z in range(shape[0])], dim=1)
    assert batched.shape == (3,) + shape
    assert torch.allclose(batched, by_slice, atol=1e-6)
    assert batched_calls <= len(sizes) - batched_calls  # never more forward passes than slice by slice
    assert set(sizes[:batched_calls - 1]) == {sw_batch}  # every batch full but the last


def test_tta_is_the_mean_of_the_flipped_predictions() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(2, 3, 3, padding=1)
    windows = torch.randn(2, 2, 6, 7, 8)
    with torch.no_grad():
        mirrored = with_mirroring(conv, 3)(windows)
        expected = torch.stack([conv(windows.flip(a)).flip(a) if a else conv(windows) for a in mirror_axes(3)]).mean(0)
    assert len(mirror_axes(3)) == 8 and len(mirror_axes(2)) == 4
    assert torch.allclose(mirrored, expected, atol=1e-6)
    assert not torch.allclose(mirrored, conv(windows), atol=1e-3)  # mirroring changed something


# --------------------------------------------------------------------------- labels
def test_region_to_label_conversion_per_convention() -> None:
    regions = np.zeros((3, 1, 1, 4), dtype=bool)
    regions[0, 0, 0, 1:] = True  # WT
    regions[1, 0, 0, 2:] = True  # TC
    regions[2, 0, 0, 3] = True  # ET
    assert regions_to_label(regions, BRATS_2018).ravel().tolist() == [0, 2, 1, 4]
    assert regions_to_label(regions, BRATS_2023).ravel().tolist() == [0, 2, 1, 3]
    small = remove_small_et(regions, min_voxels=2)
    assert regions_to_label(small, BRATS_2018).ravel().tolist() == [0, 2, 1, 1]  # ET -> NCR
    assert remove_small_et(regions, min_voxels=1) is regions  # large enough: unchanged


# --------------------------------------------------------------------------- a tiny trained model
@pytest.fixture(scope="module")
def trained(tmp_path_factory, preprocessed_tiny_dataset, train_in_process) -> dict:
    root = tmp_path_factory.mktemp("predict")
    raw, env = preprocessed_tiny_dataset(root, DATASET, 4, ("3d_fullres",), seed=3)
    run = train_in_process(env, DATASET, iters_per_epoch=1, strategy="plain")
    assert run == root / "results" / DATASET / "3d_fullres__plain__weightedfusion" / "fold_0"
    return {"raw": raw, "env": env, "run": run, "root": root}


def test_every_subset_predicts_and_runs_only_its_branches(trained) -> None:
    predictor = Predictor.from_results([trained["run"]])
    case = find_input_cases(trained["raw"] / sorted(p.name for p in trained["raw"].iterdir() if p.is_dir())[0])[0]
    network = predictor.models[0].network
    for k in range(1, 5):
        for subset in itertools.combinations(MODALITIES, k):
            ran = []
            hooks = [network.stems[m].register_forward_hook(lambda *_a, m=m: ran.append(m)) for m in MODALITIES]
            result = predictor.predict_case(case, subset, settings=PredictionSettings(step=1.0))
            for hook in hooks:
                hook.remove()
            assert set(ran) == set(subset), subset
            assert result.label.shape == result.probabilities.shape[1:]
            assert set(np.unique(result.label)) <= {0, 1, 2, 4}


def test_geometry_round_trip_on_an_anisotropic_oblique_input(trained, tmp_path) -> None:
    """Non-identity direction, anisotropic spacing, odd origin: the output header equals the input's
    and a known tumour lands on the right voxels (an input whose labels the model must not move)."""
    source = next(p for p in sorted(trained["raw"].iterdir()) if p.is_dir())
    case_dir = tmp_path / "oblique_case"
    case_dir.mkdir()
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    for file in sorted(source.glob("*.nii.gz")):
        image = sitk.ReadImage(str(file))
        image.SetSpacing((1.2, 0.9, 2.5))
        image.SetOrigin((-91.5, 13.25, 7.0))
        image.SetDirection(direction)
        sitk.WriteImage(image, str(case_dir / file.name.replace(source.name, "oblique_case")))
    predictor = Predictor.from_results([trained["run"]])
    result = predictor.predict_case(find_input_cases(case_dir)[0], output_dir=tmp_path / "out",
                                    settings=PredictionSettings(step=1.0))
    written = sitk.ReadImage(str(tmp_path / "out" / "oblique_case.nii.gz"))
    reference = sitk.ReadImage(str(case_dir / "oblique_case_flair.nii.gz"))
    assert written.GetSize() == reference.GetSize()
    assert written.GetSpacing() == reference.GetSpacing() and written.GetOrigin() == reference.GetOrigin()
    assert written.GetDirection() == reference.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(written), result.label)
    # Outside the brain's bounding box (where the images are 0) nothing is ever predicted.
    flair = sitk.GetArrayFromImage(reference)
    z = np.nonzero(flair.any((1, 2)))[0]
    assert not result.label[: z[0]].any() and not result.label[z[-1] + 1:].any()


def test_api_folder_loop_skips_finished_cases_and_continues_past_a_failing_one(trained, tmp_path, caplog) -> None:
    """The folder loop is the API's: a notebook user gets the skip, the one-line log naming the
    failing case and the summary without the CLI."""
    partial = tmp_path / "partial"
    shutil.copytree(trained["raw"], partial)
    victim = sorted(p for p in partial.iterdir() if p.is_dir())[0]
    (victim / f"{victim.name}_t2.nii.gz").unlink()
    predictor, cases, out = Predictor.from_results([trained["run"]]), find_input_cases(partial), tmp_path / "out"
    settings = PredictionSettings(step=1.0)
    with caplog.at_level(logging.ERROR, logger="mmseg_robust.inference.predictor"):
        first = predictor.predict_cases(cases, ("t2",), out, settings, progress=False)
    assert (first.predicted, first.skipped, first.failed) == (3, 0, [victim.name])
    assert first.failures[victim.name].startswith(f"case {victim.name}: requested modality t2 not found in {victim}")
    assert [r.getMessage() for r in caplog.records] == [f"not predicted: {first.failures[victim.name]}"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert len(stamps) == 3 and f"{victim.name}.nii.gz" not in stamps
    again = predictor.predict_cases(cases, ("t2",), out, settings, progress=False)
    assert (again.predicted, again.skipped, again.failed) == (0, 3, [victim.name])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # finished cases left alone
    redone = predictor.predict_cases(cases, ("t2",), out, settings, overwrite=True, progress=False)
    assert (redone.predicted, redone.skipped) == (3, 0)


def test_tta_default_is_on_with_cuda_and_off_on_the_cpu(trained) -> None:
    """``tta=None`` is decided by the device in the API, as the CLI's --tta/--no-tta default is."""
    assert PredictionSettings().tta is None
    assert PredictionSettings().on("cpu").tta is False and PredictionSettings().on(torch.device("cuda")).tta is True
    assert PredictionSettings(tta=True).on("cpu").tta is True and PredictionSettings(tta=False).on("cuda").tta is False
    predictor = Predictor.from_results([trained["run"]])
    case = find_input_cases(next(p for p in sorted(trained["raw"].iterdir()) if p.is_dir()))[0]
    default, plain, mirrored = (predictor.predict_case(case, ("flair",), settings=PredictionSettings(step=1.0, tta=tta))
                                .probabilities for tta in (None, False, True))
    assert np.array_equal(default, plain) and not np.allclose(default, mirrored, atol=1e-4)


def test_cli_folder_mode_subsets_skip_and_errors(trained, run_cli, tmp_path) -> None:
    env, out = trained["env"], tmp_path / "out"
    model = ["-m", str(trained["run"])]
    first = run_cli("predict", "-i", str(trained["raw"]), "-o", str(out), *model, "--modalities", "t1,FLAIR", env=env)
    assert first.returncode == 0, first.stderr
    outputs = sorted(p.name for p in out.iterdir())
    assert len(outputs) == 4 and all(n.endswith(".nii.gz") for n in outputs)
    assert "4 predicted, 0 skipped" in first.stdout and "modalities: flair,t1" in first.stdout
    again = run_cli("predict", "-i", str(trained["raw"]), "-o", str(out), *model, env=env)
    assert again.returncode == 0 and "0 predicted, 4 skipped" in again.stdout
    by_name = run_cli("predict", "-i", str(trained["raw"]), "-o", str(tmp_path / "named"), "-d", DATASET,
                      "--strategy", "plain", "--modalities", "t1c", env=env)
    assert by_name.returncode == 0, by_name.stderr

    # A case lacking a requested modality fails by name; the others are still predicted.
    partial = tmp_path / "partial"
    shutil.copytree(trained["raw"], partial)
    victim = sorted(p for p in partial.iterdir() if p.is_dir())[0]
    (victim / f"{victim.name}_t2.nii.gz").unlink()
    missing = run_cli("predict", "-i", str(partial), "-o", str(tmp_path / "p_out"), *model, "--modalities", "t2",
                      env=env)
    assert missing.returncode == 1
    assert f"not predicted: case {victim.name}: requested modality t2 not found in {victim}" in missing.stderr
    assert f"3 predicted, 0 skipped (output exists), 1 failed ({victim.name})" in missing.stdout
    assert not (tmp_path / "p_out" / f"{victim.name}.nii.gz").exists()
    assert not [p for p in (tmp_path / "p_out").iterdir() if p.name.startswith(".")]  # no temp left

    unknown = run_cli("predict", "-i", str(partial), "-o", str(tmp_path / "u"), *model, "--modalities", "pd", env=env)
    assert unknown.returncode == 1 and "--modalities: unknown modality 'pd'" in unknown.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run_cli("predict", "-i", str(empty), "-o", str(tmp_path / "e"), *model, env=env)
    assert nothing.returncode == 1 and nothing.stderr.strip() == (
        f"Error: {empty}: no NIfTI images found (expected a case folder or a folder of case folders)")


def test_bad_case_files_give_one_line_errors(trained, run_cli, tmp_path) -> None:
    env, model = trained["env"], ["-m", str(trained["run"])]
    source = next(p for p in sorted(trained["raw"].iterdir()) if p.is_dir())
    shifted = tmp_path / "shifted" / "case"
    shutil.copytree(source, shifted)
    for file in shifted.iterdir():
        file.rename(shifted / file.name.replace(source.name, "case"))
    t1 = sitk.ReadImage(str(shifted / "case_t1.nii.gz"))
    t1.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(t1, str(shifted / "case_t1.nii.gz"))
    result = run_cli("predict", "-i", str(shifted), "-o", str(tmp_path / "o1"), *model, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"case case: {shifted / 'case_t1.nii.gz'}: geometry differs" in result.stderr
    corrupt = tmp_path / "corrupt" / "case"
    shutil.copytree(shifted, corrupt)
    (corrupt / "case_t1.nii.gz").write_bytes(b"not a nifti file")
    broken = run_cli("predict", "-i", str(corrupt), "-o", str(tmp_path / "o2"), *model, env=env)
    assert broken.returncode == 1 and str(corrupt / "case_t1.nii.gz") in broken.stderr
    assert not (tmp_path / "o2" / "case.nii.gz").exists()


def test_export_round_trip_puts_a_known_tumour_on_its_voxels(trained, tmp_path) -> None:
    """Without the network: the reference label, carried through the same crop (and the plans'
    grid) that prediction uses and exported back, lands exactly on the input's voxels, on an
    oblique, anisotropic input."""
    plans = Predictor.from_results([trained["run"]]).plans
    source = next(p for p in sorted(trained["raw"].iterdir()) if p.is_dir())
    case = find_input_cases(source)[0]
    raw, geometry = read_case_images(case.case_id, case.images, case.modalities)
    label, _ = read_image(source / f"{source.name}_seg.nii.gz")
    codes = label_to_subregions(label, BRATS_2018)
    prepared = prepare_images(raw, case.modalities, geometry, plans, codes, case.case_id)
    probabilities = subregions_to_regions(prepared.codes).astype(np.float32)
    back = probabilities_to_input_grid(probabilities, prepared) > 0.5
    assert np.array_equal(regions_to_label(back, BRATS_2018), label)


def test_nnunet_channel_files_map_through_dataset_json(tmp_path) -> None:
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    image = sitk.Image(8, 8, 8, sitk.sitkInt16)
    for case in ("A", "B"):
        for channel in range(4):
            sitk.WriteImage(image, str(folder / f"{case}_{channel:04d}.nii.gz"))
    with pytest.raises(InputError, match="need a dataset.json with channel_names"):
        find_input_cases(folder)
    (tmp_path / "dataset.json").write_text('{"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"}}')
    cases = find_input_cases(folder)
    assert [c.case_id for c in cases] == ["A", "B"]
    assert cases[0].images["flair"].name == "A_0003.nii.gz" and cases[0].images["t1"].name == "A_0000.nii.gz"


def test_folds_average_and_extras_and_refusals(trained, run_cli, tmp_path) -> None:
    env = trained["env"]
    case_dir = next(p for p in sorted(trained["raw"].iterdir()) if p.is_dir())
    single = Predictor.from_results([trained["run"]]).predict_case(find_input_cases(case_dir)[0])
    double = Predictor.from_results([trained["run"], trained["run"]]).predict_case(find_input_cases(case_dir)[0])
    assert np.allclose(single.probabilities, double.probabilities, atol=1e-6)  # the mean of identical folds
    out = tmp_path / "extras"
    result = run_cli("predict", "-i", str(case_dir), "-o", str(out), "-m", str(trained["run"]), "--save-probabilities",
                     "--png", "--et-min-voxels", "100000", env=env)
    assert result.returncode == 0, result.stderr
    stored = np.load(out / f"{case_dir.name}.npz")
    assert stored["probabilities"].shape == (3,) + single.label.shape and list(stored["regions"]) == ["WT", "TC", "ET"]
    assert (out / f"{case_dir.name}.png").read_bytes()[:4] == b"\x89PNG"
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case_dir.name}.nii.gz")))
    assert not (label == 4).any()  # every predicted ET is below 100000 voxels: relabelled NCR
    neither = run_cli("predict", "-i", str(case_dir), "-o", str(tmp_path / "n"), env=env)
    assert neither.returncode == 1 and "no model: give -m RESULTS_DIR or -d NAME -c CONFIG -f FOLD" in neither.stderr
    absent = run_cli("predict", "-i", str(case_dir), "-o", str(tmp_path / "n"), "-d", DATASET, "-f", "3", env=env)
    assert absent.returncode == 1 and "Traceback" not in absent.stderr and "fold_3" in absent.stderr
