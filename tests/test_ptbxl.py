"""PTB-XL: the real layout, the benchmark label aggregations, folds, and bad records in the cache build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecg_adapt.data import PTBXL, build_cache, read_wfdb, RecordError
from ecg_adapt.data.cache import WindowDataset
from ecg_adapt.data.ptbxl import PTBXL_COLUMNS, packaged_scp_statements
from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.models.hubert_ecg import HUBERT_ECG_CONTRACT, default_processor_steps
from ecg_adapt.processing import ECGProcessor


@pytest.fixture(scope="module")
def ptbxl_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_ptbxl(tmp_path_factory.mktemp("ptbxl"), n_records=40, progress=False)


def _db_with_codes(root: Path, codes: list[dict[str, float]]) -> Path:
    """A copy of the fixture whose scp_codes are replaced by hand-chosen ones."""
    db = pd.read_csv(root / "ptbxl_database.csv")
    db = db.iloc[: len(codes)].copy()
    db["scp_codes"] = [str(c) for c in codes]
    db["strat_fold"] = [1, 9, 10, 10][: len(codes)]
    out = root.parent / "handmade"
    out.mkdir(exist_ok=True)
    db.to_csv(out / "ptbxl_database.csv", index=False)
    shutil.copy(packaged_scp_statements(), out / "scp_statements.csv")
    return out


def test_fixture_has_the_real_28_column_layout(ptbxl_root: Path) -> None:
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv")
    assert tuple(db.columns) == PTBXL_COLUMNS
    rec = read_wfdb(ptbxl_root / db.loc[0, "filename_lr"])
    assert rec.signal.shape == (12, 1000) and rec.sampling_rate == 100
    assert rec.lead_names[3:6] == ["AVR", "AVL", "AVF"]  # PTB-XL spells them upper-case


def test_label_aggregations_follow_the_benchmark(ptbxl_root: Path) -> None:
    root = _db_with_codes(ptbxl_root, [
        {"IMI": 100.0, "LVH": 50.0, "SR": 0.0},
        {"NORM": 100.0, "SBRAD": 0.0},
        {"CLBBB": 100.0, "AFIB": 0.0, "LVOLT": 0.0},
        {"AFIB": 0.0},  # no diagnostic statement: left out of diagnostic tasks
    ])
    ds = PTBXL(root)
    ids = list(ds.database.index)
    sup = ds.label_sets("superdiagnostic")
    assert sup[ids[0]] == ["HYP", "MI"] and sup[ids[1]] == ["NORM"] and sup[ids[2]] == ["CD"]
    assert ids[3] not in sup.index
    assert ds.label_sets("subdiagnostic")[ids[0]] == ["IMI", "LVH"]
    assert ds.label_sets("rhythm").to_dict() == {ids[0]: ["SR"], ids[1]: ["SBRAD"], ids[2]: ["AFIB"], ids[3]: ["AFIB"]}
    assert ds.label_sets("form")[ids[2]] == ["LVOLT"]
    assert ds.label_sets("all")[ids[2]] == ["AFIB", "CLBBB", "LVOLT"]
    task = ds.task("superdiagnostic")
    assert task.labels == ["CD", "HYP", "MI", "NORM"]
    assert ds.split_ids(task, "train") == [ids[0]] and ds.split_ids(task, "validation") == [ids[1]]
    assert ds.split_ids(task, "test") == [ids[2]]
    with pytest.raises(ValueError, match="Unknown PTB-XL task 'superdiag'"):
        ds.label_sets("superdiag")


def test_real_statement_table_has_the_published_counts() -> None:
    st = pd.read_csv(packaged_scp_statements(), index_col=0)
    assert len(st) == 71 and int(st.diagnostic.fillna(0).sum()) == 44
    assert int(st.form.fillna(0).sum()) == 19 and int(st.rhythm.fillna(0).sum()) == 12
    assert sorted(st.diagnostic_class.dropna().unique()) == ["CD", "HYP", "MI", "NORM", "STTC"]


def test_corrupt_header_and_missing_dat_are_reported_not_crashed_on(ptbxl_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(ptbxl_root, root)
    ds = PTBXL(root)
    ids = list(ds.database.index)
    ds.record_path(ids[0]).with_suffix(".hea").write_text("this is not a wfdb header\n")
    ds.record_path(ids[1]).with_suffix(".dat").unlink()
    dat = ds.record_path(ids[2]).with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:1000])  # truncated: header promises 24,000 bytes
    with pytest.raises(RecordError) as e:
        ds.read(ids[2])
    assert e.value.reason == "truncated"
    processor = ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps())
    cache = build_cache(ds, processor, ids, cache_dir=tmp_path / "cache", progress=False)
    reasons = {s["record_id"]: s["reason"] for s in cache.skipped}
    assert reasons == {str(ids[0]): "corrupt_header", str(ids[1]): "missing_file", str(ids[2]): "truncated"}
    report = json.loads((cache.path / "report.json").read_text())
    assert report["n_cached"] == len(ids) - 3 and report["n_windows"] == 2 * (len(ids) - 3)
    ds_windows = WindowDataset(cache, ids, np.zeros((len(ids), 1), np.float32), (6000,))
    assert ds_windows.missing_records == ids[:3]
    with pytest.raises(RecordError, match="corrupt_header"):
        build_cache(ds, processor, ids, cache_dir=tmp_path / "cache2", on_error="raise", progress=False)
    assert not any((tmp_path / "cache2").glob("ptbxl-*"))  # nothing half-written is left behind


def test_cache_is_reused_and_keyed_by_processor(ptbxl_root: Path, tmp_path: Path) -> None:
    ds = PTBXL(ptbxl_root)
    ids = list(ds.database.index)[:6]
    p1 = ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps("all"))
    a = build_cache(ds, p1, ids, cache_dir=tmp_path, progress=False)
    b = build_cache(ds, p1, ids, cache_dir=tmp_path, progress=False)
    c = build_cache(ds, ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps("first")), ids, cache_dir=tmp_path, progress=False)
    assert a.path == b.path != c.path and len(a) == 12 and len(c) == 6
    # the cached windows are exactly what the processor makes from the WFDB file
    rec = ds.read(ids[0])
    direct = p1.process(rec.signal, rec.sampling_rate, rec.lead_names).input_values
    batch = WindowDataset(a, ids, np.zeros((6, 1), np.float32), (6000,)).__getitems__([1, 0])
    np.testing.assert_array_equal(batch["input_values"].numpy(), direct[::-1])
