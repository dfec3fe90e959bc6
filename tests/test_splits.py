"""Cross-validation splits: seeded k-fold, splits.json round trip, and user split files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mmseg_robust.data.discovery import discover_dataset
from mmseg_robust.data.splits import (
    SPLITS_FILE_NAME,
    SPLITS_SCHEMA_VERSION,
    Split,
    SplitError,
    Splits,
    load_user_splits,
    make_kfold_splits,
)

CASE_IDS = [f"BraTS2021_{i:05d}" for i in range(1, 24)]  # 23: folds of 5 and 4 cases


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_kfold_partitions_the_cases() -> None:
    splits = make_kfold_splits(CASE_IDS, n_folds=5, seed=1)
    assert splits.n_folds == 5 and splits.source == "kfold" and splits.seed == 1
    val_ids = [c for fold in splits.folds for c in fold.val]
    assert sorted(val_ids) == sorted(CASE_IDS)  # every case validated exactly once
    assert sorted(len(f.val) for f in splits.folds) == [4, 4, 5, 5, 5]  # near-equal sizes
    for fold in splits.folds:
        assert set(fold.train).isdisjoint(fold.val)
        assert set(fold.train) | set(fold.val) == set(CASE_IDS)
        assert list(fold.train) == sorted(fold.train) and list(fold.val) == sorted(fold.val)
    # Shuffled, not dealt in sorted order: fold 0 is not simply the first five IDs.
    assert splits.folds[0].val != tuple(CASE_IDS[:5])


def test_kfold_ignores_input_order_and_follows_the_seed() -> None:
    shuffled = list(CASE_IDS)
    random.Random(0).shuffle(shuffled)
    assert make_kfold_splits(shuffled, seed=7) == make_kfold_splits(CASE_IDS, seed=7)
    assert make_kfold_splits(CASE_IDS, seed=7).seed == 7
    assert make_kfold_splits(CASE_IDS, seed=8).folds != make_kfold_splits(CASE_IDS, seed=7).folds
    assert make_kfold_splits(CASE_IDS).seed == 12345


@pytest.mark.parametrize("ids, n_folds", [(CASE_IDS[:4], 5), (CASE_IDS, 1), (CASE_IDS[:3] * 2, 2)])
def test_impossible_kfold_is_a_one_line_error(ids: list[str], n_folds: int) -> None:
    with pytest.raises(SplitError) as raised:
        make_kfold_splits(ids, n_folds=n_folds)
    assert "\n" not in str(raised.value)


def test_json_round_trip_and_fold_lookup(tmp_path: Path) -> None:
    splits = make_kfold_splits(CASE_IDS, seed=3)
    written = splits.save(tmp_path)
    assert written == tmp_path / SPLITS_FILE_NAME
    data = json.loads(written.read_text())
    assert data["seed"] == 3 and data["schema_version"] == SPLITS_SCHEMA_VERSION and len(data["folds"]) == 5
    assert Splits.load(written) == splits
    assert Splits.load(tmp_path) == splits
    assert splits.fold(4) == splits.folds[4]
    with pytest.raises(SplitError, match="no fold 5") as raised:
        splits.fold(5)
    assert "\n" not in str(raised.value)
    data["schema_version"] = SPLITS_SCHEMA_VERSION + 1
    written.write_text(json.dumps(data))
    with pytest.raises(SplitError, match="schema version"):
        Splits.load(written)


def test_constructed_with_a_list_equals_loaded(tmp_path: Path) -> None:
    splits = Splits(seed=None, source="mine", folds=[Split(("a",), ("b",))])
    assert Splits.load(splits.save(tmp_path / "s.json")) == splits


@pytest.mark.parametrize("wrapped", [False, True])
def test_nnunet_style_json_accepted(tmp_path: Path, wrapped: bool) -> None:
    folds = [{"train": CASE_IDS[5:], "val": [f"{c}.nii.gz" for c in CASE_IDS[:5]]},
             {"train": CASE_IDS[:5] + CASE_IDS[10:], "val": CASE_IDS[5:10]}]
    path = write(tmp_path / "splits_final.json", json.dumps({"folds": folds} if wrapped else folds))
    splits = load_user_splits([path], CASE_IDS)
    assert splits.n_folds == 2 and splits.seed is None and splits.source == "splits_final.json"
    assert splits.fold(0).val == tuple(CASE_IDS[:5])
    assert splits.fold(1).train == tuple(sorted(CASE_IDS[:5] + CASE_IDS[10:]))


def test_rfnet_list_files_with_paths_and_extensions(tmp_path: Path,
                                                    synthetic_datasets: dict[str, Path]) -> None:
    case_ids = [c.case_id for c in discover_dataset(synthetic_datasets["brats2018"]).cases]
    train = write(tmp_path / "train3.txt", "# RFNet split 3\n" + "".join(
        f"{'LGG' if i % 4 == 3 else 'HGG'}/{c}\n\n" for i, c in enumerate(case_ids[:3])))
    test = write(tmp_path / "test3.txt", f"{case_ids[3]}.nii.gz  # held out\n")
    splits = load_user_splits([test, train], case_ids)
    assert splits.folds == (Split(train=tuple(sorted(case_ids[:3])), val=(case_ids[3],)),)
    assert splits.source == "train3.txt, test3.txt"


def test_several_list_pairs_are_ordered_by_number(tmp_path: Path) -> None:
    paths = []
    for number in (10, 2, 1):
        val = CASE_IDS[number:number + 2]
        paths.append(write(tmp_path / f"train{number}.txt", "\n".join(c for c in CASE_IDS if c not in val)))
        paths.append(write(tmp_path / f"val{number}.txt", "\n".join(val)))
    splits = load_user_splits(paths, CASE_IDS)
    assert [fold.val for fold in splits.folds] == [tuple(CASE_IDS[n:n + 2]) for n in (1, 2, 10)]


def test_unknown_ids_named_in_one_line_with_the_file_and_count(tmp_path: Path) -> None:
    unknown = [f"Ghost_{i}" for i in range(7)]
    train = write(tmp_path / "train.txt", "\n".join(CASE_IDS[2:] + unknown))
    test = write(tmp_path / "test.txt", "\n".join(CASE_IDS[:2]))
    with pytest.raises(SplitError) as raised:
        load_user_splits([train, test], CASE_IDS)
    message = str(raised.value)
    assert "\n" not in message and str(train) in message and "7 case ID" in message
    assert sum(ghost in message for ghost in unknown) == 5  # up to five named, the rest counted


def test_case_in_train_and_val_rejected(tmp_path: Path) -> None:
    train = write(tmp_path / "train1.txt", "\n".join(CASE_IDS[3:]))
    test = write(tmp_path / "test1.txt", "\n".join(CASE_IDS[:4]))  # CASE_IDS[3] in both
    with pytest.raises(SplitError, match=f"in both train and val: {CASE_IDS[3]}") as raised:
        load_user_splits([train, test], CASE_IDS)
    assert str(train) in str(raised.value)
    path = write(tmp_path / "s.json", json.dumps([{"train": CASE_IDS[1:], "val": [f"x/{CASE_IDS[1]}"]}]))
    with pytest.raises(SplitError, match="in both train and val"):
        load_user_splits([path], CASE_IDS)


def test_unpaired_or_misnamed_list_files_rejected(tmp_path: Path) -> None:
    train = write(tmp_path / "train2.txt", "\n".join(CASE_IDS))
    with pytest.raises(SplitError, match="no matching test/val list"):
        load_user_splits([train], CASE_IDS)
    other = write(tmp_path / "fold2.txt", "\n".join(CASE_IDS))
    with pytest.raises(SplitError, match="must start with 'train'"):
        load_user_splits([train, other], CASE_IDS)
    with pytest.raises(SplitError, match="does not exist"):
        load_user_splits([tmp_path / "absent.json"], CASE_IDS)
