"""How well a model reads its test images, and how sure we can be.

A test set of a few dozen cells makes every point estimate noisy, so each headline figure comes with a 95%
bootstrap interval (:mod:`.bootstrap`), cross-validation folds give a second view (mean and a corrected
t-interval over folds), and two models are compared on the *same* test images with McNemar's test and over
the same folds with the corrected resampled t-test (:mod:`.significance`). Results are saved per run and read
back (:mod:`.results`), then set side by side (:mod:`.comparisons`). :mod:`.explain` (Grad-CAM) and
:mod:`.crossdataset` (a checkpoint scored on another lab's images) are imported by name.

The names below are this package's interface: ``from bloodlib import evaluation; evaluation.bootstrap_ci(...)``.
"""
from bloodlib.evaluation.bootstrap import bootstrap_ci, mixed_groups, resample_weights, shares_groups, weighted_metrics
from bloodlib.evaluation.comparisons import comparison_table, pairwise_fold_tests, pairwise_mcnemar
from bloodlib.evaluation.point import (HEADLINE, METRIC_LABELS, auc_note, checked_inputs, confusion_tables,
                                       errors_by_group, label_indices, metrics, most_confident_mistakes,
                                       per_class_table, roc_auc_per_class)
from bloodlib.evaluation.results import (METRICS, PREDICTIONS, Evaluation, evaluation_ci, fold_metrics, jsonable,
                                         load_all, load_evaluation, save_evaluation, summarize, test_train_ratio)
from bloodlib.evaluation.significance import EXACT_BELOW, fold_summary, grouped_paired_test, holm, mcnemar, paired_fold_test

__all__ = ["bootstrap_ci", "mixed_groups", "resample_weights", "shares_groups", "weighted_metrics", "comparison_table",
           "pairwise_fold_tests", "pairwise_mcnemar", "HEADLINE", "METRIC_LABELS", "auc_note", "checked_inputs",
           "confusion_tables", "errors_by_group", "label_indices", "metrics", "most_confident_mistakes",
           "per_class_table", "roc_auc_per_class", "METRICS", "PREDICTIONS", "Evaluation", "evaluation_ci",
           "fold_metrics", "jsonable", "load_all", "load_evaluation", "save_evaluation", "summarize",
           "test_train_ratio", "EXACT_BELOW", "fold_summary", "grouped_paired_test", "holm", "mcnemar",
           "paired_fold_test"]
