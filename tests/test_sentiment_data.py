"""Sentiment data: the restricted unpickler, both readers, the synthetic generator, ``mmrobust sentiment
make-synthetic`` and ``verify`` (docs/design.md §10), on real pickles in temporary folders."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from mmseg_robust.sentiment.dataset import MODALITIES, SPLITS
from mmseg_robust.sentiment.errors import SentimentDataError
from mmseg_robust.sentiment.formats import read_sentiment_data
from mmseg_robust.sentiment.safe_pickle import RestrictedUnpickler, load_pickle
from mmseg_robust.sentiment.synthetic import SyntheticSentimentSpec, make_synthetic_sentiment
from mmseg_robust.sentiment.verify import summarize_dataset

TINY_SAMPLES = (6, 3, 4)
KEYS = {"l": "text", "a": "audio", "v": "vision"}


def _write(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def _raw(path: Path) -> dict:
    """The generator's own output, loaded with the plain (trusting) unpickler for comparison."""
    return pickle.loads(path.read_bytes())


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    root = tmp_path_factory.mktemp("sentiment")
    return {(fmt, aligned): make_synthetic_sentiment(
        root / f"{fmt}_{'aligned' if aligned else 'unaligned'}.pkl",
        SyntheticSentimentSpec(fmt, "mosi", aligned, TINY_SAMPLES, seed=1))
        for fmt in ("mmsa", "mult") for aligned in (True, False)}


# --- the restricted unpickler -------------------------------------------------------------------------------

def _numpy_payload() -> dict:
    return {"features": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "fortran": np.asfortranarray(np.eye(3)),
            "raw_text": np.array(["a film", "très bien"], dtype=object), "id": np.array([[b"vid", b"0.5", b"\xff"]],
                                                                                        dtype=object),
            "fixed_bytes": np.array([b"ab", b"c"]), "unicode": np.array(["ab"]), "scalar": np.float32(1.5),
            "integer": np.int64(3), "containers": [{1, 2}, frozenset({3}), (None, True), b"raw", bytearray(b"x"),
                                                   1 + 2j, {"nested": [1.0, "s"]}]}


def _assert_same(expected: object, actual: object) -> None:
    if isinstance(expected, dict):
        assert expected.keys() == actual.keys()
        for key in expected:
            _assert_same(expected[key], actual[key])
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and np.array_equal(actual, expected)
    else:
        assert type(actual) is type(expected) and actual == expected


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_unpickler_reads_numpy_arrays_objects_and_containers_at_every_protocol(protocol):
    payload = _numpy_payload()
    _assert_same(payload, RestrictedUnpickler(io.BytesIO(pickle.dumps(payload, protocol=protocol)), "x").load())


def test_unpickler_reads_numpy_1_pickles_that_name_numpy_core():
    # numpy 1.x wrote numpy.core.multiarray; protocol 2 names globals as text lines.
    data = pickle.dumps(_numpy_payload(), protocol=2)
    old = data.replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    _assert_same(_numpy_payload(), RestrictedUnpickler(io.BytesIO(old), "x").load())


class _Exploit:
    """Loading its pickle calls ``call(*args)``: what an attacker's file would do."""

    def __init__(self, call: Callable, *args: object) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("attack", ["os.system", "builtins.open"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, attack, run_cli):
    target = tmp_path / "pwned"
    exploit = (_Exploit(os.system, f"touch '{target}'") if attack == "os.system"
               else _Exploit(builtins.open, str(target), "w"))
    path = _write(tmp_path / "aligned_50.pkl", {"train": {"audio": exploit}})
    with pytest.raises(SentimentDataError) as refused:
        load_pickle(path)
    message = str(refused.value)
    assert str(path) in message and "refused" in message and "\n" not in message
    assert f"references {exploit.call.__module__}.{exploit.call.__name__}," in message  # posix.system, io.open
    assert not target.exists()
    cli = run_cli("sentiment", "verify", "--data", path)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert cli.stderr.startswith(f"Error: {path}: refused") and len(cli.stderr.strip().splitlines()) == 1
    assert not target.exists()
    # The file really is an exploit: the ordinary unpickler runs it.
    pickle.loads(path.read_bytes())
    assert target.exists()


def test_codecs_encode_is_admitted_only_for_the_bytes_pickles_store(tmp_path):
    import codecs

    path = tmp_path / "f.pkl"
    path.write_bytes(pickle.dumps([b"kept", _Exploit(codecs.encode, "text", "rot13")], protocol=2))
    with pytest.raises(SentimentDataError, match="_codecs.encode with encoding 'rot13'"):
        load_pickle(path)


# --- both readers on generated files ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["mmsa", "mult"])
@pytest.mark.parametrize("aligned", [True, False])
def test_readers_give_float32_sequences_with_padding_on_the_format_side(tiny_files, fmt, aligned):
    path = tiny_files[(fmt, aligned)]
    raw = _raw(path)
    dataset = read_sentiment_data(path)
    assert (dataset.format, dataset.dataset) == (fmt, "mosi")
    assert dataset.padding_side == ("end" if fmt == "mmsa" else "start")
    assert dataset.feature_dims == {"l": 768 if fmt == "mmsa" else 300, "a": 5, "v": 20}
    assert list(dataset.splits) == list(SPLITS)
    for name, count in zip(SPLITS, TINY_SAMPLES):
        split = dataset.splits[name]
        assert len(split) == count and split.labels.shape == (count,) and split.labels.dtype == np.float32
        label_key = "regression_labels" if fmt == "mmsa" else "labels"
        assert np.array_equal(split.labels, np.asarray(raw[name][label_key]).reshape(count))
        assert len(set(split.ids)) == count and all(isinstance(i, str) for i in split.ids)
        neg_inf = np.isneginf(raw[name]["audio"])
        assert 0 < split.replaced_neg_inf == neg_inf.sum()
        for modality in MODALITIES:
            sequences = split.sequences[modality]
            stored = raw[name][KEYS[modality]]
            assert sequences.features.dtype == np.float32 and sequences.features.shape == stored.shape
            assert np.isfinite(sequences.features).all() and sequences.features.flags.writeable
            if modality == "a":
                assert not sequences.features[neg_inf].any()
                assert np.array_equal(sequences.features[~neg_inf], stored[~neg_inf])
            else:
                assert np.array_equal(sequences.features, stored)
            # Every real generated frame has noise; padding frames are exactly zero.
            real = np.any(stored != 0, axis=2)
            assert np.array_equal(sequences.padding_mask, ~real)
            steps = np.arange(stored.shape[1])
            lengths = sequences.lengths
            expected = (steps[None] >= stored.shape[1] - lengths[:, None] if fmt == "mult"
                        else steps[None] < lengths[:, None])
            assert np.array_equal(~sequences.padding_mask, expected) and lengths.min() > 0
            if fmt == "mmsa" and modality != "l" and not aligned:
                assert np.array_equal(lengths, raw[name][f"{KEYS[modality]}_lengths"])
            if fmt == "mmsa" and modality == "l":
                assert np.array_equal(lengths, raw[name]["text_bert"][:, 1].sum(axis=1))
    if not aligned:
        assert {dataset.splits["train"].sequences[m].max_length for m in MODALITIES} == (
            {50, 375, 500} if fmt == "mult" else {50, 500, 375})


def test_mmsa_text_padding_comes_from_berts_attention_mask(tiny_files, tmp_path):
    # BERT's outputs at [PAD] positions are not zero: only text_bert's mask says where the text ends.
    raw = _raw(tiny_files[("mmsa", True)])
    for split in (raw[name] for name in SPLITS):  # not the "synthetic" record
        split["text"][split["text"] == 0] = 0.25
    dataset = read_sentiment_data(_write(tmp_path / "aligned_50.pkl", raw))
    for name in SPLITS:
        assert np.array_equal(~dataset.splits[name].sequences["l"].padding_mask,
                              raw[name]["text_bert"][:, 1].astype(bool))


def test_split_sizes_are_compared_with_the_published_ones(tiny_files, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        dataset = read_sentiment_data(tiny_files[("mult", True)])
    assert "split sizes 6/3/4 differ from the published MOSI split 1284/229/686" in caplog.text
    summary = summarize_dataset(dataset)
    assert "dataset: MOSI" in summary and "1284" in summary and "padding at the start" in summary
    raw = _raw(tiny_files[("mult", True)])
    for split in (raw[name] for name in SPLITS):
        split["audio"] = np.repeat(split["audio"], 2, axis=2)[:, :, :7]
    caplog.clear()
    with caplog.at_level("WARNING"):
        other = read_sentiment_data(_write(tmp_path / "other.pkl", raw))
    assert other.dataset == "unknown" and not caplog.text
    assert "match neither MOSI 5/20, MOSEI 74/35" in summarize_dataset(other)


# --- every bad input: one line naming the file, split and key ---------------------------------------------

def _set(split: str, key: str, value: Callable[[dict], object]) -> Callable[[dict], dict]:
    def mutate(raw: dict) -> dict:
        raw[split][key] = value(raw[split])
        return raw
    return mutate


def _drop(split: str, key: str | None = None) -> Callable[[dict], dict]:
    def mutate(raw: dict) -> dict:
        del (raw[split] if key else raw)[key or split]
        return raw
    return mutate


def _poke(split: str, key: str, value: float, dtype=np.float32) -> Callable[[dict], object]:
    def mutate(raw: dict) -> dict:
        array = np.asarray(raw[split][key], dtype=dtype).copy()
        array.flat[1] = value
        raw[split][key] = array
        return raw
    return mutate


BAD_CONTENTS = {
    "wrong top-level type": (lambda raw: list(raw.values()), ["holds a list"]),
    "missing split": (_drop("valid"), ["no split 'valid'"]),
    "split not a dict": (lambda raw: {**raw, "test": [1, 2]}, ["split 'test' is a list"]),
    "missing key": (_drop("test", "vision"), ["split 'test' has no key 'vision'"]),
    "no label key": (_drop("train", "regression_labels"), ["split 'train' has neither 'regression_labels'"]),
    "bert token ids only": (_drop("train", "text"), ["split 'train', key 'text'", "BERT model", "never downloads"]),
    "sample counts differ": (_set("valid", "audio", lambda s: s["audio"][:-1]),
                             ["split 'valid', key 'audio': 2 samples, but 'regression_labels' has 3"]),
    "too few dimensions": (_set("train", "vision", lambda s: s["vision"][..., 0]),
                           ["split 'train', key 'vision'", "expected 3 dimensions"]),
    "labels of two columns": (_set("test", "regression_labels", lambda s: np.stack([s["regression_labels"]] * 2, 1)),
                              ["split 'test', key 'regression_labels'", "shape (4, 2)"]),
    "feature sizes differ between splits": (_set("test", "audio", lambda s: s["audio"][..., :4]),
                                            ["key 'audio' has 5 features in split 'train' but 4 in split 'test'"]),
    "NaN": (_poke("valid", "text", np.nan), ["split 'valid', key 'text'", "1 NaN"]),
    "+inf": (_poke("train", "audio", np.inf), ["split 'train', key 'audio'", "1 +inf"]),
    "-inf outside audio": (_poke("test", "vision", -np.inf), ["split 'test', key 'vision'", "-inf"]),
    "float32 overflow": (_poke("train", "audio", 1e39, np.float64), ["split 'train', key 'audio'", "float32"]),
    "label above 3": (_poke("test", "regression_labels", 3.2), ["split 'test', key 'regression_labels'",
                                                                "outside [-3, 3]"]),
    "NaN label": (_poke("valid", "regression_labels", np.nan), ["split 'valid', key 'regression_labels'", "NaN"]),
    "text features": (_set("train", "audio", lambda s: s["audio"].astype(str)),
                      ["split 'train', key 'audio'", "expected numbers"]),
    "lengths beyond the sequence": (_set("valid", "audio_lengths", lambda s: [10 ** 4] * 3),
                                    ["split 'valid', key 'audio_lengths'", "outside [0, 500]"]),
    "ids of another count": (_set("test", "id", lambda s: s["id"][:2]), ["split 'test', key 'id': 2 samples"]),
}


@pytest.mark.parametrize("problem", sorted(BAD_CONTENTS))
def test_bad_contents_give_one_line_naming_file_split_and_key(tiny_files, tmp_path, problem):
    mutate, expected = BAD_CONTENTS[problem]
    path = _write(tmp_path / "unaligned_50.pkl", mutate(_raw(tiny_files[("mmsa", False)])))
    with pytest.raises(SentimentDataError) as error:
        read_sentiment_data(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for text in expected:
        assert text in message


def test_mult_labels_and_ids_are_checked_too(tiny_files, tmp_path):
    raw = _raw(tiny_files[("mult", False)])
    raw["train"]["labels"] = np.zeros((6, 1, 2), np.float32)
    with pytest.raises(SentimentDataError, match=r"split 'train', key 'labels': shape \(6, 1, 2\)"):
        read_sentiment_data(_write(tmp_path / "mosi_data_noalign.pkl", raw))


@pytest.mark.parametrize("problem", ["not a pickle", "truncated", "empty", "missing"])
def test_unreadable_files_give_one_line(tiny_files, tmp_path, problem):
    path = tmp_path / "aligned_50.pkl"
    data = tiny_files[("mult", True)].read_bytes()
    contents = {"not a pickle": b"video,label\nabc,1.0\n", "truncated": data[: len(data) // 2], "empty": b""}
    if problem in contents:
        path.write_bytes(contents[problem])
    expected = {"not a pickle": "not a readable pickle", "truncated": "truncated", "empty": "empty or truncated",
                "missing": "no such file"}[problem]
    with pytest.raises(SentimentDataError) as error:
        read_sentiment_data(path)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)
    assert "\n" not in str(error.value)


# --- the generator -----------------------------------------------------------------------------------------

def test_generator_is_deterministic_per_seed(tmp_path):
    def digest(name: str, seed: int) -> str:
        spec = SyntheticSentimentSpec("mult", "mosei", False, TINY_SAMPLES, seed)
        return hashlib.sha256(make_synthetic_sentiment(tmp_path / name, spec).read_bytes()).hexdigest()

    assert digest("a.pkl", 3) == digest("b.pkl", 3) != digest("c.pkl", 4)


@pytest.mark.parametrize("corpus, raters", [("mosi", 5), ("mosei", 3)])
def test_labels_are_annotator_averages_with_exact_zeros(tmp_path, corpus, raters):
    spec = SyntheticSentimentSpec("mmsa", corpus, True, (100, 10, 10), seed=0)
    labels = np.concatenate([s.labels for s in read_sentiment_data(
        make_synthetic_sentiment(tmp_path / "f.pkl", spec)).splits.values()]).astype(np.float64)
    assert np.allclose(labels * raters, np.rint(labels * raters), atol=1e-5)
    assert (labels == 0).any() and labels.min() >= -3 and labels.max() <= 3
    assert len(np.unique(np.rint(labels * raters))) > 3 * raters  # a grid, not a few classes


def test_language_carries_most_of_the_signal(tmp_path):
    spec = SyntheticSentimentSpec("mult", "mosi", True, (600, 10, 400), seed=0, signal="shared")
    dataset = read_sentiment_data(make_synthetic_sentiment(tmp_path / "f.pkl", spec))

    def pooled(name: str, modality: str) -> np.ndarray:
        sequences = dataset.splits[name].sequences[modality]
        real = ~sequences.padding_mask
        return np.c_[(sequences.features * real[..., None]).sum(1) / real.sum(1, keepdims=True), np.ones(len(real))]

    train, test = dataset.splits["train"], dataset.splits["test"]
    correlation = {}
    for modality in MODALITIES:
        features = pooled("train", modality)
        weights = np.linalg.solve(features.T @ features + np.eye(features.shape[1]), features.T @ train.labels)
        correlation[modality] = np.corrcoef(pooled("test", modality) @ weights, test.labels)[0, 1]
    # Weak but present in audio and vision; language dominates.
    assert correlation["a"] > 0.05 and correlation["v"] > 0.05
    assert correlation["l"] > 0.7 and correlation["l"] > 2 * max(correlation["a"], correlation["v"])


# --- the commands ------------------------------------------------------------------------------------------

def test_make_synthetic_then_verify_on_the_command_line(tmp_path, run_cli):
    path = tmp_path / "unaligned_50.pkl"
    made = run_cli("sentiment", "make-synthetic", "-o", path, "--format", "mmsa", "--dataset", "mosei",
                   "--unaligned", "--samples", "5,2,3", "--seed", "2")
    assert made.returncode == 0, made.stderr
    assert "time steps 50/500/375" in made.stdout and "5/2/3" in made.stdout
    again = run_cli("sentiment", "make-synthetic", "-o", path)
    assert again.returncode == 1 and again.stderr.strip() == f"Error: {path}: already exists; pass --overwrite to " \
                                                              "replace it"
    verified = run_cli("sentiment", "verify", "--data", path)
    assert verified.returncode == 0, verified.stderr
    lines = verified.stdout
    assert "format MMSA" in lines and "dataset: MOSEI" in lines and "16326" in lines
    assert "a audio" in lines and "74" in lines and "audio -inf set to 0" in lines
    assert "differ from the published MOSEI split" in verified.stderr


def test_verify_reports_a_bad_file_in_one_line(tiny_files, tmp_path, run_cli):
    raw = _raw(tiny_files[("mult", True)])
    raw["test"]["vision"][2, -1, 0] = np.nan
    path = _write(tmp_path / "mosi_data.pkl", raw)
    result = run_cli("sentiment", "verify", "--data", path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"Error: {path}: split 'test', key 'vision': 1 NaN value(s); "
                                          "features must be finite"]


def test_data_modules_do_not_import_torch(tmp_path):
    code = ("import sys; import mmseg_robust.sentiment.verify, mmseg_robust.sentiment.synthetic, "
            "mmseg_robust.cli.sentiment_commands; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "False", result.stderr
