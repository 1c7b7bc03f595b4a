"""Tasks (labels, metrics), the metrics themselves, and window-to-record aggregation (after the model)."""

from .challenge import ChallengeTask, challenge_score, challenge_score_from_probabilities, load_weights
from .metrics import lower_is_better, multilabel_metrics, regression_metrics, single_label_metrics, tune_thresholds
from .staging import staging_metrics
from .task import ClassificationTask, RegressionTask, Task, display_label, per_class_summary, task_from_dict
from .windows import aggregate_windows

__all__ = [
    "ChallengeTask",
    "challenge_score",
    "challenge_score_from_probabilities",
    "load_weights",
    "ClassificationTask", "RegressionTask", "Task", "task_from_dict", "display_label", "per_class_summary", "lower_is_better", "regression_metrics",
    "aggregate_windows", "multilabel_metrics", "single_label_metrics", "staging_metrics", "tune_thresholds"]
