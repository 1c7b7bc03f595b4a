"""Tasks (labels, loss, metrics) and the metrics themselves."""

from .metrics import multilabel_metrics, single_label_metrics, tune_thresholds
from .staging import staging_metrics
from .task import ClassificationTask

__all__ = ["ClassificationTask", "multilabel_metrics", "single_label_metrics", "staging_metrics", "tune_thresholds"]
