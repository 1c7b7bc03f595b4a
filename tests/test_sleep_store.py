"""The recording store: the DataLoader gives the same tensors as the window cache, in far fewer bytes.

Fixtures are written in the real layouts: an SHHS-1 night (EDF with mixed-rate channels + NSRR XML) whose ECG
is a synthetic beating waveform, and the slpdb geometry of ``test_sleep.py`` (WFDB format 212, ``.st``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from edf_writer import EDFChannel, to_digital
from test_sleep import MV, R, S2, S3, SLP01A_NOTES, E250, W, shhs_record, slpdb_record

from ecg_adapt.data import ContextWindowDataset, build_cache
from ecg_adapt.data.cache import WindowDataset, make_loader
from ecg_adapt.data.sleep import NSRRSleep, SlpDB
from ecg_adapt.data.store import MARKER, RecordingStore, build_store
from ecg_adapt.models.hubert_ecg import default_processor_steps
from ecg_adapt.processing import ECGProcessor
from ecg_adapt.processing import SignalContract
from ecg_adapt.processing.steps import Normalize, Resample, Window

F16 = dict(rtol=2**-11, atol=2**-24)  # float16 rounding of a value (relative), and its subnormal spacing


def beating_ecg(seconds: float, fs: int, seed: int) -> np.ndarray:
    """A plausible ECG in mV: Gaussian P, QRS and T waves at a wandering heart rate, baseline wander, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    x = 0.1 * np.sin(2 * np.pi * 0.2 * t) + 0.02 * rng.standard_normal(len(t))
    beat = 0.0
    while beat < seconds:
        for offset, width, height in ((-0.2, 0.03, 0.15), (0.0, 0.012, 1.2), (0.25, 0.05, 0.3)):
            x += height * np.exp(-0.5 * ((t - beat - offset) / width) ** 2)
        beat += 60 / rng.uniform(50, 90)
    return x


def shhs_night(root: Path, record: str, stages: list[str], seed: int = 0) -> Path:
    """One SHHS-1 recording: EEG, ECG (125 Hz, 12-bit) and a slow channel in an EDF, stages in NSRR XML."""
    n_seconds = 30 * len(stages)
    rng = np.random.default_rng(seed)
    ecg = EDFChannel("ECG", np.zeros(0, np.int16), 125, "mV", -2.5, 2.5, -2048, 2047)
    ecg.digital = to_digital(beating_ecg(n_seconds, 125, seed), ecg)
    chans = [
        EDFChannel("EEG", rng.integers(-2000, 2000, n_seconds * 125).astype(np.int16), 125, "uV", -125, 125, -2048, 2047),
        ecg,
        EDFChannel("SaO2", rng.integers(90, 100, n_seconds).astype(np.int16), 1, "%", 0, 100, 0, 100),
    ]
    shhs_record(root, "shhs1", record, stages, channels=chans)  # the NSRR layout: EDF and its -nsrr.xml
    return root / "polysomnography" / "edfs" / "shhs1" / f"{record}.edf"


NIGHT = [W] * 2 + [S2] * 3 + [S3] * 3 + [MV] + [S2] * 2 + [R] * 3  # 14 epochs, one movement epoch


@pytest.fixture
def shhs_nights(tmp_path: Path) -> Path:
    root = tmp_path / "shhs"
    shhs_night(root, "shhs1-200001", NIGHT, seed=1)
    shhs_night(root, "shhs1-200002", NIGHT[::-1], seed=2)
    return root


def _processor(tiny_backbone_dir: Path, normalise: bool = True) -> ECGProcessor:
    proc = ECGProcessor.from_pretrained(tiny_backbone_dir, missing_leads="mask")
    if not normalise:  # the same steps without amplitude normalisation: the store keeps float32
        proc = ECGProcessor(proc.signal_contract, [s for s in default_processor_steps() if not isinstance(s, Normalize)],
                            missing_leads="mask")
    return proc


def _labels(ids: list[str]) -> np.ndarray:
    return np.arange(len(ids), dtype=np.int64)[:, None] % 3


def assert_same_batches(a: torch.utils.data.Dataset, b: torch.utils.data.Dataset, exact: bool) -> int:
    """Both datasets through a shuffled DataLoader (same seed): the same batches, tensor for tensor."""
    n = 0
    for x, y in zip(make_loader(a, 7, shuffle=True, seed=3), make_loader(b, 7, shuffle=True, seed=3), strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, key
            if key == "input_values" and not exact:
                np.testing.assert_allclose(x[key].numpy(), y[key].numpy(), **F16)
            else:
                assert torch.equal(x[key], y[key]), key
        n += len(x["labels"])
    return n


def _caches(source, processor, ids, tmp_path):
    windows = build_cache(source, processor, ids, cache_dir=tmp_path / "windows", progress=False, layout="windows")
    store = build_cache(source, processor, ids, cache_dir=tmp_path / "store", progress=False)
    assert isinstance(store, RecordingStore) and store.report["layout"] == "store"
    return windows, store


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@pytest.mark.parametrize("normalise", [True, False], ids=["float16", "float32"])
def test_store_gives_the_window_cache_tensors_on_a_synthetic_night(shhs_nights: Path, tiny_backbone_dir: Path,
                                                                   tmp_path: Path, normalise: bool) -> None:
    source = NSRRSleep(shhs_nights, cohort="shhs", lead_name="II")
    processor = _processor(tiny_backbone_dir, normalise)
    ids = [u for r in source.recordings for u in source.epochs_of(r)]
    assert len(ids) == 2 * 13  # the movement epoch is no label
    windows, store = _caches(source, processor, ids, tmp_path)
    assert list(store.row_record_ids) == list(windows.row_record_ids)
    np.testing.assert_array_equal(store.row_windows, windows.row_windows)
    shape = processor.contract.input_shape
    n = assert_same_batches(WindowDataset(windows, ids, _labels(ids), shape), WindowDataset(store, ids, _labels(ids), shape),
                            exact=not normalise)
    assert n == len(ids) * 6  # six 5 s windows per epoch
    n = assert_same_batches(ContextWindowDataset(windows, ids, _labels(ids), shape, context=2),
                            ContextWindowDataset(store, ids, _labels(ids), shape, context=2), exact=not normalise)
    assert n == len(ids) * 6
    # the 12-lead model sees the 1-lead ECG as lead II: the other leads' zero blocks are not stored
    stored = json.loads(next((tmp_path / "store").rglob(MARKER)).read_text())
    assert stored["dtype"] == ("float16" if normalise else "float32")
    if normalise:
        # lead II, and I and III into which the decimation after Flatten rings (HuBERT-ECG's order I, II, III, ...)
        assert stored["stored_blocks"] == [0, 1, 2]
        assert _bytes(tmp_path / "windows") > 5 * _bytes(tmp_path / "store")


def test_store_gives_the_window_cache_tensors_on_the_slpdb_geometry(tmp_path: Path, tiny_backbone_dir: Path) -> None:
    root = tmp_path / "slpdb"
    root.mkdir()
    slpdb_record(root, "slp01a", SLP01A_NOTES, real_header=True)
    slpdb_record(root, "slp03", [(1, "W")] + [(k * E250, "R" if k > 4 else "3") for k in range(1, 8)])
    slpdb_record(root, "slp04", [(1, "W")], sig_names=["BP", "EEG (C3-O1)", "Resp (nasal)"])  # no ECG: not a recording
    (root / "RECORDS").write_text("slp01a\nslp03\nslp04\n")
    db = SlpDB(root, lead_name="II")
    processor = _processor(tiny_backbone_dir)
    ids = [u for r in db.recordings for u in db.epochs_of(r)] + ["slp04/0"]
    windows, store = _caches(db, processor, ids, tmp_path)
    assert store.report["n_cached"] == windows.report["n_cached"] == len(ids) - 1
    assert [s["reason"] for s in store.skipped] == [s["reason"] for s in windows.skipped] == ["unknown_record"]
    shape = processor.contract.input_shape
    real = ids[:-1]
    assert_same_batches(WindowDataset(windows, real, _labels(real), shape), WindowDataset(store, real, _labels(real), shape),
                        exact=False)
    assert_same_batches(ContextWindowDataset(windows, real, _labels(real), shape, context=3),
                        ContextWindowDataset(store, real, _labels(real), shape, context=3), exact=False)
    # every whole epoch is stored once, the unlabelled ones too (slp01a: MT at 5, none at 7), for neighbours and predict
    meta = json.loads(next(p for p in (tmp_path / "store").rglob(MARKER) if "slp01a" in str(p)).read_text())
    assert meta["n_epochs"] == 8 and meta["n_windows"] == 8 * 6


def test_whole_recordings_give_the_unlabelled_neighbours_their_signal(shhs_nights: Path, tiny_backbone_dir: Path,
                                                                       tmp_path: Path) -> None:
    source = NSRRSleep(shhs_nights, cohort="shhs", lead_name="II")
    processor = _processor(tiny_backbone_dir)
    ids = source.epochs_of("shhs1-200001")  # epoch 8 is a movement epoch: no label, but stored
    store = build_cache(source, processor, ids, cache_dir=tmp_path, progress=False)
    shape = processor.contract.input_shape
    labelled = ContextWindowDataset(store, ids, _labels(ids), shape, context=6)
    whole = ContextWindowDataset(store.whole_recordings(), ids, _labels(ids), shape, context=6)
    assert len(whole) == len(labelled) == len(ids) * 6
    i = int(np.flatnonzero(labelled.record_ids == np.array("shhs1-200001/7", dtype=object))[0] * 6 + 5)
    a, b = labelled[i], whole[i]  # the last window of epoch 7: its right neighbours are epoch 8's windows
    assert labelled.record_ids[int(a["record_index"])] == "shhs1-200001/7" and torch.equal(a["labels"], b["labels"])
    assert not a["attention_mask"][7:].any() and b["attention_mask"][7:].any(-1).all()  # each window has lead II
    assert torch.equal(a["input_values"][:7], b["input_values"][:7])


def test_padded_windows_keep_their_sample_masks(shhs_nights: Path, tmp_path: Path) -> None:
    """A 40 s model window holds a 30 s epoch padded at the end: its mask is stored sample by sample."""
    contract = SignalContract(leads=("I",), sampling_rate=100.0, window_samples=4000)
    processor = ECGProcessor(contract, [Resample(target_hz=100.0, method="polyphase"), Window(seconds=40.0),
                                        Normalize(method="zscore", scope="global")])
    source = NSRRSleep(shhs_nights, cohort="shhs", lead_name="I")
    ids = [u for r in source.recordings for u in source.epochs_of(r)]
    windows, store = _caches(source, processor, ids, tmp_path)
    mask = store.take("attention_mask", np.arange(len(store)))
    assert (mask[:, 0, :3000] == 1).all() and (mask[:, 0, 3000:] == 0).all()
    shape = contract.input_shape
    assert_same_batches(WindowDataset(windows, ids, _labels(ids), shape), WindowDataset(store, ids, _labels(ids), shape),
                        exact=False)
    assert_same_batches(ContextWindowDataset(windows, ids, _labels(ids), shape, context=1),
                        ContextWindowDataset(store, ids, _labels(ids), shape, context=1), exact=False)


def test_a_second_build_reuses_stored_recordings_and_a_changed_file_rebuilds_only_its_own(
        shhs_nights: Path, tiny_backbone_dir: Path, tmp_path: Path) -> None:
    processor = _processor(tiny_backbone_dir)
    source = NSRRSleep(shhs_nights, cohort="shhs", lead_name="II")
    ids = [u for r in source.recordings for u in source.epochs_of(r)]
    first = build_store(source, processor, ids, cache_dir=tmp_path, progress=False)
    assert first.report["recordings_built"] == 2
    again = build_store(source, processor, ids[:5], cache_dir=tmp_path, progress=False)  # a subset: no rebuild
    assert again.report["recordings_built"] == 0 and len(again) == 5 * 6
    shhs_night(shhs_nights, "shhs1-200002", NIGHT[::-1], seed=7)  # one night replaced by another recording
    rebuilt = build_store(NSRRSleep(shhs_nights, cohort="shhs", lead_name="II"), processor, ids, cache_dir=tmp_path,
                          progress=False)
    assert (rebuilt.report["recordings_built"], rebuilt.report["recordings_reused"]) == (1, 1)
    rows = rebuilt.row_record_ids == "shhs1-200002/3"
    assert not np.allclose(rebuilt.take("input_values", np.flatnonzero(rows)),
                           first.take("input_values", np.flatnonzero(first.row_record_ids == "shhs1-200002/3")))


def test_an_unreadable_recording_is_reported_and_skipped_not_fatal(shhs_nights: Path, tiny_backbone_dir: Path,
                                                                   tmp_path: Path) -> None:
    source = NSRRSleep(shhs_nights, cohort="shhs", lead_name="II")
    ids = [u for r in source.recordings for u in source.epochs_of(r)]
    edf = shhs_nights / "polysomnography" / "edfs" / "shhs1" / "shhs1-200002.edf"
    edf.write_bytes(edf.read_bytes()[: edf.stat().st_size // 2])  # cut short after the source was indexed
    store = build_store(source, _processor(tiny_backbone_dir), ids, cache_dir=tmp_path, progress=False)
    assert set(store.report["skipped_recordings"]) == {"shhs1-200002"}
    bad = [s for s in store.skipped if s["record_id"].startswith("shhs1-200002/")]
    assert len(bad) == 13 and {s["reason"] for s in bad} == {store.report["skipped_recordings"]["shhs1-200002"]["reason"]}
    assert set(store.row_record_ids) == {u for u in ids if u.startswith("shhs1-200001/")}
    assert not any("shhs1-200002" in p.name for p in store.path.iterdir())  # nothing stored for it
    with pytest.raises(Exception, match="shhs1-200002"):
        build_store(source, _processor(tiny_backbone_dir), ids, cache_dir=tmp_path / "raise", progress=False,
                    on_error="raise")


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import ecg_adapt.data.store as store
    from ecg_adapt.data.sleep import NSRRSleep
    from ecg_adapt.processing import ECGProcessor

    root, backbone, cache = sys.argv[1:4]
    saves = []
    real_save = np.save

    def save_then_die(path, arr, *a, **k):  # the 2nd recording dies after writing three of its arrays
        real_save(path, arr, *a, **k)
        saves.append(str(path))
        if len(saves) == 7 + 3:
            os.kill(os.getpid(), signal.SIGKILL)

    store.np.save = save_then_die
    source = NSRRSleep(root, cohort="shhs", lead_name="II")
    proc = ECGProcessor.from_pretrained(backbone, missing_leads="mask")
    store.build_store(source, proc, [u for r in source.recordings for u in source.epochs_of(r)], cache_dir=cache,
                      progress=False)
""")


def test_a_build_killed_while_writing_leaves_no_partial_recording(shhs_nights: Path, tiny_backbone_dir: Path,
                                                                 tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(shhs_nights), str(tiny_backbone_dir), str(cache)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == -9, proc.stderr[-2000:]
    folder, = cache.iterdir()
    finished = [p for p in folder.iterdir() if not p.name.startswith(".")]
    partial = [p for p in folder.iterdir() if p.name.startswith(".")]
    assert len(finished) == 1 and (finished[0] / MARKER).exists() and "shhs1-200001" in finished[0].name
    assert len(partial) == 1 and not (partial[0] / MARKER).exists() and len(list(partial[0].iterdir())) == 3
    source = NSRRSleep(shhs_nights, cohort="shhs", lead_name="II")
    ids = [u for r in source.recordings for u in source.epochs_of(r)]
    store = build_store(source, _processor(tiny_backbone_dir), ids, cache_dir=cache, progress=False)
    assert (store.report["recordings_built"], store.report["recordings_reused"]) == (1, 1)
    assert len(store) == len(ids) * 6


def test_a_build_finished_first_by_another_process_is_used_and_ours_dropped(tmp_path: Path) -> None:
    from ecg_adapt.data.cache import publish_build

    final = tmp_path / "rec-key"
    ours = tmp_path / ".rec-key-1"
    ours.mkdir()
    (ours / MARKER).write_text("ours")
    assert publish_build(ours, final, MARKER) and (final / MARKER).read_text() == "ours" and not ours.exists()
    late = tmp_path / ".rec-key-2"
    late.mkdir()
    (late / MARKER).write_text("late")
    assert not publish_build(late, final, MARKER)  # theirs is complete: keep it, drop ours
    assert (final / MARKER).read_text() == "ours" and not late.exists()
    (final / MARKER).unlink()  # an incomplete folder in the way is an error, not silently kept
    (final / "values.npy").write_text("partial")
    broken = tmp_path / ".rec-key-3"
    broken.mkdir()
    (broken / "values.npy").write_text("x")
    with pytest.raises(OSError):
        publish_build(broken, final, MARKER)
