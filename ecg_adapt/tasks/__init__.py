"""Tasks (labels, metrics), the metrics themselves, and window-to-record aggregation (after the model)."""

from .challenge import ChallengeTask, challenge_score, challenge_score_from_probabilities, load_weights
from .metrics import multilabel_metrics, single_label_metrics, tune_thresholds
from .staging import staging_metrics
from .task import ClassificationTask
from .windows import aggregate_windows

__all__ = [
    "ChallengeTask",
    "challenge_score",
    "challenge_score_from_probabilities",
    "load_weights",
    "ClassificationTask", "aggregate_windows", "multilabel_metrics", "single_label_metrics", "staging_metrics", "tune_thresholds"]
