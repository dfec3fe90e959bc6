"""`mmrobust evaluate` with tiny trained models: one pass per modality equals predicting every
subset on its own, early fusion predicts per subset, the CLI's report files, reuse of predictions."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from mmseg_robust.inference.export import probabilities_to_input_grid
from mmseg_robust.inference.inputs import find_input_cases
from mmseg_robust.inference.predictor import PredictionSettings, Predictor
from mmseg_robust.preprocessing.preprocessor import prepare_images, read_case_images

from mmseg_robust.data.nifti_io import read_image
from mmseg_robust.evaluation.cases import EvaluationCase
from mmseg_robust.evaluation.evaluate import evaluate_model
from mmseg_robust.evaluation.subset_prediction import PredictionStore, SubsetPredictor, evaluation_subsets
from mmseg_robust.evaluation.summary import EvaluationSummary

DATASET = "EvalTiny"
MODALITIES = ("flair", "t1", "t1ce", "t2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, preprocessed_tiny_dataset, train_in_process) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    raw, env = preprocessed_tiny_dataset(root, DATASET, 5, ("3d_fullres", "2d"), seed=5)
    env = {**env, "MMROBUST_RAW": str(raw.parent)}
    fast = {"optimizer": "adam", "learning_rate": 1e-2}
    mean = {"strategy": "plain", "fusion": "mean"}  # the mean fusion's linearity is what is tested
    return {"raw": raw, "env": env, "root": root,
            "ds3d": train_in_process(env, DATASET, "3d_fullres", **mean, **fast),
            "ds2d": train_in_process(env, DATASET, "2d", **mean, **fast),
            "ef": train_in_process(env, DATASET, "3d_fullres", model="early_fusion", **fast),
            "dsw": train_in_process(env, DATASET, "2d", strategy="plain", fusion="weighted", **fast),
            "dsg": train_in_process(env, DATASET, "2d", strategy="plain", fusion="gated", **fast)}


def _first_case(raw):
    return find_input_cases(next(p for p in sorted(raw.iterdir()) if p.is_dir()))[0]


@pytest.mark.parametrize("run, tta", [("ds3d", True), ("ds2d", False)])
def test_branch_logits_average_to_every_subsets_logits(runs, run, tta, single_torch_thread) -> None:
    """docs/design.md §9: sliding windows, Gaussian weights and mirroring are linear, so the mean of the
    per-modality passes is each subset's own pass."""
    predictor = Predictor.from_results([runs[run]])
    settings = PredictionSettings(step=0.5, tta=tta)
    case = _first_case(runs["raw"])
    raw, geometry = read_case_images(case.case_id, case.images, MODALITIES)
    channels, _ = predictor.input_channels(prepare_images(raw, MODALITIES, geometry, predictor.plans))
    model = predictor.models[0]
    branches = {m: predictor.model_logits(model, channels, (m,), settings) for m in MODALITIES}
    for k in range(2, 5):
        for subset in itertools.combinations(MODALITIES, k):
            direct = predictor.model_logits(model, channels, subset, settings)
            assert torch.allclose(torch.stack([branches[m] for m in subset]).mean(0), direct, atol=1e-5), subset
    assert not torch.allclose(branches["flair"], branches["t1"], atol=1e-3)  # the branches differ


@pytest.mark.parametrize("run, tta", [("dsw", False), ("dsg", True)])
def test_learned_fusions_share_branch_passes_exactly(runs, run, tta, tmp_path, single_torch_thread) -> None:
    """A learned per-region weighting is still linear in the branch logits, and a gated fusion's
    accumulated numerator and denominator add over the modalities: the shared pass fuses the
    per-modality maps with the network's own weights and writes what predicting each subset on its
    own writes (the gated one with mirroring too)."""
    predictor = Predictor.from_results([runs[run]])
    network = predictor.models[0].network
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # weights far from the mean (and gates that vary), so that a plain mean would differ
        for param in network.fusion.parameters():
            param.copy_(3 * torch.randn(param.shape, generator=generator))
    settings = PredictionSettings(step=0.5, tta=tta)
    case = _first_case(runs["raw"])
    raw, geometry = read_case_images(case.case_id, case.images, MODALITIES)
    channels, _ = predictor.input_channels(prepare_images(raw, MODALITIES, geometry, predictor.plans))
    branches = predictor.branch_logits(channels, MODALITIES, settings)
    own = {m: predictor.model_logits(predictor.models[0], channels, (m,), settings) for m in MODALITIES}
    for subset in (("flair", "t1ce"), ("t1", "t1ce", "t2"), MODALITIES):
        direct = predictor.model_logits(predictor.models[0], channels, subset, settings)
        fused = predictor.fuse_branches(branches, subset)[0]
        assert torch.allclose(fused, direct, atol=1e-5), subset
        assert not torch.allclose(torch.stack([own[m] for m in subset]).mean(0), direct, atol=1e-3)
    subset_predictor = SubsetPredictor(predictor, settings, "shared")
    subsets = evaluation_subsets("T1c,Fl.;~Fl.;Full", predictor.modalities)
    store = PredictionStore(tmp_path, subset_predictor.describe())
    written = subset_predictor.predict(case, subsets, store)
    for subset in subsets:
        expected = predictor.predict_case(case, subset.modalities, settings=settings).label
        assert np.array_equal(read_image(store.path(subset, case.case_id))[0], expected), subset.name
        assert np.array_equal(written[subset.name], expected), subset.name


def test_shared_pass_hands_branch_logits_to_the_predictors_export(runs, single_torch_thread) -> None:
    """One predict pipeline: fused branch logits go through the same ``export`` as ``predict_case``
    (probabilities, input grid, label), which labels on the crop and makes the input-grid
    probabilities only when they are kept."""
    predictor = Predictor.from_results([runs["ds2d"]])
    settings = PredictionSettings(step=0.5)
    case = _first_case(runs["raw"])
    _, _, prepared = predictor.prepare(case)
    channels, _ = predictor.input_channels(prepared)
    branches = predictor.branch_logits(channels, MODALITIES, settings)
    for subset in (("t1",), ("flair", "t2"), MODALITIES):
        probabilities = predictor.mean_probabilities(predictor.fuse_branches(branches, subset))
        exported = predictor.export(case.case_id, subset, probabilities, prepared, keep_probabilities=False)
        direct = predictor.predict_case(case, subset, settings=settings)
        assert exported.probabilities is None and exported.modalities == direct.modalities == subset
        assert np.array_equal(exported.label, direct.label), subset
        assert np.allclose(probabilities_to_input_grid(probabilities, prepared), direct.probabilities, atol=1e-5)


@pytest.mark.parametrize("run", ["ds3d", "ef"])
def test_shared_protocol_writes_what_predict_writes(runs, run, tmp_path, single_torch_thread) -> None:
    """On BraTS-like data, where every modality has the same brain mask, the shared protocol's label
    maps equal `predict --modalities` for every subset; early fusion takes one pass per subset."""
    predictor = Predictor.from_results([runs[run]])
    settings = PredictionSettings(step=0.5)
    subset_predictor = SubsetPredictor(predictor, settings, "shared")
    assert subset_predictor.shares_branch_passes == (run == "ds3d")
    subsets = evaluation_subsets("all", predictor.modalities)
    store = PredictionStore(tmp_path, subset_predictor.describe())
    case = _first_case(runs["raw"])
    written = subset_predictor.predict(case, subsets, store)
    assert len(written) == 15 and store.missing(subsets, case.case_id) == []
    for subset in subsets:
        label, _ = read_image(store.path(subset, case.case_id))
        expected = predictor.predict_case(case, subset.modalities, settings=settings).label
        assert np.array_equal(label, expected) and np.array_equal(written[subset.name], label), subset.name


def test_evaluate_cli_report_and_reuse(runs, run_cli, tmp_path, paper_columns) -> None:
    env, out = runs["env"], tmp_path / "report"
    case_list = tmp_path / "cases.txt"
    ids = sorted(p.name for p in runs["raw"].iterdir() if p.is_dir())[:2]
    case_list.write_text(f"# two cases\n{ids[0]}\n{ids[1]}\n")
    command = ("evaluate", "-m", str(runs["ds3d"]), "--cases", str(case_list), "-o", str(out))
    first = run_cli(*command, env=env)
    assert first.returncode == 0, first.stderr
    assert "2 case(s) (cases listed in" in first.stdout and "15 subset(s)" in first.stdout
    assert "| Region | " + " | ".join(paper_columns) + " |" in first.stdout
    assert sorted(p.name for p in out.iterdir()) == ["per_case.csv", "predictions", "robustness.png",
                                                     "summary.json", "summary.md"]
    summary = EvaluationSummary.load(out)
    assert summary.cases == ids and list(summary.table("dice").columns) == paper_columns
    assert summary.timing["case_subsets_predicted"] == 30 and summary.timing["case_subsets_reused"] == 0
    assert len((out / "per_case.csv").read_text().splitlines()) == 1 + 2 * 15 * 3 * 2
    predictions = sorted((out / "predictions").rglob("*.nii.gz"))
    assert len(predictions) == 30
    stamps = {p: p.stat().st_mtime_ns for p in predictions}

    again = run_cli(*command, env=env)
    assert again.returncode == 0, again.stderr
    assert EvaluationSummary.load(out).timing["case_subsets_reused"] == 30
    assert {p: p.stat().st_mtime_ns for p in predictions} == stamps  # reused, not rewritten
    assert EvaluationSummary.load(out).tables == summary.tables

    other_step = run_cli(*command, "--step", "1", env=env)
    assert other_step.returncode == 1 and "Traceback" not in other_step.stderr
    assert "made with other settings (step differ)" in other_step.stderr
    subset_only = run_cli(*command, "--step", "1", "--overwrite", "--subsets", "t1+flair;full", env=env)
    assert subset_only.returncode == 0, subset_only.stderr
    assert EvaluationSummary.load(out).subsets == ["T1,Fl.", "Full"]
    assert json.loads((out / "predictions" / "prediction_settings.json").read_text())["step"] == 1.0
    # The 13 subsets the overwrite did not redo were made at step 0.5: none may survive under step 1.
    left = sorted(p.parent.name for p in (out / "predictions").rglob("*.nii.gz"))
    assert left == ["t1_flair"] * 2 + ["t1_t1ce_t2_flair"] * 2
    every = run_cli(*command, "--step", "1", env=env)
    assert every.returncode == 0, every.stderr
    timing = EvaluationSummary.load(out).timing
    assert timing["case_subsets_reused"] == 4 and timing["case_subsets_predicted"] == 26


def test_evaluate_cli_case_sets_and_errors(runs, run_cli, tmp_path) -> None:
    env = runs["env"]
    val = run_cli("evaluate", "-d", DATASET, "--strategy", "plain", "--fusion", "mean", "--subsets", "full", env=env)
    assert val.returncode == 0, val.stderr
    assert "(validation cases of fold 0) x 1 subset(s)" in val.stdout
    assert (runs["ds3d"] / "evaluation_val" / "summary.md").is_file()
    test = run_cli("evaluate", "-m", str(runs["ds3d"]), "--cases", "test", env=env)
    assert test.returncode == 1 and "no held-out case" in test.stderr
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("nobody\n")
    missing = run_cli("evaluate", "-m", str(runs["ds3d"]), "--cases", str(unknown), env=env)
    assert missing.returncode == 1 and "1 evaluation case(s) not in the raw dataset: nobody" in missing.stderr
    folds = run_cli("evaluate", "-m", str(runs["ds3d"]), "-m", str(runs["ds2d"]), "--ensemble", env=env)
    assert folds.returncode == 1 and "--cases val is one fold's validation set" in folds.stderr
    twice = run_cli("evaluate", "-m", str(runs["ds3d"]), "-m", str(runs["ds3d"]), "-o", tmp_path / "o", env=env)
    assert twice.returncode == 1 and "a run folder is given twice" in twice.stderr
    unnamed = run_cli("evaluate", "-m", str(runs["ds3d"]), "-m", str(runs["ds2d"]), env=env)
    assert unnamed.returncode == 1 and "name the folder of their combined report with -o" in unnamed.stderr
    bad_subset = run_cli("evaluate", "-m", str(runs["ds3d"]), "--subsets", "t1+pd", env=env)
    assert bad_subset.returncode == 1 and "unknown modality 'pd'" in bad_subset.stderr
    bad_device = run_cli("evaluate", "-m", str(runs["ds3d"]), "--subsets", "full", "--device", "gpu", env=env)
    assert bad_device.returncode == 1 and "Traceback" not in bad_device.stderr
    assert "--device 'gpu': not a device" in bad_device.stderr


def test_cases_lacking_a_modality_skip_its_subsets(runs, tmp_path, single_torch_thread) -> None:
    predictor = Predictor.from_results([runs["ds3d"]])
    cases = []
    for case in find_input_cases(runs["raw"])[:2]:
        label = next(case.folder.glob("*_seg.nii.gz"))
        images = {m: p for m, p in case.images.items() if not (m == "t2" and not cases)}
        cases.append(EvaluationCase(case.case_id, images, label, predictor.plans.label_convention))
    report = evaluate_model(predictor, cases, tmp_path, "missing-1", PredictionSettings(step=1.0), progress=False)
    counted = {(s.subset, s.case_id) for s in report.scores}
    assert ("~T1", cases[0].case_id) not in counted and ("~T2", cases[0].case_id) in counted
    assert len(counted) == 4 + 1  # the first case has only the subset without T2


def test_gated_fusion_trains_with_the_ranking_term_and_evaluates_through_the_cli(runs, run_cli, tmp_path) -> None:
    """``train --fusion gated --subset-ranking-weight 0.1`` end to end, then ``evaluate`` on that run."""
    env = {**runs["env"], "MMROBUST_RESULTS": str(tmp_path / "results")}
    trained = run_cli("train", "-d", DATASET, "-c", "2d", "--fusion", "gated", "--subset-ranking-weight", "0.1",
                      "--epochs", "1", "--iters-per-epoch", "2", "--num-workers", "0", "--device", "cpu",
                      "--val-patches-per-case", "1", "--optimizer", "adam", env=env)
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "results" / DATASET / "2d__plain__gatedfusion" / "fold_0"
    config = json.loads((run / "config.json").read_text())["training"]
    assert (config["fusion"], config["subset_ranking_weight"]) == ("gated", 0.1)
    evaluated = run_cli("evaluate", "-m", str(run), "--subsets", "t1ce;t1ce+flair;full", "-o", str(tmp_path / "ev"),
                        env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert EvaluationSummary.load(tmp_path / "ev").subsets == ["T1c", "T1c,Fl.", "Full"]
    refused = run_cli("train", "-d", DATASET, "-c", "2d", "--strategy", "gmd", "--subset-ranking-weight", "0.1",
                      env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == "Error: --subset-ranking-weight is for --strategy plain only, not gmd"


def test_several_runs_are_scored_each_on_its_own_with_the_mean_and_std(runs, run_cli, tmp_path) -> None:
    """RFNet's Table 5 is the mean of its three splits: each run is scored on the cases of the split
    it recorded when it started, into its own report, and -o gets the mean ± std over the runs."""
    import statistics

    from mmseg_robust.data.splits import Splits
    from mmseg_robust.evaluation.runs_summary import RunsSummary
    from mmseg_robust.runs.config import load_run_split

    env = runs["env"]
    first, second = runs["ds2d"], runs["dsw"]
    split = load_run_split(first)
    stored = Splits.load(runs["root"] / "pre" / DATASET / "splits.json").fold(0)
    assert split is not None and split.fold == 0 and split.val == tuple(stored.val) and split.test == ()
    out = tmp_path / "over_runs"
    result = run_cli("evaluate", "-m", first, "-m", second, "--subsets", "full;t1", "-o", out, "-np", "0", env=env)
    assert result.returncode == 0, result.stderr
    assert "(validation cases of fold 0)" in result.stdout and "Over 2 runs" in result.stdout
    summaries = [EvaluationSummary.load(run / "evaluation_val") for run in (first, second)]
    combined = RunsSummary.load(out)
    assert combined.runs == [str(first), str(second)] and len(combined.cases) == 2
    for metric in ("dice", "lesion_hd95"):
        table = combined.table(metric)
        for region in ("WT", "ET"):
            for column in range(len(table.columns)):
                values = [s.table(metric).rows[region][column] for s in summaries]
                assert table.per_run[region] == [s.table(metric).rows[region] for s in summaries]
                assert table.mean[region][column] == pytest.approx(statistics.fmean(values))
                assert table.std[region][column] == pytest.approx(statistics.stdev(values))
    markdown = (out / "runs_summary.md").read_text()
    assert "| run 2 ET |" in markdown and " ± " in markdown


def test_scoring_workers_only_where_prediction_leaves_cores_idle() -> None:
    from mmseg_robust.evaluation.evaluate import default_scoring_processes

    assert default_scoring_processes(torch.device("cpu"), cpu_count=2) == 0
    assert default_scoring_processes(torch.device("cpu"), cpu_count=8) == 2
    assert default_scoring_processes(torch.device("cuda"), cpu_count=2) == 2
