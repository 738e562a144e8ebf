"""Every figure builds from small synthetic inputs, has a title and labelled axes, keeps every text inside its
axes, shows each panel's own ticks, and never shows itself."""
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bloodlib import evaluation, plots  # noqa: E402
from conftest import check_figure, tick_labels  # noqa: E402

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


def no_ticks(ax) -> bool:
    """A picture's panel: no axis drawn, or no tick label on either axis."""
    return not ax.axison or tick_labels(ax, "x") == tick_labels(ax, "y") == []


def test_image_figures(images):
    x, y = images
    for fig in (plots.sample_grid(x, y, CLASSES, per_class=3), plots.average_images(x, y, CLASSES),
                plots.image_grid(x[:5], [f"image {i}" for i in range(5)], ncols=3)):
        check_figure(fig)
        assert all(no_ticks(ax) for ax in fig.axes)
    grid = plots.sample_grid(x, y, CLASSES, per_class=3)
    assert len(grid.axes) == 4 * 3 and all(len(ax.get_images()) == 1 for ax in grid.axes)
    assert [ax.get_ylabel().split("\n")[0] for ax in grid.axes[::3]] == CLASSES  # class name on each row
    means = plots.average_images(x, y, CLASSES)
    assert [ax.get_title() for ax in means.axes] == [f"{name} (n=5)" for name in CLASSES]
    shown = plots.image_grid(x[:5], [f"image {i}" for i in range(5)], ncols=3)
    assert [ax.get_title() for ax in shown.axes if ax.get_images()] == [f"image {i}" for i in range(5)]
    assert len(shown.axes) == 6 and not shown.axes[5].get_images()  # the unused cell of the grid stays empty
    # channels-last input (Grad-CAM overlays) works too
    check_figure(plots.image_grid(x.permute(0, 2, 3, 1).numpy()[:2], ["a", "b"]))
    with pytest.raises(ValueError, match="3 colour channels"):
        plots.image_grid(np.zeros((2, 4, 8, 8), dtype=np.uint8))


def test_a_notebook_shows_photographs_as_jpeg_and_charts_as_png(images, monkeypatch):
    """Enlarged photographs weigh several times more as PNG (the report's pages carry them inline); charts keep
    PNG's sharp lines."""
    import IPython
    from IPython.core.formatters import DisplayFormatter

    shell = type("Shell", (), {"display_formatter": DisplayFormatter()})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    plots.set_style()
    x, y = images
    big = torch.nn.functional.interpolate(x[:8].float(), size=64, mode="bilinear").round().to(torch.uint8)
    for fig in (plots.image_grid(big, ncols=4), plots.sample_grid(x, y, CLASSES, per_class=3),
                plots.average_images(x, y, CLASSES)):
        shown, _ = shell.display_formatter.format(fig)
        assert "image/png" not in shown and shown["image/jpeg"].startswith(b"\xff\xd8\xff")  # a JPEG's first bytes
    shown, _ = shell.display_formatter.format(plots.class_distribution(pd.Series([3, 1], index=CLASSES[:2]),
                                                                       pd.Series([2, 1], index=CLASSES[:2])))
    assert "image/jpeg" not in shown and shown["image/png"].startswith(b"\x89PNG")
    grid = plots.image_grid(big, ncols=4)
    png = io.BytesIO()
    grid.savefig(png, format="png", dpi=plots.DPI, bbox_inches="tight")
    assert len(plots.figure_bytes(grid)) < len(png.getvalue()) / 2


def test_channel_histograms_are_densities(images):
    x, y = images
    fig = plots.channel_histograms(x, y, CLASSES, bins=32)
    check_figure(fig)
    line = fig.axes[0].get_lines()[0]
    xs, ys = line.get_data()
    assert np.sum(ys) * (256 / 32) == pytest.approx(1.0)  # each line integrates to one
    assert len(fig.axes[0].get_lines()) == len(CLASSES)
    for ax, channel in zip(fig.axes, plots.CHANNELS):
        assert ax.get_title() == f"{channel} channel" and ax.get_xlim() == (0, 255)
        assert tick_labels(ax, "x")[0] == "0" and ax.get_ylim() == fig.axes[0].get_ylim()
    # one density scale for the three panels, its tick labels at the left only
    assert len(tick_labels(fig.axes[0], "y")) > 1
    assert tick_labels(fig.axes[1], "y") == tick_labels(fig.axes[2], "y") == []


def test_size_statistics():
    df = pd.DataFrame({"width": [640] * 5 + [320], "height": [480] * 5 + [240],
                       "box_width": [150, 170, np.nan, 120, 200, 90], "box_height": [140, 160, np.nan, 130, 190, 80],
                       "label": ["EOSINOPHIL", "LYMPHOCYTE", None, "MONOCYTE", "NEUTROPHIL", "NEUTROPHIL"]})
    fig = plots.size_statistics(df)
    check_figure(fig)  # the counts over the points stay inside the first panel
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "5"]
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
    for ax in fig.axes:  # every panel shows every epoch
        low, high = ax.get_xlim()
        assert low <= 1 and high >= 3 and tick_labels(ax, "x")
    assert "best epoch (2)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    kept = plots.training_curves(history, kept_epoch=3)  # a fixed schedule keeps its last epoch
    assert "kept epoch (3)" in [t.get_text() for t in kept.axes[0].get_legend().get_texts()]


def test_search_progress_shows_each_models_trials_and_best_so_far():
    progress = pd.DataFrame({"model": ["a", "a", "a", "b"], "order": [1, 2, 3, 1],
                             "state": ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"],
                             "validation_macro_f1": [0.5, None, 0.7, 0.4], "best_so_far": [0.5, 0.5, 0.7, 0.4]})
    fig = plots.search_progress(progress)
    check_figure(fig)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    scores, pruned, best = fig.axes[0].get_lines()
    assert list(scores.get_ydata()) == [0.5, 0.7] and list(pruned.get_xdata()) == [2]
    assert list(best.get_ydata()) == [0.5, 0.5, 0.7]
    with pytest.raises(ValueError, match="no finished trial"):
        plots.search_progress(progress.iloc[:0])


def test_evaluation_figures():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 6)
    prob = rng.dirichlet(np.ones(4), len(y))
    counts, normalised = evaluation.confusion_tables(y, prob, CLASSES)
    fig = plots.confusion_matrix(counts, normalised)
    check_figure(fig)  # every cell's number inside its panel
    for ax, table in zip(fig.axes, (counts, normalised)):
        assert tick_labels(ax, "y") == tick_labels(ax, "x") == CLASSES
        assert len(ax.texts) == table.size
    assert [t.get_text() for t in fig.axes[0].texts] == [str(v) for v in counts.to_numpy().ravel()]
    check_figure(plots.per_class_bars(evaluation.per_class_table(y, prob, CLASSES)))
    table = pd.DataFrame({"accuracy": [.8, .7], "accuracy_low": [.7, .6], "accuracy_high": [.9, .8],
                          "macro_f1": [.6, .5], "macro_f1_low": [.4, .3], "macro_f1_high": [.7, .6],
                          "params": [1e7, 5e7]}, index=pd.Index(["resnet18", "alexnet"], name="model"))
    fig = plots.metrics_with_ci(table)
    check_figure(fig)
    assert tick_labels(fig.axes[0], "x") == ["accuracy", "macro-F1"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["resnet18", "alexnet"]


def test_train_test_heatmaps_show_every_cell_of_panels_of_any_shape():
    """Models trained in both labs (2 x 2), in one (1 x 2), and scored in three (1 x 3): each panel keeps its own
    rows and columns, whatever panel is drawn last (a shared y axis once cut the 2 x 2 panel to its first row)."""
    def matrix(values, trained, tested):
        return pd.DataFrame(values, index=pd.Index(trained, name="trained on"),
                            columns=pd.Index(tested, name="tested on"))

    matrices = {"resnet18": matrix([[.87, .32], [.26, .93]], ["bccd", "pbc"], ["bccd", "pbc"]),
                "efficientnet_b0": matrix([[.61, .29]], ["bccd"], ["bccd", "pbc"]),
                "alexnet": matrix([[.59, .15, .40]], ["bccd"], ["bccd", "pbc", "raabin"])}
    for order in (list(matrices), list(reversed(matrices))):  # the widest or the shortest drawn last
        fig = plots.train_test_heatmaps({m: matrices[m] for m in order}, title="macro-F1 across labs")
        check_figure(fig)  # every cell's number inside its own panel
        assert [ax.get_title() for ax in fig.axes] == order
        for ax in fig.axes:
            shown = matrices[ax.get_title()]
            assert tick_labels(ax, "y") == list(shown.index) and tick_labels(ax, "x") == list(shown.columns)
            assert sorted(ax.get_ylim()) == [0, len(shown)] and sorted(ax.get_xlim()) == [0, shown.shape[1]]
            assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in shown.to_numpy().ravel()]
            assert ax.get_ylabel() == "trained on" and ax.get_xlabel() == "tested on"
    with pytest.raises(ValueError, match="no model"):
        plots.train_test_heatmaps({}, title="nothing")
