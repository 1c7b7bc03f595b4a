"""Data sources (real on-disk layouts), records, the processed-signal cache and the recording store."""

from .apnea import ApneaECG, apnea_record_class, parse_event2_answers, record_level_metrics
from .base import SOURCES, LabelledSource, SkipReport, open_source, register_source
from .cache import ECGCache, WindowDataset, build_cache, default_cache_dir, make_loader
from .cinc import CINC_SOURCES, CINC_TASKS, CinC2021, hash_split, open_cinc2020, scored_classes, source_of_record
from .context import ContextWindowDataset, parse_unit_ids
from .cpsc2018 import CPSC2018, CPSC2018_CLASSES, cpsc2018_score
from .cpsc2021 import CPSC2021
from .mitdb import AAMI_CLASSES, MITBIHArrhythmia
from .ptbxl import PTBXL, PTBXL_SPLITS, PTBXL_TASKS, find_ptbxl_root
from .edf import EDFHeader, read_edf, read_edf_header, read_edf_signal
from .record import ECGRecord, RecordError, read_wfdb
from .store import RecordingStore, build_store
from .sleep import (
    SLEEP_STAGES,
    STAGE_MERGES,
    STAGING_TASKS,
    NSRRSleep,
    SleepStagingSource,
    SlpDB,
    merge_stages,
)

register_source("ptbxl", PTBXL)
register_source("mitdb", MITBIHArrhythmia)
register_source("apnea_ecg", ApneaECG)
register_source("cpsc2021", CPSC2021)

__all__ = [
    "ContextWindowDataset",
    "parse_unit_ids",
    "CINC_SOURCES",
    "CINC_TASKS",
    "CPSC2018",
    "CPSC2018_CLASSES",
    "CinC2021",
    "cpsc2018_score",
    "hash_split",
    "open_cinc2020",
    "scored_classes",
    "source_of_record",
    "AAMI_CLASSES",
    "ApneaECG",
    "CPSC2021",
    "MITBIHArrhythmia",
    "apnea_record_class",
    "parse_event2_answers",
    "record_level_metrics",
    "EDFHeader",
    "NSRRSleep",
    "SLEEP_STAGES",
    "STAGE_MERGES",
    "STAGING_TASKS",
    "SleepStagingSource",
    "SlpDB",
    "merge_stages",
    "read_edf",
    "read_edf_header",
    "read_edf_signal",
    "ECGCache",
    "RecordingStore",
    "build_store",
    "ECGRecord",
    "LabelledSource",
    "PTBXL",
    "PTBXL_SPLITS",
    "PTBXL_TASKS",
    "RecordError",
    "SOURCES",
    "SkipReport",
    "WindowDataset",
    "build_cache",
    "default_cache_dir",
    "find_ptbxl_root",
    "make_loader",
    "open_source",
    "read_wfdb",
    "register_source",
]
