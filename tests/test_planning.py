"""Experiment planning: the memory estimate against a measured forward + backward, and plans
that respond to the budget, the number of modality branches and user overrides."""

from __future__ import annotations

import json
import subprocess
import sys
from math import prod

import pytest
from mmseg_robust.planners.experiment_planner import PlanningError, PlanningRequest, plan_experiment
from mmseg_robust.planners.fingerprint import CaseFingerprint, DatasetFingerprint, IntensityStatistics
from mmseg_robust.planners.memory_model import (
    BYTES_PER_ELEMENT_FP32,
    MEMORY_ESTIMATE_FACTOR,
    estimate_training_memory_bytes,
    topology_for,
)
from mmseg_robust.planners.plans import PlanOverrides, Plans, PlansError

from mmseg_robust.data.labels import BRATS_2018
from mmseg_robust.data.modalities import MODALITIES

BRATS_CROPPED = (140, 170, 140)

# A real forward + backward of a U-Net with the planned topology (MONAI's DynUNet: conv-norm-
# LeakyReLU x2 per stage, strided convs, transposed convs) at batch * modalities rows, measuring
# the peak resident memory it adds (VmHWM reset just before).
MEASURE = r"""
import json, sys, torch
from monai.networks.nets import DynUNet
torch.manual_seed(0)
torch.set_num_threads(2)
patch, features, strides, kernels, rows = json.loads(sys.argv[1])
net = DynUNet(3, 1, 3, kernels, strides, strides[1:], filters=features)
net(torch.randn(1, 1, *[16] * 3)).sum().backward()  # one-off kernel and thread-pool set-up
net.zero_grad(set_to_none=True)
x = torch.randn(rows, 1, *patch)
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
base = resident()
open("/proc/self/clear_refs", "w").write("5")
torch.sigmoid(net(x)).sum().backward()
peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(peak - base)
"""


def measured_peak_bytes(patch, features, strides, kernels, rows) -> int:
    arguments = json.dumps([patch, features, strides, kernels, rows])
    out = subprocess.run([sys.executable, "-c", MEASURE, arguments], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def fingerprint(n_cases: int = 285, shape=BRATS_CROPPED, spacing=(1.0, 1.0, 1.0),
                modalities=MODALITIES, identical: bool = True) -> DatasetFingerprint:
    stats = IntensityStatistics(0.0, 1.0, 0.0, -2.5, 2.5, 100)
    cases = tuple(CaseFingerprint(
        case_id=f"case_{i:03d}", modalities=tuple(modalities), shape=(155, 240, 240), spacing=spacing,
        origin=(0.0, 0.0, 0.0), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
        crop_box=((0, shape[0]), (0, shape[1]), (0, shape[2])), cropped_shape=shape,
        label_counts={"0": 1}, region_counts={"WT": 0, "TC": 0, "ET": 0},
        intensity={m: stats for m in modalities}) for i in range(n_cases))
    return DatasetFingerprint(
        dataset_name="BraTS2018", layout="brats2018", modalities=tuple(modalities), label_convention=BRATS_2018,
        cases=cases, intensity={m: stats for m in modalities}, median_spacing=spacing, median_shape=(155, 240, 240),
        median_cropped_shape=shape, spacings_identical=identical, seed=0, samples_per_case=100)


@pytest.mark.parametrize("n_modalities", [1, 4])
def test_memory_estimate_is_within_the_stated_factor_of_a_measured_peak(n_modalities):
    # 48^3 at two rows or more: a single 48^3 row is small enough that the allocator's own
    # thresholds dominate the measured peak; 64^3 at eight rows takes half a minute on two cores.
    patch, features = [48, 48, 48], [8, 16, 32, 64]
    strides, kernels = [[1, 1, 1]] + [[2, 2, 2]] * 3, [[3, 3, 3]] * 4
    batch = 2
    measured = measured_peak_bytes(patch, features, strides, kernels, batch * n_modalities)
    estimate = estimate_training_memory_bytes(topology_for(patch, features, strides, kernels), batch,
                                              n_modalities, BYTES_PER_ELEMENT_FP32, include_cuda_context=False)
    assert 1 / MEMORY_ESTIMATE_FACTOR <= estimate / measured <= MEMORY_ESTIMATE_FACTOR, (estimate, measured)


def test_memory_grows_with_the_number_of_modality_branches():
    topology = topology_for([64, 64, 64], [8, 16, 32, 64], [[1, 1, 1]] + [[2, 2, 2]] * 3, [[3, 3, 3]] * 4)
    one, four = (estimate_training_memory_bytes(topology, 2, m, include_cuda_context=False) for m in (1, 4))
    parameters = estimate_training_memory_bytes(topology, 0, 1, include_cuda_context=False)
    assert (four - parameters) == pytest.approx(4 * (one - parameters))


def test_brats_plan_at_24_gb_is_nnunets_128_cube_corrected_for_four_branches():
    plans = plan_experiment(fingerprint())
    full = plans.configuration("3d_fullres")
    assert full.patch_size == (128, 128, 128) and full.batch_size == 2
    assert full.estimated_memory_gb <= 24
    assert full.strides[0] == (1, 1, 1) and len(full.strides) == 6
    assert full.features_per_stage == (32, 64, 128, 256, 320, 320)
    # One branch at nnU-Net's 8 GB target gives nnU-Net's own BraTS patch.
    single = plan_experiment(fingerprint(modalities=("flair",)), PlanningRequest(gpu_memory_gb=8))
    assert single.configuration("3d_fullres").patch_size == (128, 160, 128)
    assert single.configuration("3d_fullres").batch_size == 2
    assert plans.resample is False and plans.target_spacing == (1.0, 1.0, 1.0)
    assert plans.normalization == {m: "zscore_brain" for m in MODALITIES}


def test_plans_respond_to_budget_and_modality_count():
    def voxels_and_batch(gb, modalities):
        plan = plan_experiment(fingerprint(modalities=modalities), PlanningRequest(gpu_memory_gb=gb))
        config = plan.configuration("3d_fullres")
        return prod(config.patch_size) * config.batch_size, config

    small, small_plan = voxels_and_batch(8, MODALITIES)
    large, _ = voxels_and_batch(24, MODALITIES)
    two, _ = voxels_and_batch(8, MODALITIES[:2])
    assert small < large
    assert small < two, "fewer branches must leave room for a larger patch or batch"
    assert small_plan.estimated_memory_gb <= 8
    with pytest.raises(PlanningError, match="too small"):
        plan_experiment(fingerprint(), PlanningRequest(gpu_memory_gb=0.5))


def test_two_d_plan_uses_axial_slices_and_a_large_batch():
    config = plan_experiment(fingerprint()).configuration("2d")
    assert config.spatial_dims == 2 and len(config.patch_size) == 2
    assert all(p % prod(s[a] for s in config.strides) == 0 for a, p in enumerate(config.patch_size))
    assert config.batch_size > 20 and config.estimated_memory_gb <= 24


def test_overrides_are_used_and_recorded():
    plans = plan_experiment(fingerprint(), PlanningRequest(configurations=("3d_fullres",), patch_size=(96, 96, 96),
                                                           batch_size=3))
    config = plans.configuration("3d_fullres")
    assert (config.patch_size, config.batch_size) == ((96, 96, 96), 3)
    assert config.overrides == PlanOverrides(patch_size=(96, 96, 96), batch_size=3)
    assert set(plans.configurations) == {"3d_fullres"}
    with pytest.raises(PlanningError, match="needs 3"):
        plan_experiment(fingerprint(), PlanningRequest(configurations=("3d_fullres",), patch_size=(96, 96)))


def test_anisotropic_data_is_resampled_to_the_median_and_not_pooled_across_thick_slices():
    plans = plan_experiment(fingerprint(shape=(30, 170, 140), spacing=(5.0, 1.0, 1.0), identical=False))
    assert plans.resample is True and plans.target_spacing == (5.0, 1.0, 1.0)
    config = plans.configuration("3d_fullres")
    assert config.kernel_sizes[0] == (1, 3, 3)
    assert config.strides[1][0] == 1, "the 5 mm axis must not be pooled first"


def test_plans_json_round_trip_and_schema_check(tmp_path):
    plans = plan_experiment(fingerprint())
    path = plans.save(tmp_path / "plans.json")
    assert Plans.load(path) == plans
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(PlansError, match="plans schema version 99"):
        Plans.load(path)
    with pytest.raises(PlansError, match="no plans file"):
        Plans.load(tmp_path / "missing.json")


def test_recorded_overrides_apply_where_the_request_sets_nothing():
    recorded = {"2d": PlanOverrides(patch_size=(96, 96), batch_size=4, base_features=8)}
    replanned = plan_experiment(fingerprint(), PlanningRequest(configurations=("2d",)), recorded).configuration("2d")
    assert (replanned.patch_size, replanned.batch_size, replanned.features_per_stage[0]) == ((96, 96), 4, 8)
    assert replanned.overrides == recorded["2d"]
    # The request's own choice wins field by field; the other recorded choices stay.
    changed = plan_experiment(fingerprint(), PlanningRequest(configurations=("2d",), batch_size=6),
                              recorded).configuration("2d")
    assert (changed.patch_size, changed.batch_size, changed.features_per_stage[0]) == ((96, 96), 6, 8)
    assert changed.overrides == PlanOverrides(patch_size=(96, 96), batch_size=6, base_features=8)
    # Recorded overrides of one configuration never leak into another.
    other = plan_experiment(fingerprint(), PlanningRequest(configurations=("3d_fullres",)), recorded)
    assert not other.configuration("3d_fullres").overrides


def test_overrides_stored_as_the_fields_set_and_older_plans_still_load(tmp_path):
    plans = plan_experiment(fingerprint(), PlanningRequest(configurations=("2d",), patch_size=(96, 96),
                                                           base_features=8))
    path = plans.save(tmp_path / "plans.json")
    data = json.loads(path.read_text())
    assert data["configurations"]["2d"]["overrides"] == {"patch_size": [96, 96], "base_features": 8}
    # Plans written before overrides were recorded have no such key.
    del data["configurations"]["2d"]["overrides"]
    path.write_text(json.dumps(data))
    assert Plans.load(path).configuration("2d").overrides == PlanOverrides()
    data["configurations"]["2d"]["overrides"] = {"patch_size": [96, 96], "tile": 3}
    path.write_text(json.dumps(data))
    with pytest.raises(PlansError, match=r"plans.json: malformed plans \(unknown override\(s\) tile\)"):
        Plans.load(path)


@pytest.mark.parametrize("request_, message", [
    (PlanningRequest(configurations=("2D",)), "configuration '2D': expected one of 3d_fullres, 2d; did you mean '2d'?"),
    (PlanningRequest(image_dtype="float61"), "image_dtype 'float61': expected one of float16, float32; did you mean"),
])
def test_unknown_choices_name_the_parameter(request_, message):
    with pytest.raises(PlanningError, match=message.replace("?", r"\?")):
        plan_experiment(fingerprint(), request_)
