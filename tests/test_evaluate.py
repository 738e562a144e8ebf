"""Metrics against numbers worked out by hand, the bootstrap against sklearn, tests against scipy, files round-trip."""
import dataclasses
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score, roc_auc_score

from bloodlib import evaluation as E

CLASSES = ["A", "B", "C"]
# Ten images, three classes. Rows: true class, predicted class (argmax), probabilities (A, B, C).
#   0 A->A .8 .1 .1 | 1 A->A .7 .2 .1 | 2 A->A .6 .3 .1 | 3 A->B .3 .6 .1 | 4 B->B .1 .8 .1
#   5 B->B .2 .7 .1 | 6 B->A .5 .4 .1 | 7 C->C .1 .1 .8 | 8 C->C .2 .2 .6 | 9 C->B .0 .55 .45
Y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
P = np.array([[.8, .1, .1], [.7, .2, .1], [.6, .3, .1], [.3, .6, .1], [.1, .8, .1],
              [.2, .7, .1], [.5, .4, .1], [.1, .1, .8], [.2, .2, .6], [.0, .55, .45]])
# Confusion (rows true, columns predicted):  A: 3 1 0 | B: 1 2 0 | C: 0 1 2
COUNTS = [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
# accuracy 7/10; recall A 3/4, B 2/3, C 2/3 -> balanced accuracy (27 + 24 + 24) / 36 / 3 = 25/36
# precision A 3/4, B 2/4, C 2/2; F1 A 3/4, B 2*(1/2)(2/3)/(7/6) = 4/7, C 2*(2/3)/(5/3) = 4/5 -> macro 99/140
# AUC (pairs won / pairs): A: positives .8 .7 .6 beat all 6 negatives, .3 loses to .5 -> 23/24
#                          B: .8 .7 beat all 7 negatives, .4 loses to .6 and .55 -> 19/21;  C: 21/21
HAND = {"accuracy": 0.7, "balanced_accuracy": 25 / 36, "macro_f1": 99 / 140,
        "roc_auc": (23 / 24 + 19 / 21 + 1) / 3}


def test_metrics_match_hand_computed_values():
    got = E.metrics(Y, P, CLASSES)
    assert got == pytest.approx(HAND)
    # and sklearn's own multi-class AUC agrees with the per-class mean
    assert got["roc_auc"] == pytest.approx(roc_auc_score(Y, P, multi_class="ovr", average="macro"))
    # class names are accepted as labels too
    assert E.metrics(np.array(CLASSES)[Y], P, CLASSES) == pytest.approx(HAND)


def test_per_class_table_and_confusion():
    table = E.per_class_table(Y, P, CLASSES)
    assert list(table.index) == CLASSES
    np.testing.assert_allclose(table["precision"], [3 / 4, 2 / 4, 1])
    np.testing.assert_allclose(table["recall"], [3 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(table["f1"], [3 / 4, 4 / 7, 4 / 5])
    np.testing.assert_array_equal(table["support"], [4, 3, 3])
    np.testing.assert_allclose(table["auc"], [23 / 24, 19 / 21, 1])
    counts, normalised = E.confusion_tables(Y, P, CLASSES)
    np.testing.assert_array_equal(counts.to_numpy(), COUNTS)
    assert counts.index.name == "true" and counts.columns.name == "predicted"
    np.testing.assert_allclose(normalised.to_numpy(), np.array(COUNTS) / np.array([[4], [3], [3]]))


def test_absent_class_gives_nan_auc_with_a_note_not_a_crash():
    keep = Y != 2  # no C in the labels, although the model still predicts C sometimes
    with pytest.warns(UserWarning, match="C absent"):
        got = E.metrics(Y[keep], P[keep], CLASSES)
    assert np.isnan(E.roc_auc_per_class(Y[keep], P[keep], CLASSES)[2])
    assert got["roc_auc"] == pytest.approx((roc_auc_score(Y[keep] == 0, P[keep, 0])
                                            + roc_auc_score(Y[keep] == 1, P[keep, 1])) / 2)
    assert E.per_class_table(Y[keep], P[keep], CLASSES).loc["C", "support"] == 0
    with pytest.warns(UserWarning, match="C absent"):
        ci = E.bootstrap_ci(Y[keep], P[keep], CLASSES, n=200)
    assert ci.notna().all().all()


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="y_prob must be"):
        E.metrics(Y, P[:, :2], CLASSES)
    with pytest.raises(ValueError, match="not among the classes"):
        E.metrics(np.array(["A"] * 9 + ["X"]), P, CLASSES)


def test_most_confident_mistakes():
    table = E.most_confident_mistakes(Y, P, [f"img{i}" for i in range(10)], CLASSES, k=8)
    assert list(table["id"]) == ["img3", "img9", "img6"]  # confidences .6, .55, .5
    assert list(table["predicted"]) == ["B", "B", "A"] and list(table["true"]) == ["A", "C", "B"]
    np.testing.assert_allclose(table["p_true"], [.3, .45, .4])


def test_most_confident_mistakes_show_one_image_per_source_group():
    # images 3 and 9 (confidences .6 and .55) are copies of one smear: only the surer one is shown
    groups = ["s0", "s0", "s0", "g", "s1", "s1", "s2", "s3", "s3", "g"]
    table = E.most_confident_mistakes(Y, P, [f"img{i}" for i in range(10)], CLASSES, k=8, groups=groups)
    assert list(table["id"]) == ["img3", "img6"]
    assert list(E.most_confident_mistakes(Y, P, list(range(10)), CLASSES, k=1, groups=groups)["id"]) == [3]


def test_errors_by_group_counts_each_smears_errors_by_hand():
    # errors: image 3 (A->B) and 6 (B->A) in group x, image 9 (C->B) in group y; groups z, w are all right
    groups = ["x", "x", "z", "x", "w", "w", "x", "y", "y", "y"]
    table = E.errors_by_group(Y, P, groups, CLASSES)
    assert list(table["group"]) == ["x", "y"] and list(table["errors"]) == [2, 1]
    assert list(table["images"]) == [4, 3]
    np.testing.assert_allclose(table["accuracy"], [1 - 2 / 4, 1 - 1 / 3])
    np.testing.assert_allclose(table["share_of_errors"], [2 / 3, 1 / 3])
    assert table.loc[1, "true"] == "C" and table.loc[1, "mostly_predicted_as"] == "B"
    assert table.attrs["summary"] == "2 of 4 source groups hold all 3 errors; the three with the most hold 100%."
    right = E.errors_by_group(Y, np.eye(3)[Y], groups, CLASSES)
    assert right.empty and "share_of_errors" in right.columns


def _random_predictions(n: int = 300, seed: int = 0, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.choice(4, n, p=[.55, .27, .1, .08])
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), y] += 1.5
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, (prob.round(2) if ties else prob)  # rounding makes tied scores, which AUC counts one half


@pytest.mark.parametrize("stratified", [True, False])
def test_vectorised_bootstrap_equals_sklearn_on_each_resample(stratified):
    y, prob = _random_predictions(120)
    classes = list("ABCD")
    weights = E.resample_weights(y, n=40, seed=3, stratified=stratified)
    assert (weights.sum(axis=1) == len(y)).all()
    if stratified:  # every resample keeps the class counts
        counts = np.stack([weights[:, y == k].sum(axis=1) for k in range(4)], axis=1)
        assert (counts == np.bincount(y)).all()
    fast = E.weighted_metrics(weights, y, prob, classes)
    for r in range(len(weights)):
        idx = np.repeat(np.arange(len(y)), weights[r].astype(int))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slow = E.metrics(y[idx], prob[idx], classes)
        assert slow["macro_f1"] == pytest.approx(f1_score(y[idx], prob[idx].argmax(1), average="macro"))
        for m in E.HEADLINE:
            assert fast[m][r] == pytest.approx(slow[m]), (m, r)


def test_bootstrap_ci_contains_estimate_is_seeded_and_narrows_with_more_images():
    y, prob = _random_predictions(200, ties=False)
    classes = list("ABCD")
    ci = E.bootstrap_ci(y, prob, classes, n=500, seed=1)
    assert list(ci.index) == list(E.HEADLINE) and list(ci.columns) == ["value", "low", "high"]
    assert (ci["low"] <= ci["value"]).all() and (ci["value"] <= ci["high"]).all()
    assert ci["value"].to_dict() == pytest.approx(E.metrics(y, prob, classes))
    assert "stratified" in ci.attrs["method"] and "percentile" in ci.attrs["method"]
    pd.testing.assert_frame_equal(ci, E.bootstrap_ci(y, prob, classes, n=500, seed=1))
    # four times the images, same proportions: intervals about half as wide
    big = E.bootstrap_ci(np.tile(y, 4), np.tile(prob, (4, 1)), classes, n=500, seed=1)
    width, big_width = ci["high"] - ci["low"], big["high"] - big["low"]
    assert (big_width < 0.7 * width).all()


def test_cluster_bootstrap_draws_whole_groups():
    """Copies of one source share its weight; stratified by the group's class; a group per image is the
    plain image bootstrap, draw for draw."""
    y = np.repeat([0, 0, 1, 1, 1], 4)  # five sources, four copies each
    groups = np.repeat(["a", "b", "c", "d", "e"], 4)
    weights = E.resample_weights(y, n=200, seed=0, groups=groups)
    for g in "abcde":
        member = weights[:, groups == g]
        assert (member == member[:, :1]).all()  # all copies drawn together
    assert (weights[:, y == 0].sum(axis=1) == 8).all() and (weights[:, y == 1].sum(axis=1) == 12).all()
    assert set(np.unique(weights[:, 0])) <= {0, 1, 2}  # a source drawn 0-2 times among its class's 2
    singles = np.arange(len(y)).astype(str)
    np.testing.assert_array_equal(E.resample_weights(y, n=50, seed=4, groups=singles),
                                  E.resample_weights(y, n=50, seed=4))


def test_groups_of_several_classes_are_drawn_without_strata():
    """A patient's cells (several classes in one group) are drawn whole, from all patients: no class decides a
    patient's stratum, and the interval says it is a plain bootstrap of the groups."""
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    patients = np.repeat(["p1", "p2", "p3", "p4"], 2)
    assert E.mixed_groups(y, patients) and not E.mixed_groups(y, None)
    weights = E.resample_weights(y, n=300, seed=0, groups=patients)
    for p in ("p1", "p2", "p3", "p4"):
        member = weights[:, patients == p]
        assert (member == member[:, :1]).all()
    assert (weights.sum(axis=1) == len(y)).all() and {0, 1, 2} <= set(np.unique(weights[:, 0])) <= {0, 1, 2, 3, 4}
    prob = np.eye(2)[y] * 0.8 + 0.1
    assert E.bootstrap_ci(y, prob, ["A", "B"], n=50, groups=patients).attrs["method"].startswith(
        "plain bootstrap of the 4 source groups")


def test_cluster_intervals_are_wider_when_copies_agree():
    """36 copies of each of 20 sources, right or wrong together: the image bootstrap pretends to 720
    independent images, the group bootstrap knows there are 20 (its interval is far wider)."""
    rng = np.random.default_rng(0)
    sources = np.arange(20)
    y_source = sources % 2
    right = rng.random(20) < 0.75
    y = np.repeat(y_source, 36)
    pred = np.repeat(np.where(right, y_source, 1 - y_source), 36)
    prob = np.eye(2)[pred] * 0.8 + 0.1
    images = E.bootstrap_ci(y, prob, ["A", "B"], n=500, seed=0)
    clusters = E.bootstrap_ci(y, prob, ["A", "B"], n=500, seed=0, groups=np.repeat(sources, 36))
    assert clusters.loc["accuracy", "value"] == images.loc["accuracy", "value"]
    width = lambda t: t.loc["accuracy", "high"] - t.loc["accuracy", "low"]  # noqa: E731
    assert width(clusters) > 3 * width(images)
    assert "20 source groups" in clusters.attrs["method"] and "test images" in images.attrs["method"]


def test_fold_summary_is_a_t_interval_over_folds():
    per_fold = pd.DataFrame({"fold": [0, 1, 2], "accuracy": [.7, .8, .9], "macro_f1": [.5, .5, .5]})
    table = E.fold_summary(per_fold)
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, df=2) * s / sqrt(k)
    assert table.loc["accuracy", "mean"] == pytest.approx(.8)
    assert table.loc["accuracy", "std"] == pytest.approx(.1)
    assert table.loc["accuracy", ["low", "high"]].tolist() == pytest.approx([.8 - half, .8 + half], abs=1e-6)
    assert table.loc["macro_f1", "low"] == table.loc["macro_f1", "high"] == pytest.approx(.5)
    corrected = E.fold_summary(per_fold, test_train_ratio=0.5)
    assert corrected.loc["accuracy", "high"] - .8 == pytest.approx(half * math.sqrt((1 / 3 + .5) * 3), abs=1e-6)


def _preds_with(n01: int, n10: int, both_right: int = 0, both_wrong: int = 0):
    """Predictions of two models with the given counts of (A wrong, B right), (A right, B wrong), ..."""
    n = n01 + n10 + both_right + both_wrong
    y = np.zeros(n, dtype=int)
    a_right = np.r_[np.zeros(n01), np.ones(n10), np.ones(both_right), np.zeros(both_wrong)].astype(bool)
    b_right = np.r_[np.ones(n01), np.zeros(n10), np.ones(both_right), np.zeros(both_wrong)].astype(bool)
    return y, np.where(a_right, 0, 1), np.where(b_right, 0, 2)


def test_mcnemar_exact_worked_example():
    # 8 discordant pairs, 1 vs 7: two-sided exact p = 2 * P(X <= 1 | Bin(8, 1/2)) = 2 * (1 + 8) / 256
    result = E.mcnemar(*_preds_with(n01=1, n10=7, both_right=30, both_wrong=2))
    assert (result["n01"], result["n10"]) == (1, 7)
    assert result["method"] == "exact binomial"
    assert result["p_value"] == pytest.approx(18 / 256)
    assert result["p_value"] == pytest.approx(stats.binomtest(1, 8, 0.5).pvalue)


def test_mcnemar_chi_square_worked_example():
    # 59 vs 121 discordant pairs: (|59 - 121| - 1)^2 / 180 = 3721 / 180; chi2(1) tail = erfc(sqrt(x / 2))
    result = E.mcnemar(*_preds_with(n01=59, n10=121, both_right=101, both_wrong=33))
    assert result["method"] == "chi-square with continuity correction"
    assert result["statistic"] == pytest.approx(3721 / 180)
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(3721 / 180 / 2)))
    assert result["p_value"] == pytest.approx(5.45e-6, rel=0.01)


def test_mcnemar_switches_method_at_25_and_handles_no_discordance():
    assert E.mcnemar(*_preds_with(10, 14))["method"] == "exact binomial"
    assert E.mcnemar(*_preds_with(10, 15))["method"].startswith("chi-square")
    assert E.mcnemar(*_preds_with(0, 0, both_right=5))["p_value"] == 1.0


def test_paired_fold_test_matches_scipy_and_hand_value():
    a = np.array([.8, .7, .9, .85, .75])
    b = a - np.array([.05, .02, .04, .03, .06])  # differences: mean .04, sd sqrt(.001 / 4)
    result = E.paired_fold_test(a, b)
    assert result["statistic"] == pytest.approx(4 * math.sqrt(2))  # .04 / (sqrt(.00025) / sqrt(5))
    reference = stats.ttest_rel(a, b)
    assert result["statistic"] == pytest.approx(reference.statistic)
    assert result["p_value"] == pytest.approx(reference.pvalue)
    corrected = E.paired_fold_test(a, b, test_train_ratio=0.25)
    assert corrected["statistic"] == pytest.approx(.04 / (math.sqrt(.00025) * math.sqrt(.2 + .25)))
    assert corrected["p_value"] > result["p_value"]
    assert E.paired_fold_test(a, a)["p_value"] == 1.0


def _evaluation(model="m1", seed=0, n=60, folds=True, order=None) -> E.Evaluation:
    y, prob = _random_predictions(n, seed=0)
    noisy = np.random.default_rng(seed).dirichlet(np.ones(4), n) * 0.6 + prob * 0.4
    ids = np.array([f"BloodImage_{i:05d}" for i in range(n)])
    order = np.arange(n) if order is None else order
    return E.Evaluation(model=model, classes=list("ABCD"), y_true=y[order], y_prob=noisy[order], ids=ids[order],
                        fold=(np.arange(n) % 3)[order] if folds else None, train_seconds=12.5, params=11_000_000,
                        flops=1.8e9, throughput=250.0, pretrained_source="none (random init)",
                        extra={"image_size": [80, 80]})


def test_save_load_round_trip_is_atomic_and_strict_json(tmp_path):
    ev = _evaluation()
    folder = E.save_evaluation(ev, tmp_path / "resnet18", n=100)
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "predictions.csv"]  # no temp files left
    summary = json.loads((folder / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert set(summary["headline"]) == set(E.HEADLINE) and set(summary["ci"]) == set(E.HEADLINE)
    assert len(summary["per_fold"]) == 3 and "accuracy" in summary["fold_summary"]
    back = E.load_evaluation(folder)
    np.testing.assert_array_equal(back.y_true, ev.y_true)
    np.testing.assert_array_equal(back.y_prob, ev.y_prob)  # exact: probabilities are written with 17 digits
    np.testing.assert_array_equal(back.ids, ev.ids)
    np.testing.assert_array_equal(back.fold, ev.fold)
    assert back.groups is None
    grouped = dataclasses.replace(ev, groups=np.array(["NA"] * 2 + [f"g{i}" for i in range(len(ev.ids) - 2)]))
    again = E.load_evaluation(E.save_evaluation(grouped, tmp_path / "grouped", n=100))
    np.testing.assert_array_equal(again.groups, grouped.groups)  # "NA" stays a name, not a missing value
    assert back.metadata() == ev.metadata() and back.classes == ev.classes and back.model == ev.model
    table = pd.read_csv(folder / "predictions.csv")
    assert list(table.columns[:3]) == ["id", "true", "pred"] and "prob_A" in table and "fold" in table


def test_a_compressed_evaluation_reads_back_the_same_float32_probabilities_and_never_changes_bytes(tmp_path):
    ev = _evaluation()
    ev = dataclasses.replace(ev, y_prob=ev.y_prob.astype(np.float32))  # what inference returns
    folder = E.save_evaluation(ev, tmp_path / "cell", n=50, compress=True)
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "predictions.csv.gz"]
    first = (folder / "predictions.csv.gz").read_bytes()
    back = E.load_evaluation(folder)
    np.testing.assert_array_equal(back.y_prob.astype(np.float32), ev.y_prob)  # 9 digits hold a float32
    np.testing.assert_array_equal(back.ids, ev.ids)
    E.save_evaluation(ev, folder, n=50, compress=True)
    assert (folder / "predictions.csv.gz").read_bytes() == first  # no time stamp in the gzip header
    E.save_evaluation(ev, folder, n=50)  # saved again uncompressed: one copy, never two that could disagree
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "predictions.csv"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        E.load_evaluation(tmp_path)
    folder = E.save_evaluation(_evaluation(folds=False), tmp_path / "m", n=50)
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json"):
        E.load_evaluation(folder)


def test_fold_metrics_and_load_all_and_comparison(tmp_path):
    per_fold = E.fold_metrics(_evaluation())
    assert list(per_fold["fold"]) == [0, 1, 2] and per_fold["n"].sum() == 60
    E.save_evaluation(_evaluation("resnet18", seed=1), tmp_path / "resnet18", n=100)
    E.save_evaluation(_evaluation("alexnet", seed=2), tmp_path / "alexnet", n=100)
    evals = E.load_all(tmp_path)
    assert sorted(evals) == ["alexnet", "resnet18"]
    table = E.comparison_table(evals, n=100)
    assert sorted(table.index) == ["alexnet", "resnet18"] and (table["n_test"] == 60).all()
    for m in E.HEADLINE:
        assert (table[f"{m}_low"] <= table[m]).all() and (table[m] <= table[f"{m}_high"]).all()
    assert {"params", "flops", "train_seconds", "throughput"} <= set(table.columns)


def test_pairwise_mcnemar_aligns_ids_and_refuses_different_test_sets():
    a = _evaluation("a", seed=1)
    shuffled = np.random.default_rng(0).permutation(60)
    b = _evaluation("b", seed=2, order=shuffled)  # same images, another order
    table = E.pairwise_mcnemar({"a": a, "b": b, "c": _evaluation("c", seed=3)})
    assert len(table) == 3 and (table["p_holm"] >= table["p_value"]).all()
    b_in_a_order = _evaluation("b", seed=2)
    expected = E.mcnemar(a.y_true, a.y_pred, b_in_a_order.y_pred)
    assert table.iloc[0][["n01", "n10", "p_value"]].tolist() == [expected["n01"], expected["n10"],
                                                                 pytest.approx(expected["p_value"])]
    fewer = _evaluation("d", order=np.arange(50))
    with pytest.raises(ValueError, match="not tested on the same images.*10 id"):
        E.pairwise_mcnemar({"a": a, "d": fewer})
    wrong = _evaluation("e")
    wrong.y_true = (wrong.y_true + 1) % 4
    with pytest.raises(ValueError, match="disagree on the true label"):
        E.pairwise_mcnemar({"a": a, "e": wrong})


def test_grouped_paired_test_counts_smears_not_copies():
    """Six smears, 40 copies each; B gets two more smears right. McNemar on the 240 copies calls that
    overwhelming; over smears it is 2 of 6, which 2^2 sign patterns cannot make significant (p = 0.5)."""
    y = np.zeros(240, int)
    groups = np.repeat(list("abcdef"), 40)
    pred_a = np.where(np.isin(groups, ["a", "b", "c", "d"]), 1, 0)  # wrong on 4 smears
    pred_b = np.where(np.isin(groups, ["a", "b"]), 1, 0)  # wrong on 2
    assert E.mcnemar(y, pred_a, pred_b)["p_value"] < 1e-15
    test = E.grouped_paired_test(y, pred_a, pred_b, groups)
    assert (test["n01"], test["n10"], test["statistic"]) == (80, 0, 80.0)
    assert test["p_value"] == pytest.approx(0.5) and test["method"].startswith("sign-flip permutation over 6 ")
    # many smears: random sign patterns, seeded; a large consistent difference is significant
    many = np.repeat(np.arange(60), 5)
    y60, a60 = np.zeros(300, int), np.zeros(300, int)
    b60 = np.where(many < 30, 1, 0)  # B wrong on half the smears, A on none
    test = E.grouped_paired_test(y60, a60, b60, many, n=2000, seed=1)
    assert test["p_value"] == pytest.approx(1 / 2001) and "2000 random patterns" in test["method"]
    assert E.grouped_paired_test(y60, a60, a60, many)["p_value"] == 1.0


def test_pairwise_mcnemar_switches_to_smears_when_copies_share_a_group():
    a, b = _evaluation("a", seed=1), _evaluation("b", seed=2)
    assert E.pairwise_mcnemar({"a": a, "b": b}).loc[0, "method"].startswith(("exact", "chi-square"))
    for ev in (a, b):
        ev.groups = np.repeat(np.arange(20), 3).astype(str)  # 60 test images, copies of 20 smears
    assert E.pairwise_mcnemar({"a": a, "b": b}).loc[0, "method"].startswith("sign-flip permutation over 20 ")


def test_pairwise_fold_tests_need_the_same_folds():
    evals = {"a": _evaluation("a", seed=1), "b": _evaluation("b", seed=2)}
    table = E.pairwise_fold_tests(evals)
    per_fold = [E.fold_metrics(ev)["macro_f1"] for ev in evals.values()]
    plain = stats.ttest_rel(*per_fold).pvalue
    corrected = E.paired_fold_test(*per_fold, test_train_ratio=1 / 2)  # 3 folds: test / train = 1 / 2
    assert table.loc[0, "p_value"] == pytest.approx(corrected["p_value"]) and corrected["p_value"] > plain
    assert table.loc[0, "method"] == "corrected resampled t-test over folds (Nadeau-Bengio)"
    other = _evaluation("c", seed=3)
    other.fold = (other.fold + 1) % 3
    with pytest.raises(ValueError, match="different folds"):
        E.pairwise_fold_tests({"a": evals["a"], "c": other})


def test_holm_adjustment():
    np.testing.assert_allclose(E.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


@pytest.mark.parametrize("p, text", [(3.77e-14, "3.8e-14"), (1.3e-26, "1.3e-26"), (5e-4, "5.0e-4"), (0.001, "0.001"),
                                     (0.0299, "0.03"), (0.0669, "0.067"), (0.26317, "0.26"), (0.7509, "0.75"),
                                     (1.0, "1"), (0.0, "< 1e-300"), (float("nan"), "–"), (None, "–")])
def test_format_p_writes_small_p_values_in_scientific_notation(p, text):
    assert E.significance.format_p(p) == text


def test_format_p_never_rounds_across_alpha():
    assert E.significance.format_p(0.0496) == "0.0496"  # not "0.05", beside "significant"
    assert E.significance.format_p(0.0496, alpha=0.01) == "0.05"
    assert E.significance.format_p(0.00996, alpha=0.01) == "0.00996"
    with pytest.raises(ValueError, match="lies in"):
        E.significance.format_p(1.5)
