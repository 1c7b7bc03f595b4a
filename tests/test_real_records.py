"""Real PhysioNet records go through processor → backbone → head (needs ../shared/ecg-samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_adapt import ECGClassifier, load_backbone, load_processor, read_wfdb
from ecg_adapt.inference import find_wfdb_records


@pytest.fixture
def classifier(tiny_backbone_dir: Path) -> ECGClassifier:
    torch.manual_seed(0)
    return ECGClassifier.from_backbone(load_backbone(tiny_backbone_dir), ["NORM", "MI", "STTC", "CD", "HYP"]).eval()


def test_every_cinc2021_record_gives_finite_logits(samples: Path, classifier: ECGClassifier, tiny_backbone_dir: Path) -> None:
    processor = load_processor(tiny_backbone_dir)
    paths = find_wfdb_records([samples / "cinc2021"])
    assert len(paths) == 30
    records = [read_wfdb(p) for p in paths]
    assert all(r.signal.shape == (12, 5000) and r.sampling_rate == 500 for r in records)
    assert any(c.startswith("Dx:") for c in records[0].comments)
    batch = processor(records)
    assert batch["input_values"].shape == (60, 6000)  # two 5 s windows per 10 s record
    assert all(not r.missing_leads for r in batch.reports)
    with torch.no_grad():
        logits = classifier(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (60, 5) and torch.isfinite(logits).all()


def test_ptb_record_with_lower_case_leads_and_extra_frank_leads(samples: Path, tiny_backbone_dir: Path) -> None:
    rec = read_wfdb(samples / "ptbdb" / "s0010_re")
    assert rec.sampling_rate == 1000 and rec.lead_names[:3] == ["i", "ii", "iii"]
    out = load_processor(tiny_backbone_dir).process(rec.signal, rec.sampling_rate, rec.lead_names)
    assert sorted(out.report.ignored_leads) == ["vx", "vy", "vz"] and not out.report.missing_leads
    assert out.input_values.shape == (8, 6000)  # 38.4 s -> 7 full windows + one aligned to the end
    assert np.isfinite(out.input_values).all()


def test_two_lead_holter_record_on_a_12_lead_model_masks_the_missing_leads(samples: Path, classifier: ECGClassifier, tiny_backbone_dir: Path) -> None:
    rec = read_wfdb(samples / "mitdb" / "100")
    assert rec.lead_names == ["MLII", "V5"] and rec.sampling_rate == 360
    processor = load_processor(tiny_backbone_dir)
    with pytest.raises(ValueError, match="lacks lead"):
        processor.process(rec.signal, rec.sampling_rate, rec.lead_names)
    out = processor.process(rec.signal[:, : 360 * 60], rec.sampling_rate, rec.lead_names, missing_leads="mask")
    assert out.report.lead_approximations == ["MLII used as II"]
    assert len(out.report.missing_leads) == 10
    mask = out.attention_mask.reshape(-1, 12, 500)
    assert mask[:, [1, 10]].all() and not mask[:, [0, 2, 3, 4, 5, 6, 7, 8, 9, 11]].any()
    with torch.no_grad():
        logits = classifier(input_values=torch.from_numpy(out.input_values), attention_mask=torch.from_numpy(out.attention_mask).long()).logits
    assert logits.shape == (12, 5) and torch.isfinite(logits).all()
