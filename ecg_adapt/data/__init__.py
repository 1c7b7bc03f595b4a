"""Data sources (real on-disk layouts), records, and the processed-signal cache."""

from .base import SOURCES, LabelledSource, SkipReport, open_source, register_source
from .cache import ECGCache, WindowDataset, build_cache, default_cache_dir, make_loader
from .ptbxl import PTBXL, PTBXL_SPLITS, PTBXL_TASKS, find_ptbxl_root
from .edf import EDFHeader, read_edf, read_edf_header, read_edf_signal
from .record import ECGRecord, RecordError, read_wfdb
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

__all__ = [
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
