"""Every figure builds from small synthetic inputs, has a title and labelled axes, and never shows itself."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bloodlib import evaluation, plots  # noqa: E402
from conftest import check_figure  # noqa: E402

CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


@pytest.fixture(autouse=True)
def _no_show_and_close(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plots must not call plt.show()"))
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5)
    base = rng.integers(0, 256, (20, 3, 24, 24), dtype=np.uint8)
    return torch.from_numpy(base), torch.from_numpy(labels)


def test_set_style_keeps_figures_light():
    plots.set_style()
    assert plt.rcParams["figure.dpi"] <= 100


def test_class_distribution():
    before = pd.Series([88, 33, 20, 206, 3], index=CLASSES + ["BASOPHIL"])
    after = pd.Series([88, 33, 20, 185], index=CLASSES)
    fig = plots.class_distribution(before, after)
    check_figure(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES + ["BASOPHIL"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before cleaning", "after cleaning"]


def test_image_figures(images):
    x, y = images
    for fig in (plots.sample_grid(x, y, CLASSES, per_class=3), plots.average_images(x, y, CLASSES),
                plots.image_grid(x[:5], [f"image {i}" for i in range(5)], ncols=3)):
        check_figure(fig)
    grid = plots.sample_grid(x, y, CLASSES, per_class=3)
    assert [ax.get_ylabel().split("\n")[0] for ax in grid.axes[::3]] == CLASSES  # class name on each row
    # channels-last input (Grad-CAM overlays) works too
    check_figure(plots.image_grid(x.permute(0, 2, 3, 1).numpy()[:2], ["a", "b"]))
    with pytest.raises(ValueError, match="3 colour channels"):
        plots.image_grid(np.zeros((2, 4, 8, 8), dtype=np.uint8))


def test_channel_histograms_are_densities(images):
    x, y = images
    fig = plots.channel_histograms(x, y, CLASSES, bins=32)
    check_figure(fig)
    line = fig.axes[0].get_lines()[0]
    xs, ys = line.get_data()
    assert np.sum(ys) * (256 / 32) == pytest.approx(1.0)  # each line integrates to one
    assert len(fig.axes[0].get_lines()) == len(CLASSES)


def test_size_statistics():
    df = pd.DataFrame({"width": [640] * 5 + [320], "height": [480] * 5 + [240],
                       "box_width": [150, 170, np.nan, 120, 200, 90], "box_height": [140, 160, np.nan, 130, 190, 80],
                       "label": ["EOSINOPHIL", "LYMPHOCYTE", None, "MONOCYTE", "NEUTROPHIL", "NEUTROPHIL"]})
    check_figure(plots.size_statistics(df))
    # a dataset without WBC boxes (kaggle-augmented, a folder of images): the image sizes alone
    no_boxes = plots.size_statistics(df[["width", "height"]])
    check_figure(no_boxes)
    assert len(no_boxes.axes) == 1


def test_training_curves():
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.3, 1.0, .8], "val_loss": [1.4, 1.2, 1.1],
                            "train_accuracy": [.3, .5, .6], "val_accuracy": [.3, .4, .5],
                            "train_macro_f1": [.2, .4, .5], "val_macro_f1": [.2, .45, .4]})
    fig = plots.training_curves(history)
    check_figure(fig)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "macro-F1"]
    assert "best epoch (2)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    kept = plots.training_curves(history, kept_epoch=3)  # a fixed schedule keeps its last epoch
    assert "kept epoch (3)" in [t.get_text() for t in kept.axes[0].get_legend().get_texts()]


def test_evaluation_figures():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 6)
    prob = rng.dirichlet(np.ones(4), len(y))
    counts, normalised = evaluation.confusion_tables(y, prob, CLASSES)
    fig = plots.confusion_matrix(counts, normalised)
    check_figure(fig)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == CLASSES
    check_figure(plots.per_class_bars(evaluation.per_class_table(y, prob, CLASSES)))
    table = pd.DataFrame({"accuracy": [.8, .7], "accuracy_low": [.7, .6], "accuracy_high": [.9, .8],
                          "macro_f1": [.6, .5], "macro_f1_low": [.4, .3], "macro_f1_high": [.7, .6],
                          "params": [1e7, 5e7]}, index=pd.Index(["resnet18", "alexnet"], name="model"))
    fig = plots.metrics_with_ci(table)
    check_figure(fig)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["accuracy", "macro-F1"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["resnet18", "alexnet"]
