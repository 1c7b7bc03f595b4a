"""Data sources (real on-disk layouts), records, and the processed-signal cache."""

from .cache import ECGCache, WindowDataset, build_cache, default_cache_dir, make_loader
from .ptbxl import PTBXL, PTBXL_SPLITS, PTBXL_TASKS, find_ptbxl_root
from .record import ECGRecord, RecordError, read_wfdb

__all__ = [
    "ECGCache",
    "ECGRecord",
    "PTBXL",
    "PTBXL_SPLITS",
    "PTBXL_TASKS",
    "RecordError",
    "WindowDataset",
    "build_cache",
    "default_cache_dir",
    "find_ptbxl_root",
    "make_loader",
    "read_wfdb",
]
