"""The synthetic sentiment generator's signal models (``graded``, ``shared``), their ideal linear
ceilings, the ``synthetic`` record in the pickle and what ``mmrobust sentiment verify`` makes of it
(docs/design.md §10), on real pickles in temporary folders and through the real CLI."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from mmseg_robust.errors import ConfigurationError
from mmseg_robust.sentiment.dataset import MODALITIES, SPLITS
from mmseg_robust.sentiment.formats import read_sentiment_data
from mmseg_robust.sentiment.metrics import pearson_r
from mmseg_robust.sentiment.report import TABLE_SUBSETS, table_subset_name
from mmseg_robust.sentiment.synthetic import (
    GENERATOR_VERSION,
    GRADED_STRENGTH,
    RECORD_KEY,
    SyntheticSentimentSpec,
    make_synthetic_sentiment,
)
from mmseg_robust.sentiment.synthetic_ceilings import ideal_ceilings
from mmseg_robust.sentiment.verify import describe_generator

TINY_SAMPLES = (6, 3, 4)
#: sha256 (first 16 hex digits) of each split's arrays as generator version 1 wrote them, for
#: seed 5 and TINY_SAMPLES: ``shared`` must keep them (numpy's Generator streams are stable).
VERSION_1_DIGESTS = {
    ("mmsa", True): ("3931dcb3848fba45", "08edf453a7657a5f", "574bbc42b2af21bc"),
    ("mmsa", False): ("f31645098c44286f", "e0da35fcba3ad878", "0442bc84d3e69f11"),
    ("mult", True): ("f7d5f8e0380d6bfd", "0a256f97334bd83c", "5551606cde4f39ad"),
    ("mult", False): ("1579452228fe9522", "b0fc4198a3015949", "2710cc8459cdefb0"),
}
#: Version 1's ideal linear scores on MOSI (aligned), measured before the graded model existed.
VERSION_1_ACC2 = {"l": 89.1, "a": 59.8, "v": 58.0, "a,v": 62.2, "Full": 89.2}
VERSION_1_CORR = {"l": 0.913, "a": 0.282, "v": 0.230}
ACC2_TOLERANCE = 1.0
CORR_TOLERANCE = 0.02


def _raw(path: Path) -> dict:
    """The generator's own output, loaded with the plain (trusting) unpickler."""
    return pickle.loads(path.read_bytes())


def _split_digest(split: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(split):
        value = np.asarray(split[key])
        digest.update(key.encode())
        if value.dtype == object:
            digest.update(repr(value.tolist()).encode())
        else:
            digest.update(f"{value.dtype.str}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def ceilings() -> dict[str, dict[str, dict[str, float]]]:
    return {signal: ideal_ceilings(SyntheticSentimentSpec(signal=signal)) for signal in ("graded", "shared")}


# --- the ceilings ------------------------------------------------------------------------------------------

def test_ceilings_cover_the_seven_table_subsets_in_order(ceilings):
    assert TABLE_SUBSETS[-1] == table_subset_name(MODALITIES)
    for signal in ceilings.values():
        assert list(signal) == list(TABLE_SUBSETS)
        assert all(list(scores) == ["acc2_non0", "mae", "corr"] for scores in signal.values())


def test_graded_ceilings_let_every_modality_add_something(ceilings):
    acc2 = {subset: scores["acc2_non0"] for subset, scores in ceilings["graded"].items()}
    assert 76 < acc2["l"] < 80 and 70 < acc2["a"] < 75 and 66 < acc2["v"] < 70 and 80 < acc2["Full"] < 84
    assert acc2["Full"] - acc2["l"] >= 2  # audio and vision know what language does not
    assert acc2["l"] > acc2["a"] > acc2["v"] and acc2["a,v"] > acc2["a"]
    assert acc2["Full"] > max(acc2["l,a"], acc2["l,v"]) > acc2["l"]
    # Language stays the strongest per frame, so it is learnt first.
    assert GRADED_STRENGTH["l"] > max(GRADED_STRENGTH["a"], GRADED_STRENGTH["v"])


def test_shared_ceilings_reproduce_version_1s_measurements(ceilings):
    shared = ceilings["shared"]
    for subset, expected in VERSION_1_ACC2.items():
        assert shared[subset]["acc2_non0"] == pytest.approx(expected, abs=ACC2_TOLERANCE)
    for subset, expected in VERSION_1_CORR.items():
        assert shared[subset]["corr"] == pytest.approx(expected, abs=CORR_TOLERANCE)


def test_ceilings_are_deterministic_and_ignore_the_seed(ceilings):
    assert ideal_ceilings(SyntheticSentimentSpec(seed=7, samples=(1, 1, 1))) == ceilings["graded"]


def test_ceilings_describe_the_generated_audio_and_vision(tmp_path, ceilings):
    # Ridge on mean-pooled audio (5) and vision (20) features of a generated file reaches the
    # simulated correlations: the ceilings model what the generator writes.
    spec = SyntheticSentimentSpec("mult", "mosi", True, (1500, 10, 1500), seed=3)
    dataset = read_sentiment_data(make_synthetic_sentiment(tmp_path / "f.pkl", spec))

    def pooled(name: str, modalities: tuple[str, ...]) -> np.ndarray:
        columns = []
        for modality in modalities:
            sequences = dataset.splits[name].sequences[modality]
            real = ~sequences.padding_mask
            columns.append((sequences.features * real[..., None]).sum(1) / real.sum(1, keepdims=True))
        return np.c_[np.concatenate(columns, axis=1), np.ones(len(dataset.splits[name]))]

    train, test = dataset.splits["train"], dataset.splits["test"]
    for subset, modalities in (("a", ("a",)), ("v", ("v",)), ("a,v", ("a", "v"))):
        features = pooled("train", modalities)
        weights = np.linalg.lstsq(features, train.labels.astype(np.float64), rcond=None)[0]
        achieved = pearson_r(pooled("test", modalities) @ weights, test.labels)
        assert achieved == pytest.approx(ceilings["graded"][subset]["corr"], abs=0.07)


# --- the files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, aligned", sorted(VERSION_1_DIGESTS))
def test_shared_writes_version_1s_splits(tmp_path, fmt, aligned):
    spec = SyntheticSentimentSpec(fmt, "mosei" if aligned else "mosi", aligned, TINY_SAMPLES, seed=5, signal="shared")
    raw = _raw(make_synthetic_sentiment(tmp_path / "f.pkl", spec))
    assert tuple(_split_digest(raw[name]) for name in SPLITS) == VERSION_1_DIGESTS[(fmt, aligned)]


def test_graded_is_deterministic_per_seed_and_differs_from_shared(tmp_path):
    def write(name: str, seed: int, signal: str = "graded") -> bytes:
        spec = SyntheticSentimentSpec("mmsa", "mosei", False, TINY_SAMPLES, seed, signal)
        return make_synthetic_sentiment(tmp_path / name, spec).read_bytes()

    assert write("a.pkl", 3) == write("b.pkl", 3) != write("c.pkl", 4)
    graded, shared = _raw(tmp_path / "a.pkl"), _raw(make_synthetic_sentiment(
        tmp_path / "s.pkl", SyntheticSentimentSpec("mmsa", "mosei", False, TINY_SAMPLES, 3, "shared")))
    assert not np.array_equal(graded["train"]["regression_labels"], shared["train"]["regression_labels"])


def test_the_pickle_records_its_spec_first_and_readers_ignore_it(tmp_path):
    spec = SyntheticSentimentSpec("mult", "mosei", False, TINY_SAMPLES, seed=2, signal="shared")
    path = make_synthetic_sentiment(tmp_path / "mosei_senti_data_noalign.pkl", spec)
    raw = _raw(path)
    assert list(raw) == [RECORD_KEY, *SPLITS]
    assert json.loads(raw[RECORD_KEY]) == {"generator_version": GENERATOR_VERSION, "format": "mult",
                                           "dataset": "mosei", "aligned": False, "samples": list(TINY_SAMPLES),
                                           "seed": 2, "signal": "shared"}
    assert SyntheticSentimentSpec.from_record(raw[RECORD_KEY]) == spec
    assert list(read_sentiment_data(path).splits) == list(SPLITS)


@pytest.mark.parametrize("record, message", [
    ("{", "not a JSON object"),
    (json.dumps({"generator_version": 1}), "generator version 1"),
    (json.dumps({"generator_version": GENERATOR_VERSION, "seed": 1}), "field 'format'"),
    (json.dumps({"generator_version": GENERATOR_VERSION, "format": "mmsa", "dataset": "mosi", "aligned": True,
                 "samples": [1, 1, 1], "seed": True, "signal": "graded"}), "field 'seed'"),
    (json.dumps({"generator_version": GENERATOR_VERSION, "format": "mmsa", "dataset": "mosi", "aligned": True,
                 "samples": [1, 1, 1], "seed": 0, "signal": "loud"}), "signal 'loud'"),
])
def test_a_bad_record_is_refused(record, message):
    with pytest.raises(ConfigurationError, match=message):
        SyntheticSentimentSpec.from_record(record)


def test_an_unknown_signal_is_refused():
    with pytest.raises(ConfigurationError, match="did you mean 'shared'"):
        SyntheticSentimentSpec(signal="share")


# --- verify and make-synthetic -----------------------------------------------------------------------------

def _rewrite(path: Path, target: Path, record: object | None = None, first: bool = True) -> Path:
    """``path``'s splits, re-pickled with ``record`` under the record key (none when None)."""
    splits = {name: _raw(path)[name] for name in SPLITS}
    if record is None:
        data = splits
    else:
        data = {RECORD_KEY: record, **splits} if first else {**splits, RECORD_KEY: record}
    target.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return target


@pytest.mark.parametrize("record, note", [(42, "not a JSON string"), ("{", "not a JSON object"),
                                          (json.dumps({"generator_version": 1}), "generator version 1")])
def test_verify_notes_a_malformed_record_in_one_line(tmp_path, record, note):
    path = make_synthetic_sentiment(tmp_path / "f.pkl", SyntheticSentimentSpec(samples=TINY_SAMPLES))
    described = describe_generator(_rewrite(path, tmp_path / "bad.pkl", record))
    assert described is not None and "\n" not in described
    assert described.startswith(f"generator: the {RECORD_KEY!r} key is ignored") and note in described


def test_verify_reads_the_record_only_at_the_head_of_the_pickle(tmp_path):
    path = make_synthetic_sentiment(tmp_path / "f.pkl", SyntheticSentimentSpec(samples=TINY_SAMPLES))
    assert describe_generator(_rewrite(path, tmp_path / "last.pkl", _raw(path)[RECORD_KEY], first=False)) is None
    # Every pickle protocol writes the head the same way.
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = tmp_path / f"p{protocol}.pkl"
        again.write_bytes(pickle.dumps(_raw(path), protocol=protocol))
        assert describe_generator(again).startswith("generator: make-synthetic version")


def test_make_synthetic_signal_then_verify_prints_the_ceilings(tmp_path, run_cli, ceilings):
    path = tmp_path / "aligned_50.pkl"
    made = run_cli("sentiment", "make-synthetic", "-o", path, "--samples", "5,2,3", "--seed", "4",
                   "--signal", "shared")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().endswith("seed 4, signal shared")
    assert json.loads(_raw(path)[RECORD_KEY])["signal"] == "shared"
    verified = run_cli("sentiment", "verify", "--data", path)
    assert verified.returncode == 0, verified.stderr
    block = verified.stdout.split("\n\n")[-1].splitlines()
    assert block[0] == f"generator: make-synthetic version {GENERATOR_VERSION}, signal shared, seed 4 (MOSI, mmsa, " \
                       "aligned)"
    rows = [line.split() for line in block[-len(TABLE_SUBSETS):]]
    assert [row[0] for row in rows] == list(TABLE_SUBSETS)
    for row, (subset, scores) in zip(rows, ceilings["shared"].items()):
        assert row[1:] == [f"{scores['acc2_non0']:.1f}", f"{scores['mae']:.3f}", f"{scores['corr']:.3f}"], subset

    plain = run_cli("sentiment", "verify", "--data", _rewrite(path, tmp_path / "real.pkl"))
    assert plain.returncode == 0, plain.stderr
    assert "generator" not in plain.stdout and "ceilings" not in plain.stdout and "labels:" in plain.stdout
    malformed = run_cli("sentiment", "verify", "--data", _rewrite(path, tmp_path / "bad.pkl", b"\x00"))
    assert malformed.returncode == 0 and "Traceback" not in malformed.stderr
    assert malformed.stdout.strip().splitlines()[-1] == (f"generator: the {RECORD_KEY!r} key is ignored "
                                                         "(not a JSON string)")


def test_make_synthetic_defaults_to_graded_and_refuses_an_unknown_signal(tmp_path, run_cli):
    path = tmp_path / "mosi_data.pkl"
    made = run_cli("sentiment", "make-synthetic", "-o", path, "--format", "mult", "--samples", "3,2,2")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().endswith("signal graded")
    assert json.loads(_raw(path)[RECORD_KEY])["signal"] == "graded"
    refused = run_cli("sentiment", "make-synthetic", "-o", tmp_path / "x.pkl", "--signal", "loud")
    assert refused.returncode == 2 and "Invalid value for '--signal': 'loud'" in refused.stderr
    assert not (tmp_path / "x.pkl").exists()
