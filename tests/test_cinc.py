"""PhysioNet/CinC 2020/2021 source on the real records and on broken copies in the real layout, CPSC 2018 in its
original MATLAB layout, and the official challenge metric checked by hand."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from conftest import SAMPLES, need

from ecg_adapt.data import RecordError, build_cache, open_source
from ecg_adapt.data.cinc import (
    CINC_SOURCES,
    CinC2021,
    hash_split,
    packaged_resource,
    parse_dx,
    scored_classes,
    source_of_record,
)
from ecg_adapt.data.cpsc2018 import CPSC2018, CPSC2018_CLASSES, cpsc2018_score
from ecg_adapt.models import load_processor
from ecg_adapt.models.hubert_ecg import HUBERT_ECG_CONTRACT, default_processor_steps
from ecg_adapt.processing import ECGProcessor
from ecg_adapt.tasks.challenge import (
    ChallengeTask,
    challenge_score,
    challenge_score_from_probabilities,
    challenge_score_parts,
    load_weights,
)

# The "# Dx:" lines of the 30 real records, as written in their headers.
REAL_DX = {
    "E07500": "67741000119109,426177001", "E07501": "253352002,427084000", "E07502": "427084000",
    "E07503": "253352002,427084000", "E07504": "111975006", "E07505": "164873001", "E07506": "426783006",
    "E07507": "428750005,111975006", "E07508": "253352002,427084000", "E07509": "59118001,426177001",
    "E07510": "59118001,426177001", "E07511": "426783006", "E07512": "426177001", "E07513": "426783006",
    "E07514": "427084000,426434006,59931005", "E07515": "426783006", "E07516": "164934002", "E07517": "427084000",
    "E07518": "426783006", "E07519": "164873001", "HR06000": "164934002,426783006", "HR06001": "426783006,55930002",
    "HR06002": "426177001,426783006,713426002", "HR06003": "426783006,427084000", "HR06004": "426783006",
    "HR06005": "426783006", "HR06006": "426783006", "HR06007": "426783006", "HR06008": "426783006",
    "HR06009": "426783006",
}
AF, AFL, NSR, TAB = "164889003", "164890007", "426783006", "164934002"
CRBBB_RBBB = "713427006|59118001"


# ---------------------------------------------------------------- fixtures in the real layout
def _copy_record(src_dir: Path, name: str, dst_dir: Path, new_name: str | None = None) -> Path:
    """Copy a real record; with ``new_name`` the files and the header's record/file names are renamed."""
    new_name = new_name or name
    dst_dir.mkdir(parents=True, exist_ok=True)
    text = (src_dir / f"{name}.hea").read_text().replace(name, new_name)
    (dst_dir / f"{new_name}.hea").write_text(text)
    shutil.copyfile(src_dir / f"{name}.mat", dst_dir / f"{new_name}.mat")
    return dst_dir / new_name


def _edit_header(base: Path, old: str, new: str) -> None:
    hea = base.with_name(base.name + ".hea")
    text = hea.read_text()
    assert old in text, (old, hea)
    hea.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def real() -> Path:
    return need(SAMPLES) / "cinc2021"


@pytest.fixture(scope="module")
def tree(real: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``training/<source>/gN/`` with real records, renamed JS records, and one broken record per problem."""
    root = tmp_path_factory.mktemp("challenge") / "training"
    for name in ("E07500", "E07501", "E07502", "E07503", "E07504", "E07505", "E07506", "E07507", "E07508", "E07509"):
        _copy_record(real, name, root / "georgia" / "g1")
    for name in ("HR06000", "HR06001", "HR06002", "HR06003", "HR06004"):
        _copy_record(real, name, root / "ptb-xl" / "g1")
    _copy_record(real, "HR06005", root / "chapman_shaoxing" / "g1", "JS00001")
    _copy_record(real, "HR06006", root / "ningbo" / "g1", "JS10647")
    bad = root / "georgia" / "g2"
    _edit_header(_copy_record(real, "E07510", bad), "E07510 12 500 5000", "E07510 12 500 6000")  # header longer
    _edit_header(_copy_record(real, "E07518", bad), "E07518 12 500 5000", "E07518 12 500 4000")  # header shorter
    mat = _copy_record(real, "E07511", bad).with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:60_000])  # half the samples
    _copy_record(real, "E07512", bad).with_suffix(".mat").unlink()
    _edit_header(_copy_record(real, "E07513", bad), "# Dx: 426783006", "# Dx: 426783006,999999999")
    _edit_header(_copy_record(real, "E07514", bad), "# Dx: 427084000,426434006,59931005", "# Dx: 427084000,,59931005,")
    nan_mat = _copy_record(real, "E07515", bad).with_suffix(".mat")
    data = bytearray(nan_mat.read_bytes())
    struct.pack_into("<h", data, 24 + (10 * 12 + 2) * 2, -32768)  # WFDB's invalid sample, lead III, sample 10
    nan_mat.write_bytes(bytes(data))
    flat_mat = _copy_record(real, "E07516", bad).with_suffix(".mat")
    flat_mat.write_bytes(flat_mat.read_bytes()[:24] + bytes(120_000))  # every lead 0
    _edit_header(_copy_record(real, "E07517", bad), "# Dx: 427084000\n", "")
    _copy_record(real, "E07500", root / "georgia" / "g3")  # same name twice
    stray = root / "extra"
    stray.mkdir()
    (stray / "00001_lr.hea").write_text("00001_lr 1 100 1000\n00001_lr.dat 16 1000.0(0)/mV 16 0 0 0 0 I\n")
    return root


# ---------------------------------------------------------------- real records
def test_real_headers_give_the_dx_codes_sources_and_scored_classes(real: Path) -> None:
    ds = CinC2021(real)
    assert list(ds.records.index) == sorted(REAL_DX)
    for rid, dx in REAL_DX.items():
        assert ds.records.at[rid, "dx"] == dx.split(","), rid
        assert ds.source_of(rid) == ("georgia" if rid.startswith("E") else "ptb-xl")
    assert ds.records.at["E07500", "age"] == 78 and ds.records.at["HR06000", "sex"] == "Female"
    assert len(ds.report) == 0  # every code of the real headers is in the mapping files
    scored = ds.label_sets("scored")
    assert scored["E07509"] == ["426177001", CRBBB_RBBB]  # RBBB 59118001 is scored together with CRBBB
    assert scored["E07514"] == ["427084000", "59931005"]  # anterior ischemia 426434006 is unscored
    assert scored["HR06002"] == ["426177001", NSR, "713426002"]
    assert "E07505" not in scored.index and "E07519" not in scored.index  # only LVH (164873001): unscored
    summary = ds.summary()
    assert summary.loc["georgia"].tolist() == [20, 20, 18, 2] and summary.loc["ptb-xl"].tolist() == [10, 10, 10, 0]
    negatives = CinC2021(real, unscored_records="negative").label_sets("scored")
    assert negatives["E07505"] == [] and len(negatives) == 30
    assert ds.label_sets("all")["E07505"] == ["164873001"]
    assert ds.abbreviations()[CRBBB_RBBB] == "CRBBB|RBBB"
    task = ds.task("scored")
    assert isinstance(task, ChallengeTask) and task.labels == load_weights().classes and task.name == "cinc2021/scored"
    y = task.encode([scored[i] for i in scored.index])
    assert y.shape == (28, 26) and y.sum() == sum(len(v) for v in scored)


def test_real_records_are_read_through_wfdb_into_the_cache(real: Path, tiny_backbone_dir: Path, tmp_path: Path) -> None:
    ds = CinC2021(real)
    rec = ds.read("E07500")
    assert rec.signal.shape == (12, 5000) and rec.sampling_rate == 500 and rec.lead_names[3] == "aVR"
    assert rec.meta == {"source": "georgia", "age": 78.0, "sex": "Male", "dx": ["67741000119109", "426177001"]}
    assert abs(rec.signal[0, 0] - (-68 / 1000.0)) < 1e-12  # first sample of lead I from the header: -68 adu, 1000 adu/mV
    cache = build_cache(ds, load_processor(tiny_backbone_dir), list(ds.records.index), cache_dir=tmp_path, progress=False)
    assert cache.report["n_cached"] == 30 and cache.report["n_windows"] == 60 and cache.skipped == []
    assert cache.report["source"] == ds.fingerprint()


# ---------------------------------------------------------------- labels, classes, sources
def test_scored_classes_are_the_weight_table_with_its_equivalence_pairs() -> None:
    classes = scored_classes(2021)
    mapping = pd.read_csv(packaged_resource("cinc2021_dx_mapping_scored.csv"), dtype={"SNOMEDCTCode": str})
    codes = [c for name in classes for c in name.split("|")]
    assert len(classes) == 26 and sorted(codes) == sorted(mapping["SNOMEDCTCode"])  # 30 codes, each in one class
    assert sorted(n for n in classes if "|" in n) == ["284470004|63593006", "427172004|17338001", "713427006|59118001",
                                                      "733534002|164909002"]
    old = scored_classes(2020)
    assert len(old) == 24 and "164909002" in old and not {"6374002", "365413008"} & set(old)
    assert sum("|" in n for n in old) == 3


def test_sources_are_told_apart_by_record_name() -> None:
    names = {"A0001": "cpsc_2018", "Q0400": "cpsc_2018_extra", "I0002": "st_petersburg_incart", "S0001": "ptb",
             "HR00001": "ptb-xl", "E00001": "georgia", "JS00001": "chapman_shaoxing", "JS10646": "chapman_shaoxing",
             "JS10647": "ningbo", "JS45551": "ningbo"}
    assert {n: source_of_record(n) for n in names} == names
    assert set(names.values()) == set(CINC_SOURCES)
    for bad in ("00001_lr", "X001", "HR", "a0001"):
        with pytest.raises(ValueError, match="not a PhysioNet/CinC"):
            source_of_record(bad)


def test_dx_parsing_tolerates_empty_entries_and_says_so() -> None:
    assert parse_dx("164934002,426783006") == (["164934002", "426783006"], [])
    codes, problems = parse_dx(" 427084000,,59931005, ")
    assert codes == ["427084000", "59931005"] and problems == ["empty entries in Dx: 427084000,,59931005,"]
    codes, problems = parse_dx("284470004,284470004,Unknown")
    assert codes == ["284470004"] and "not SNOMED CT codes: ['Unknown']" in problems[0]


# ---------------------------------------------------------------- the nested layout and its problems
def test_nested_tree_is_indexed_and_label_problems_are_reported(tree: Path) -> None:
    ds = CinC2021(tree.parent)
    assert ds.records.at["JS00001", "source"] == "chapman_shaoxing" and ds.records.at["JS10647", "source"] == "ningbo"
    assert ds.records.at["E07500", "header"].endswith("georgia/g1/E07500.hea")  # the first of the duplicates
    assert ds.summary().loc[["georgia", "ptb-xl", "chapman_shaoxing", "ningbo"], "records"].tolist() == [19, 5, 1, 1]
    found = {(e["record_id"], e["reason"]) for e in ds.report.entries}
    assert found == {("00001_lr", "unknown_source"), ("E07500", "duplicate_record"), ("E07513", "unknown_code"),
                     ("E07514", "malformed_dx"), ("E07517", "missing_dx")}
    assert "999999999" in next(e["detail"] for e in ds.report.entries if e["reason"] == "unknown_code")
    scored = ds.label_sets("scored")
    assert scored["E07513"] == [NSR] and scored["E07514"] == ["427084000", "59931005"]
    assert "E07517" not in scored.index and "E07517" in ds.records.index


def test_signal_problems_are_yielded_with_their_reason_and_raise_on_request(tree: Path, tmp_path: Path) -> None:
    ds = CinC2021(tree)
    out = dict(ds.iter_records())
    errors = {rid: r.reason for rid, r in out.items() if isinstance(r, RecordError)}
    assert errors == {"E07510": "length_mismatch", "E07518": "length_mismatch", "E07511": "truncated",
                      "E07512": "missing_file", "E07516": "flat_signal"}
    assert "promises 12 leads x 6000 samples but E07510.mat holds 12 x 5000" in out["E07510"].detail
    nan_rec = out["E07515"]
    assert np.isnan(nan_rec.signal).sum() == 1 and np.isnan(nan_rec.signal[2, 10])
    reasons = ds.report.by_reason
    assert reasons["nan_samples"] == 1 and "flat_leads" not in reasons
    list(ds.iter_records(["E07515"]))
    assert ds.report.by_reason["nan_samples"] == 1  # reported once however often it is read
    ids = sorted(errors) + ["E07501", "E07515", "JS10647"]
    cache = build_cache(ds, _hubert_processor(), ids, cache_dir=tmp_path / "cache", progress=False)
    assert cache.report["skipped_by_reason"] == {"length_mismatch": 2, "truncated": 1, "missing_file": 1, "flat_signal": 1}
    report = json.loads((cache.path / "report.json").read_text())
    assert report["n_cached"] == 3 and report["processing_notes"] == {"NaN samples interpolated": 1}

    with pytest.raises(RecordError) as err:
        CinC2021(tree, on_error="raise")
    assert err.value.reason in {"unknown_source", "duplicate_record", "unknown_code", "malformed_dx", "missing_dx"}
    strict = CinC2021(tree / "georgia" / "g1", on_error="raise")  # clean headers: indexing passes
    assert len(strict) == 10
    only_truncated = tmp_path / "one"
    shutil.copytree(tree / "georgia" / "g2", only_truncated, ignore=lambda d, names: [
        n for n in names if not n.startswith("E07511")])
    with pytest.raises(RecordError, match="truncated"):
        list(CinC2021(only_truncated, on_error="raise").iter_records())


def _hubert_processor() -> ECGProcessor:
    return ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps())


# ---------------------------------------------------------------- splits
def test_hash_split_is_deterministic_and_close_to_the_fractions() -> None:
    ids = [f"JS{i:05d}" for i in range(20_000)]
    splits = pd.Series([hash_split(i) for i in ids]).value_counts(normalize=True)
    assert abs(splits["train"] - 0.8) < 0.01 and abs(splits["validation"] - 0.1) < 0.01 and abs(splits["test"] - 0.1) < 0.01
    assert [hash_split(i) for i in ids[:50]] == [hash_split(i) for i in ids[:50]]
    assert [hash_split(i, seed=1) for i in ids[:200]] != [hash_split(i) for i in ids[:200]]
    assert {hash_split(i, fractions=(1.0, 0.0, 0.0)) for i in ids[:100]} == {"train"}


def test_splits_partition_the_labelled_records_and_leave_one_source_out(tree: Path) -> None:
    ds = CinC2021(tree)
    task = ds.task("scored")
    parts = {s: ds.split_ids(task, s) for s in ("train", "validation", "test")}
    assert sorted(r for ids in parts.values() for r in ids) == sorted(ds.label_sets("scored").index)
    assert parts == {s: CinC2021(tree).split_ids("scored", s) for s in parts}  # same on a fresh index
    assert all(ds.split_of(r) == s for s, ids in parts.items() for r in ids)
    by_source = ds.ids_by_source(parts["train"])
    assert sum(map(len, by_source.values())) == len(parts["train"]) and set(by_source) <= set(CINC_SOURCES)

    loso = CinC2021(tree, holdout_source="ptb-xl")
    test = loso.split_ids("scored", "test")
    assert sorted(test) == ["HR06000", "HR06001", "HR06002", "HR06003", "HR06004"]
    rest = loso.split_ids("scored", "train") + loso.split_ids("scored", "validation")
    assert rest and not any(loso.source_of(r) == "ptb-xl" for r in rest)
    assert sorted(rest + test) == sorted(loso.label_sets("scored").index)
    with pytest.raises(ValueError, match="holdout_source 'mitdb'"):
        CinC2021(tree, holdout_source="mitdb")
    with pytest.raises(ValueError, match="split_fractions"):
        CinC2021(tree, split_fractions=(0.8, 0.3, 0.1))


def test_year_2020_uses_its_classes_and_sources_and_both_years_are_registered(tree: Path) -> None:
    ds = open_source("cinc2020", tree)
    assert ds.name == "cinc2020" and "JS00001" not in ds.records.index and "chapman_shaoxing" not in ds.sources
    task = ds.task("scored")
    assert task.num_labels == 24 and task.name == "cinc2020/scored"
    assert open_source("cinc2021", tree, sources=["ningbo"]).records.index.tolist() == ["JS10647"]
    with pytest.raises(ValueError, match="Unknown CinC task 'rhythm'"):
        ds.task("rhythm")


# ---------------------------------------------------------------- CPSC 2018
def _cpsc_signal(seed: int, seconds: float) -> np.ndarray:
    """Twelve leads in mV whose limb leads obey Einthoven's and Goldberger's identities."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(500 * seconds)) / 500
    lead_i = 0.8 * np.sin(2 * np.pi * 1.2 * t) + 0.02 * rng.standard_normal(t.size)
    lead_ii = 1.1 * np.sin(2 * np.pi * 1.2 * t + 0.3) + 0.02 * rng.standard_normal(t.size)
    limb = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    chest = [0.5 * np.sin(2 * np.pi * 1.2 * t + k) for k in range(6)]
    return np.vstack(limb + chest)


@pytest.fixture
def cpsc_root(tmp_path: Path) -> Path:
    """The CPSC 2018 layout: TrainingSet*/A*.mat (MATLAB 5 struct ECG) and REFERENCE.csv."""
    root = tmp_path / "cpsc2018"
    files = {"TrainingSet1/A0001": ("Male", 52, 10), "TrainingSet1/A0002": ("Female", 71, 6.5),
             "TrainingSet2/A0003": ("Male", np.nan, 12), "TrainingSet3/A0006": ("Female", 40, 8),
             "TrainingSet3/A0007": ("Male", 60, 10)}
    for i, (name, (sex, age, seconds)) in enumerate(files.items()):
        path = root / f"{name}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        age_value = np.array([[age]], dtype=np.uint8) if np.isfinite(age) else np.array([[np.nan]])
        ecg = {"sex": sex, "age": age_value, "data": _cpsc_signal(i, seconds)}
        scipy.io.savemat(path, {"ECG": ecg}, do_compression=True)  # MATLAB's default: compressed elements
    broken = root / "TrainingSet3" / "A0007.mat"
    broken.write_bytes(broken.read_bytes()[:300])
    (root / "REFERENCE.csv").write_text(
        "Recording,First_label,Second_label,Third_label\n"
        "A0001,1,,\nA0002,2,6,\nA0003,5,8,1\nA0004,7,,\nA0005,10,,\nA0007,3,,\n"
    )
    return root


def test_cpsc2018_reads_the_original_matlab_layout(cpsc_root: Path) -> None:
    assert scipy.io.whosmat(cpsc_root / "TrainingSet1" / "A0001.mat") == [("ECG", (1, 1), "struct")]
    assert (cpsc_root / "TrainingSet1" / "A0001.mat").read_bytes().startswith(b"MATLAB 5.0 MAT-file")
    ds = open_source("cpsc2018", cpsc_root)
    found = {(e["record_id"], e["reason"]) for e in ds.report.entries}
    assert found == {("A0005", "unknown_code"), ("A0005", "missing_label"), ("A0006", "unlabelled")}
    rec = ds.read("A0002")
    assert rec.signal.shape == (12, 3250) and rec.sampling_rate == 500 and rec.lead_names[:4] == ["I", "II", "III", "aVR"]
    assert np.allclose(rec.signal[2], rec.signal[1] - rec.signal[0])  # lead order kept: III = II - I
    assert rec.meta == {"age": 71.0, "sex": "Female", "labels": ["AF", "PAC"]}
    assert ds.read("A0003").meta["age"] is None
    errors = {rid: r.reason for rid, r in ds.iter_records() if isinstance(r, RecordError)}
    assert errors == {"A0004": "missing_file", "A0007": "truncated", "A0005": "missing_file"}
    with pytest.raises(RecordError, match="truncated"):
        ds.read("A0007")
    with pytest.raises(RecordError, match="unknown_code"):
        CPSC2018(cpsc_root, on_error="raise")


def test_cpsc2018_tasks_use_the_cinc_class_names(cpsc_root: Path) -> None:
    ds = CPSC2018(cpsc_root)
    sets = ds.label_sets("diagnosis")
    assert sets.to_dict() == {"A0001": [NSR], "A0002": [AF, "284470004|63593006"],
                              "A0003": [CRBBB_RBBB, "429622005", NSR], "A0004": ["164884008"], "A0007": ["270492004"]}
    assert ds.label_sets("first_label")["A0003"] == [CRBBB_RBBB]
    task = ds.task("diagnosis")
    assert task.labels == [c.snomed for c in CPSC2018_CLASSES] and task.multi_label
    scored = set(load_weights().classes)
    assert set(task.labels[:6]) <= scored and not set(task.labels[6:]) & scored  # Normal..PAC scored; PVC, STD, STE not
    assert not ds.task("first_label").multi_label
    cpsc = CPSC2018(cpsc_root, label_names="cpsc")
    assert cpsc.label_sets("diagnosis")["A0003"] == ["RBBB", "STD", "Normal"]
    split = {s: ds.split_ids(task, s) for s in ("train", "validation", "test")}
    assert sorted(r for ids in split.values() for r in ids) == sorted(sets.index)


def test_cpsc2018_score_counts_any_reference_label_as_correct() -> None:
    # Records: {Normal} predicted Normal; {AF, PAC} predicted PAC (correct: PAC is one of its labels);
    # {RBBB} predicted Normal (charged to RBBB's row). Matrix: N11 = 1, N66 = 1, N51 = 1.
    # F_Normal = 2*1 / (row 1 + column 1) = 2 / (1 + 2); F_RBBB = 0 / (1 + 0) = 0; F_PAC = 2 / (1 + 1) = 1;
    # AF, I-AVB, LBBB, PVC, STD, STE have no reference and no prediction: undefined, so is the mean.
    out = cpsc2018_score([[1], [2, 6], [5]], [1, 6, 1])
    assert out["per_class"][0] == pytest.approx(2 / 3) and out["per_class"][4] == 0 and out["per_class"][5] == 1
    assert np.isnan(out["per_class"][1]) and np.isnan(out["f1"])
    full = cpsc2018_score([[c] for c in range(1, 10)] + [[1, 2]], list(range(1, 10)) + [2])
    assert full["f1"] == 1.0


# ---------------------------------------------------------------- the challenge metric
def _loop_score(W: np.ndarray, Y: np.ndarray, P: np.ndarray, normal: int) -> float:
    """The definition written as loops over records and class pairs, independent of the vectorised code."""
    def s(pred: np.ndarray) -> float:
        total = 0.0
        for y, p in zip(Y, pred):
            n = max(int(np.sum(y | p)), 1)
            total += sum(W[j, k] / n for j in range(len(y)) for k in range(len(p)) if y[j] and p[k])
        return total
    inactive = np.zeros_like(P)
    inactive[:, normal] = True
    return (s(P) - s(inactive)) / (s(Y) - s(inactive))


def test_weights_table_is_the_26_class_2021_matrix() -> None:
    w = load_weights()
    assert len(w.classes) == 26 and w.matrix.shape == (26, 26)
    assert np.allclose(np.diag(w.matrix), 1) and np.allclose(w.matrix, w.matrix.T) and w.matrix.min() == 0.15
    assert w.classes.index("733534002|164909002") == 4


def test_perfect_is_one_and_always_normal_is_zero() -> None:
    w = load_weights()
    rng = np.random.default_rng(0)
    y = rng.random((40, 26)) < 0.15
    assert challenge_score(y, y, w.classes) == 1.0
    inactive = np.zeros_like(y)
    inactive[:, w.classes.index(NSR)] = True
    assert challenge_score(y, inactive, w.classes) == 0.0


def test_two_records_by_hand() -> None:
    w = load_weights()
    i = {c: k for k, c in enumerate(w.classes)}
    # the weights used below, as printed in weights.csv
    assert w.matrix[i[AF], i[AFL]] == 0.5 and w.matrix[i[TAB], i[NSR]] == 0.25 and w.matrix[i[AF], i[NSR]] == 0.25
    # record 1: true {AF}, predicted {AF, AFL}  -> union 2: A[AF,AF] += 1/2, A[AF,AFL] += 1/2
    # record 2: true {NSR, TAb}, predicted {NSR} -> union 2: A[NSR,NSR] += 1/2, A[TAb,NSR] += 1/2
    # observed = 1*0.5 + 0.5*0.5 + 1*0.5 + 0.25*0.5                                    = 1.375
    # correct  = rec 1: A[AF,AF] = 1; rec 2 (union 2): (1 + 0.25 + 0.25 + 1) / 2      = 2.25
    # inactive = rec 1 {AF} vs {NSR} (union 2): 0.25/2; rec 2: (1 + 0.25) / 2          = 0.75
    # score    = (1.375 - 0.75) / (2.25 - 0.75)                                         = 5/12
    classes = [AF, AFL, NSR, TAB]
    y_true = np.array([[1, 0, 0, 0], [0, 0, 1, 1]])
    y_pred = np.array([[1, 1, 0, 0], [0, 0, 1, 0]])
    parts = challenge_score_parts(y_true, y_pred, classes)
    assert parts == pytest.approx({"observed": 1.375, "correct": 2.25, "inactive": 0.75, "score": 5 / 12})
    assert challenge_score_from_probabilities(y_true, np.array([[0.9, 0.6, 0.1, 0.2], [0.3, 0.1, 0.8, 0.4]]),
                                              classes, thresholds=[0.5, 0.5, 0.5, 0.5]) == pytest.approx(5 / 12)
    assert challenge_score_from_probabilities(y_true, np.array([[0.9, 0.6, 0.1, 0.2], [0.3, 0.1, 0.8, 0.4]]),
                                              classes, thresholds=[0.5, 0.7, 0.5, 0.3]) == 1.0


def test_equivalent_codes_are_one_class_and_unscored_columns_are_ignored() -> None:
    y_true = np.array([[1, 0, 0], [0, 0, 1]])  # CRBBB; NSR
    crbbb_as_rbbb = np.array([[0, 1, 0], [0, 0, 1]])  # predicts RBBB, the equivalent code
    assert challenge_score(y_true, crbbb_as_rbbb, ["713427006", "59118001", NSR]) == 1.0
    assert challenge_score(y_true, crbbb_as_rbbb, [CRBBB_RBBB, "59118001", NSR]) == 1.0
    with_lvh = np.hstack([crbbb_as_rbbb, [[1], [1]]])  # an unscored code (LVH) predicted everywhere: no effect
    assert challenge_score(np.hstack([y_true, [[0], [0]]]), with_lvh, ["713427006", "59118001", NSR, "164873001"]) == 1.0


def test_vectorised_metric_matches_the_definition_written_as_loops() -> None:
    w = load_weights()
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.random((25, 26)) < 0.12
        y[0] = False  # a record without any scored label
        p = rng.random((25, 26)) < 0.2
        assert challenge_score(y, p, w.classes) == pytest.approx(_loop_score(w.matrix, y, p, w.classes.index(NSR)), abs=1e-12)


def test_challenge_task_adds_the_score_and_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    task = ChallengeTask("cinc2021/scored", [NSR, AF, TAB])
    m = task.metrics(np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1]]), np.array([[0.8, 0.1, 0.2], [0.1, 0.9, 0.7], [0.6, 0.2, 0.9]]))
    assert m["challenge_score"] == 1.0 and "macro_auroc" in m
    assert ChallengeTask("x", ["164873001"]).metrics(np.array([[1], [0]]), np.array([[0.9], [0.1]]))["challenge_score"] is None
    with pytest.raises(ValueError, match="must be binary"):
        challenge_score(np.array([[1, 0]]), np.array([[0.7, 0.2]]), [NSR, AF])
    with pytest.raises(ValueError, match="normal class '426783006'"):
        challenge_score(np.array([[1, 0]]), np.array([[1, 0]]), [AF, AFL], weights=np.eye(2))
    with pytest.raises(ValueError, match="None of the classes"):
        challenge_score(np.array([[1]]), np.array([[1]]), ["164873001"])
    bad = tmp_path / "weights.csv"
    bad.write_text(",1,2\n1,1.0,0.5\n3,0.5,1.0\n")
    with pytest.raises(ValueError, match="must be the same classes"):
        load_weights(bad)
