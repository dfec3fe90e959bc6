"""Training batches and validation patches from real preprocessed cases on disk (docs/design.md §4, §7)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.spatial_transforms import MirrorTransform
from mmseg_robust.planners.plans import Plans
from mmseg_robust.preprocessing.preprocessor import preprocess_dataset
from mmseg_robust.preprocessing.storage import FOREGROUND_FILE, load_preprocessed_case
from scipy.ndimage import gaussian_filter

from mmseg_robust.data.discovery import discover_dataset
from mmseg_robust.data.labels import BRATS_2018, subregions_to_regions
from mmseg_robust.data.modalities import MODALITIES
from mmseg_robust.data.synthetic.writer import SyntheticSpec, make_synthetic_dataset
from mmseg_robust.training.augmentation import Augmenter, extended_patch_size, trimmed_read_box
from mmseg_robust.training.data_loading import (
    DataLoadingError,
    LoaderSettings,
    TrainingBatches,
    forced_foreground_count,
    make_training_loader,
    make_validation_batches,
)

SHAPE = (40, 48, 48)
N_CASES = 4
PATCH_3D = (24, 32, 32)
PATCH_2D = (32, 32)
#: Small patches: most random ones miss the (small) tumour of the synthetic cases.
SMALL_PATCH = {3: (8, 8, 8), 2: (16, 16)}


@pytest.fixture(scope="module")
def case_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four preprocessed cases, two of them lacking one modality (one also has no ET)."""
    root = tmp_path_factory.mktemp("data_loading")
    raw = make_synthetic_dataset(root / "raw", SyntheticSpec("brats2021", N_CASES, SHAPE, seed=3,
                                                             incomplete_fraction=0.5), progress=False)
    plans = Plans(dataset_name="Test", modalities=MODALITIES, label_convention=BRATS_2018,
                  target_spacing=(1.0, 1.0, 1.0), resample=False,
                  normalization={m: "zscore_brain" for m in MODALITIES}, image_dtype="float32",
                  median_shape=SHAPE, gpu_memory_gb=24.0, configurations={})
    preprocess_dataset(discover_dataset(raw).cases, plans, root / "pre", progress=False)
    folders = sorted(p for p in (root / "pre").iterdir() if p.is_dir())
    modalities = [load_preprocessed_case(f).properties.modalities for f in folders]
    assert len(folders) == N_CASES and sum(len(m) < len(MODALITIES) for m in modalities) == 2
    return folders


def stored(folder: Path):
    images, seg, foreground, properties = load_preprocessed_case(folder, mmap=False)
    return images, seg, foreground, properties


def available_of(folder: Path, modalities=MODALITIES) -> list[bool]:
    return [m in stored(folder)[3].modalities for m in modalities]


def assert_batch_format(batch: dict, settings: LoaderSettings, folders_by_id: dict[str, Path]) -> None:
    b, m = settings.batch_size, len(settings.modalities)
    assert set(batch) == {"inputs", "available", "target", "case_ids"}
    assert batch["inputs"].dtype == torch.float32 and batch["inputs"].shape == (b, m, *settings.patch_size)
    assert batch["target"].dtype == torch.float32 and batch["target"].shape == (b, 3, *settings.patch_size)
    assert batch["available"].dtype == torch.bool and batch["available"].shape == (b, m)
    assert isinstance(batch["case_ids"], list) and len(batch["case_ids"]) == b
    target = batch["target"]
    assert set(torch.unique(target).tolist()) <= {0.0, 1.0}
    # Regions are nested: ET within TC within WT.
    assert torch.all(target[:, 2] <= target[:, 1]) and torch.all(target[:, 1] <= target[:, 0])
    assert torch.isfinite(batch["inputs"]).all()
    for i, case_id in enumerate(batch["case_ids"]):
        expected = available_of(folders_by_id[case_id], settings.modalities)
        assert batch["available"][i].tolist() == expected
        for channel, present in enumerate(expected):
            if not present:
                assert torch.count_nonzero(batch["inputs"][i, channel]) == 0


@pytest.mark.parametrize("patch", [PATCH_3D, PATCH_2D], ids=["3d", "2d"])
@pytest.mark.parametrize("modalities", [MODALITIES, ("t1", "t1ce")], ids=["all", "t1+t1ce"])
def test_batch_format_available_and_missing_channels_zero(case_folders, patch, modalities):
    settings = LoaderSettings(patch, batch_size=3, modalities=modalities, augment=True, seed=1)
    batches = TrainingBatches(case_folders, settings)
    folders_by_id = {f.name: f for f in case_folders}
    seen_missing = False
    for index in range(8):
        batch = batches[index]
        assert_batch_format(batch, settings, folders_by_id)
        seen_missing |= not bool(batch["available"].all())
        # Present channels carry image content.
        assert torch.count_nonzero(batch["inputs"][batch["available"]]) > 0
    assert seen_missing, "the incomplete cases were never sampled"
    assert len(batches) > 10**12


def _locate(block: np.ndarray, padded: np.ndarray) -> list[tuple[int, ...]]:
    """Offsets at which ``block`` (C, *patch) occurs in ``padded`` (C, *volume)."""
    channel, *where = np.unravel_index(np.argmax(np.abs(block)), block.shape)
    value = block[(channel, *where)]
    hits = []
    for candidate in np.argwhere(padded[channel] == value):
        offset = tuple(int(c) - int(w) for c, w in zip(candidate, where))
        if min(offset) < 0:
            continue
        window = padded[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, block.shape[1:]))]
        if window.shape == block.shape and np.array_equal(window, block):
            hits.append(offset)
    return hits


@pytest.mark.parametrize("dims", [3, 2])
def test_unaugmented_patch_is_a_block_of_the_stored_case(case_folders, dims):
    """With augment off, each patch is a sub-block of the zero-padded stored images and its target
    is the regions of the stored label map at the same place."""
    folder = case_folders[1]
    images, seg, _, properties = stored(folder)
    patch = PATCH_3D if dims == 3 else PATCH_2D
    settings = LoaderSettings(patch, batch_size=2, modalities=MODALITIES, augment=False, seed=5)
    batches = TrainingBatches([folder], settings)
    pad = max(patch)
    padded_images = np.pad(images.astype(np.float32), [(0, 0)] + [(pad, pad)] * 3)
    padded_seg = np.pad(seg, pad)
    channels = [MODALITIES.index(m) for m in properties.modalities]
    checked = 0
    for index in range(4):
        batch = batches[index]
        for i in range(settings.batch_size):
            block = batch["inputs"][i].numpy()[channels]
            if dims == 2:
                block = block[:, None]  # a slice is a (1, y, x) block of the volume
            hits = _locate(block, padded_images)
            assert len(hits) == 1, f"batch {index} sample {i}: found at {hits}"
            z, y, x = hits[0]
            size = (1, *patch) if dims == 2 else patch
            labels = padded_seg[z:z + size[0], y:y + size[1], x:x + size[2]]
            regions = subregions_to_regions(labels[0] if dims == 2 else labels)
            np.testing.assert_array_equal(batch["target"][i].numpy(), regions.astype(np.float32))
            # Random and foreground patches alike overlap the volume.
            start = np.array(hits[0]) - pad
            assert np.all(start < np.array(seg.shape)) and np.all(start + np.array(size) > 0)
            checked += 1
    assert checked == 8


def test_forced_foreground_count_rule():
    assert forced_foreground_count(2, 0.33) == 1
    assert forced_foreground_count(3, 0.33) == 1
    assert forced_foreground_count(4, 0.33) == 2
    assert forced_foreground_count(3, 1 / 3) == 1
    assert forced_foreground_count(5, 0.0) == 0
    assert forced_foreground_count(5, 1.0) == 5
    assert forced_foreground_count(12, 0.5) == 6


@pytest.mark.parametrize("dims", [3, 2])
def test_foreground_oversampling(case_folders, dims):
    patch = SMALL_PATCH[dims]
    centre = (slice(None),) + tuple(p // 2 for p in patch)

    def foreground_per_sample(fraction: float, batch_size: int, n_batches: int = 12) -> np.ndarray:
        settings = LoaderSettings(patch, batch_size, MODALITIES, oversample_foreground=fraction,
                                  augment=False, seed=11)
        batches = TrainingBatches(case_folders, settings)
        return np.array([[bool(b["target"][i].any()) for i in range(batch_size)]
                         for b in (batches[k] for k in range(n_batches))])

    always = foreground_per_sample(1.0, 4)
    never = foreground_per_sample(0.0, 4)
    assert always.all()
    assert never.mean() < 0.6 and never.mean() < always.mean() - 0.3
    # The last ceil(B * p) samples are forced: here 2 of 4 (and centred on a foreground voxel).
    settings = LoaderSettings(patch, 4, MODALITIES, oversample_foreground=0.5, augment=False, seed=11)
    batches = TrainingBatches(case_folders, settings)
    forced = [batches[k] for k in range(12)]
    for batch in forced:
        for i in (2, 3):
            assert batch["target"][i][centre][0] == 1.0  # WT contains every stored location
    free = np.array([[bool(b["target"][i].any()) for i in (0, 1)] for b in forced])
    assert free.mean() < 0.75


def test_foreground_oversampling_with_augmentation(case_folders):
    settings = LoaderSettings((16, 16, 16), 2, MODALITIES, oversample_foreground=1.0, augment=True, seed=2)
    batches = TrainingBatches(case_folders, settings)
    hits = [bool(b["target"][i].any()) for b in (batches[k] for k in range(6)) for i in range(2)]
    assert np.mean(hits) >= 0.9


def test_case_without_foreground_falls_back_to_random_patches(case_folders, tmp_path):
    folder = tmp_path / case_folders[2].name
    shutil.copytree(case_folders[2], folder)
    np.save(folder / FOREGROUND_FILE, np.zeros((0, 4), dtype=np.int32))
    settings = LoaderSettings(PATCH_3D, 2, MODALITIES, oversample_foreground=1.0, augment=False)
    batch = TrainingBatches([folder], settings)[0]
    assert batch["inputs"].shape == (2, 4, *PATCH_3D)
    validation = make_validation_batches([folder], settings, patches_per_case=2)
    assert sum(len(b["case_ids"]) for b in validation) == 2


def _assert_batches_equal(a: dict, b: dict) -> None:
    assert a["case_ids"] == b["case_ids"]
    for key in ("inputs", "available", "target"):
        assert torch.equal(a[key], b[key]), key


def _batches_differ(a: dict, b: dict) -> bool:
    return a["case_ids"] != b["case_ids"] or not torch.equal(a["inputs"], b["inputs"])


def test_batches_are_pure_functions_of_seed_rank_and_index(case_folders):
    settings = LoaderSettings(PATCH_3D, 2, MODALITIES, augment=True, seed=7)
    first = TrainingBatches(case_folders, settings)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    batch = first[3]
    # No side effect on the caller's global RNG streams.
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    np.random.seed(123)
    random.seed(456)  # whatever the global states are
    _assert_batches_equal(batch, first[3])
    _assert_batches_equal(batch, TrainingBatches(case_folders, settings)[3])  # another instance
    other_seed = TrainingBatches(case_folders, LoaderSettings(PATCH_3D, 2, MODALITIES, augment=True, seed=8))
    other_rank = TrainingBatches(case_folders, settings, rank=1)
    assert _batches_differ(batch, other_seed[3])
    assert _batches_differ(batch, other_rank[3])
    assert _batches_differ(batch, first[4])


def test_workers_and_resume_give_the_same_batches(case_folders):
    settings = LoaderSettings(PATCH_3D, 2, MODALITIES, augment=True, seed=4)
    in_process = make_training_loader(case_folders, settings, num_workers=0)
    reference = [next(in_process) for _ in range(6)]
    with_workers = make_training_loader(case_folders, settings, num_workers=2)
    for expected in reference[:4]:
        _assert_batches_equal(expected, next(with_workers))
    del with_workers
    resumed = make_training_loader(case_folders, settings, num_workers=0, start_batch=3)
    for expected in reference[3:]:
        _assert_batches_equal(expected, next(resumed))
    direct = TrainingBatches(case_folders, settings)
    _assert_batches_equal(reference[5], direct[5])


def test_validation_batches_are_fixed_and_foreground_centred(case_folders):
    settings = LoaderSettings(PATCH_3D, batch_size=3, modalities=MODALITIES, seed=9)
    first = make_validation_batches(case_folders, settings, patches_per_case=2)
    second = make_validation_batches(case_folders, settings, patches_per_case=2)
    assert [len(b["case_ids"]) for b in first] == [3, 3, 2]
    for a, b in zip(first, second, strict=True):
        _assert_batches_equal(a, b)
    case_ids = [c for b in first for c in b["case_ids"]]
    assert case_ids == [f.name for f in case_folders for _ in range(2)]
    target = torch.cat([b["target"] for b in first])
    centre = tuple(p // 2 for p in PATCH_3D)
    for k in range(0, len(case_ids), 2):  # the first patch of each case is foreground-centred
        assert target[(k, 0) + centre] == 1.0
    folders_by_id = {f.name: f for f in case_folders}
    for batch in first:
        assert_batch_format(batch, LoaderSettings(PATCH_3D, len(batch["case_ids"]), MODALITIES), folders_by_id)
    # Seeded per case: the patches of a case do not depend on the order of the list.
    reversed_batches = make_validation_batches(case_folders[::-1], settings, patches_per_case=2)
    reversed_images = torch.cat([b["inputs"] for b in reversed_batches])
    images = torch.cat([b["inputs"] for b in first])
    assert torch.equal(images[:2], reversed_images[-2:])
    # The training loader's augmentation setting does not leak into validation patches.
    augmented = make_validation_batches(case_folders, LoaderSettings(PATCH_3D, 3, MODALITIES, augment=True,
                                                                     seed=9))
    _assert_batches_equal(first[0], augmented[0])


def test_augmentation_changes_images_and_keeps_binary_nested_targets(case_folders):
    on = TrainingBatches(case_folders, LoaderSettings(PATCH_3D, 2, MODALITIES, augment=True, seed=3))
    off = TrainingBatches(case_folders, LoaderSettings(PATCH_3D, 2, MODALITIES, augment=False, seed=3))
    folders_by_id = {f.name: f for f in case_folders}
    changed = 0
    for index in range(6):
        a, b = on[index], off[index]
        assert a["case_ids"] == b["case_ids"]  # same sampling decisions, then augmentation
        assert_batch_format(a, on.settings, folders_by_id)
        changed += sum(not torch.equal(a["inputs"][i], b["inputs"][i]) for i in range(2))
    assert changed >= 6


def test_augmenter_transforms_target_with_the_image():
    """Spatial transform and mirroring move labels and images together: with the intensity
    transforms replaced by mirroring alone, a smooth image still agrees with the label map made by
    thresholding it (a misaligned label would agree on far fewer voxels)."""
    patch = (16, 20, 20)
    augmenter = Augmenter(patch)
    augmenter.intensity = Compose([MirrorTransform(axes=(0, 1, 2))])
    box = augmenter.input_size
    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.normal(size=box), 3.0)
    field = ((field - field.mean()) / field.std()).astype(np.float32)
    codes = np.where(field > 0.5, 2, 0).astype(np.uint8)
    # The second channel is marked unavailable: whatever it holds, it must come back zero.
    images = np.stack([field, rng.normal(size=box).astype(np.float32)])
    offset = tuple((b - p) // 2 for b, p in zip(box, patch))
    plain = codes[tuple(slice(o, o + p) for o, p in zip(offset, patch))]
    transformed = 0
    for seed in range(12):
        out_images, out_codes = augmenter([images], [codes], np.array([[True, False]]), seed)
        assert out_images.shape == (1, 2, *patch) and out_codes.shape == (1, *patch)
        assert out_codes.dtype == np.uint8 and set(np.unique(out_codes)) <= {0, 2}
        assert np.count_nonzero(out_images[0, 1]) == 0  # unavailable channel stays zero
        label = out_codes[0] > 0
        agreement = np.mean((out_images[0, 0] > 0.5) == label)
        assert agreement > 0.94, f"seed {seed}: image and label disagree on {1 - agreement:.1%}"
        assert np.mean((np.flip(out_images[0, 0], 0) > 0.5) == label) < agreement - 0.15
        flips = [np.flip(plain, axes) for axes in [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]]
        transformed += not any(np.array_equal(out_codes[0], f) for f in flips)
    assert transformed > 0, "no sample was rotated or scaled"


def test_extended_patch_and_trimmed_box():
    for patch in [(64, 64, 64), (24, 32, 32), (32, 32)]:
        extended = extended_patch_size(patch)
        assert all(e > p and (e - p) % 2 == 0 for e, p in zip(extended, patch))
    # 3D rotations up to 30 degrees on every axis and zoom-out 1.4: the cube's diagonal sets the bound.
    assert extended_patch_size((64, 64, 64))[0] >= 64 * 1.4 * 1.3
    # A 2D patch may rotate by any angle: its diagonal must fit, zoomed out by 1.4.
    assert extended_patch_size((32, 32))[0] >= 32 * np.sqrt(2) * 1.4
    start, size = trimmed_read_box((-10, -3, 5), (40, 40, 40), (20, 50, 60), (16, 16, 16))
    assert start == (0, -3, 5) and size == (20, 40, 40)  # overhang 10/10 is trimmed, 3/0 is kept
    assert [s + n / 2 for s, n in zip(start, size)] == [-10 + 20, -3 + 20, 5 + 20]
    # Never below the patch: a volume smaller than the patch keeps the patch-sized box around it.
    start, size = trimmed_read_box((-40, -40), (100, 100), (20, 20), (40, 36))
    assert start == (-10, -8) and size == (40, 36)


def test_patch_larger_than_the_volume(case_folders):
    """Zero padding where the patch exceeds the volume, with and without augmentation."""
    patch = (48, 64, 64)  # the cases are about 33 x 40 x 39 after cropping
    folders_by_id = {f.name: f for f in case_folders}
    for augment in (False, True):
        settings = LoaderSettings(patch, 2, MODALITIES, oversample_foreground=0.5, augment=augment, seed=1)
        batch = TrainingBatches(case_folders, settings)[0]
        assert_batch_format(batch, settings, folders_by_id)
        assert batch["target"].any()
        if not augment:  # at least (patch - volume) z-slices lie outside the case: all zero
            for i, case_id in enumerate(batch["case_ids"]):
                depth = stored(folders_by_id[case_id])[1].shape[0]
                empty = [not batch["inputs"][i, :, z].any() and not batch["target"][i, :, z].any()
                         for z in range(patch[0])]
                assert sum(empty) >= patch[0] - depth


def test_settings_and_inputs_are_validated(case_folders):
    with pytest.raises(DataLoadingError):
        LoaderSettings((32, 32, 32, 32), 2, MODALITIES)
    with pytest.raises(DataLoadingError):
        LoaderSettings((32, 32), 0, MODALITIES)
    with pytest.raises(DataLoadingError):
        LoaderSettings((32, 32), 2, ("t1", "dwi"))
    with pytest.raises(DataLoadingError):
        LoaderSettings((32, 32), 2, MODALITIES, oversample_foreground=1.5)
    with pytest.raises(DataLoadingError):
        TrainingBatches([], LoaderSettings((32, 32), 2, MODALITIES))
    settings = LoaderSettings([16, 16], 2, list(MODALITIES))
    assert settings.patch_size == (16, 16) and settings.modalities == MODALITIES and settings.spatial_dims == 2
    # A case holding none of the model's modalities cannot train it.
    lacking = next(f for f in case_folders if "t1" not in stored(f)[3].modalities)
    with pytest.raises(DataLoadingError, match="none of the modalities"):
        TrainingBatches([lacking], LoaderSettings((16, 16), 2, ("t1",)))


def test_dataset_pickles_without_its_open_memory_maps(case_folders):
    """Spawned DataLoader workers receive the dataset by pickle: it must not carry the arrays."""
    import pickle

    batches = TrainingBatches(case_folders, LoaderSettings(PATCH_3D, 2, MODALITIES, seed=6))
    batch = batches[0]  # opens (and caches) memory maps in this process
    payload = pickle.dumps(batches)
    assert len(payload) < 100_000
    _assert_batches_equal(batch, pickle.loads(payload)[0])
