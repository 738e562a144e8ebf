"""Every figure of the study, in one style.

Each function takes plain tables/arrays, returns the matplotlib Figure (the notebook shows it; the caller
may save it) and never calls ``plt.show()``. Call :func:`set_style` once at the top of a notebook.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import nn

from bloodlib import evaluation
from bloodlib.evaluation import explain

CHANNELS = ("red", "green", "blue")
DPI = 90  # inline PNGs: sharp enough to read, small enough to keep the HTML report light
JPEG_QUALITY = 90  # photographs: no visible loss at this size, about a fifth of the PNG's bytes


class PhotoFigure(Figure):
    """A figure of photographs (cells, Grad-CAM overlays): a notebook shows it as JPEG. Enlarged smear
    photographs compress badly as PNG (page 09's cell gallery: 1.38 MB as PNG, 0.29 MB as JPEG); charts stay PNG,
    where JPEG would blur their lines and text."""


def set_style() -> None:
    """Seaborn's white-grid theme, readable fonts and a moderate DPI for every later figure."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "savefig.bbox": "tight",
                         "axes.titleweight": "bold", "figure.titleweight": "bold", "figure.titlesize": "large"})
    _show_figures_inline()


def _show_figures_inline() -> None:
    """In a notebook, display a returned Figure as an embedded PNG (a :class:`PhotoFigure` as JPEG) whatever the
    matplotlib backend (papermill, nbmake and JupyterLab differ), so every figure lands in the executed notebook
    and the report."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    shell.display_formatter.formatters["image/png"].for_type(Figure, _png_unless_photographs)
    shell.display_formatter.formatters["image/jpeg"].for_type(PhotoFigure, figure_bytes)


def figure_bytes(fig: Figure) -> bytes:
    """The figure as the notebook shows it: PNG, or JPEG for a :class:`PhotoFigure`."""
    buffer = io.BytesIO()
    if isinstance(fig, PhotoFigure):
        fig.savefig(buffer, format="jpeg", dpi=DPI, bbox_inches="tight", pil_kwargs={"quality": JPEG_QUALITY})
    else:
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _png_unless_photographs(fig: Figure) -> bytes | None:
    return None if isinstance(fig, PhotoFigure) else figure_bytes(fig)  # None: no PNG; the JPEG formatter shows it


def _subplots(*args, figsize=None, photographs: bool = False, **kwargs):
    """A figure outside pyplot's registry: a notebook shows the returned figure once, and none leaks."""
    fig = (PhotoFigure if photographs else Figure)(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _hwc(images) -> np.ndarray:
    """uint8 images as a numpy N x H x W x 3 array, from N x 3 x H x W (torch or numpy) or N x H x W x 3."""
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim != 4:
        raise ValueError(f"expected a batch of images N x 3 x H x W or N x H x W x 3, got shape {array.shape}")
    if array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {array.shape}")
    return array


def _labels(labels) -> np.ndarray:
    return labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)


def _grid(n: int, ncols: int, size: float = 1.8, **kwargs) -> tuple[Figure, np.ndarray]:
    """A grid of image panels, axes off: a :class:`PhotoFigure`."""
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = _subplots(nrows, ncols, figsize=(size * ncols, (size + 0.5) * nrows + 0.5), squeeze=False,
                          photographs=True, **kwargs)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


# ------------------------------------------------------------------------------------------------ data
def class_distribution(before: pd.Series, after: pd.Series, *, title: str = "Images per class before and after cleaning"
                       ) -> Figure:
    """Grouped bars: images per class in the raw labels and after cleaning (counts on the bars)."""
    order = before.index.union(after.index, sort=False)  # the caller's class order, not alphabetical
    table = pd.DataFrame({"before cleaning": before.reindex(order), "after cleaning": after.reindex(order)}).fillna(0)
    long = table.rename_axis("class").reset_index().melt(id_vars="class", var_name="stage", value_name="images")
    fig, ax = _subplots(figsize=(max(6, 1.3 * len(table)), 4))
    sns.barplot(long, x="class", y="images", hue="stage", ax=ax)
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%d", fontsize="small")
    ax.set(title=title, xlabel="class", ylabel="images")
    ax.legend(title=None)
    fig.tight_layout()
    return fig


def sample_grid(images, labels, classes: Sequence[str], per_class: int = 6, seed: int = 0, *,
                title: str = "Sample images per class") -> Figure:
    """A row of ``per_class`` randomly chosen (seeded) images for each class."""
    array, labels = _hwc(images), _labels(labels)
    rng = np.random.default_rng(seed)
    fig, axes = _subplots(len(classes), per_class, figsize=(1.6 * per_class + 1, 1.6 * len(classes) + 0.5),
                          squeeze=False, photographs=True)
    for row, name in enumerate(classes):
        members = np.flatnonzero(labels == row)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([]), ax.set_yticks([])
            ax.grid(False)
            if col < len(chosen):
                ax.imshow(array[chosen[col]])
            else:
                ax.set_frame_on(False)
        axes[row, 0].set_ylabel(f"{name}\n(n={len(members)})", rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def average_images(images, labels, classes: Sequence[str], *, title: str = "Average image per class") -> Figure:
    """The pixel-wise mean image of each class: what a 'typical' cell of the class looks like."""
    array, labels = _hwc(images), _labels(labels)
    fig, axes = _subplots(1, len(classes), figsize=(2.6 * len(classes), 3.0), squeeze=False, photographs=True)
    for k, (name, ax) in enumerate(zip(classes, axes[0])):
        members = labels == k
        ax.axis("off")
        ax.set_title(f"{name} (n={members.sum()})", fontsize="medium")
        if members.any():
            ax.imshow(array[members].mean(axis=0, dtype=np.float64).round().astype(np.uint8))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def channel_histograms(images, labels, classes: Sequence[str], *, bins: int = 64,
                       title: str = "Pixel-intensity distribution per channel and class") -> Figure:
    """One panel per colour channel, one density line per class (histograms of all pixels, normalised)."""
    array, labels = _hwc(images), _labels(labels)
    edges = np.linspace(0, 256, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    palette = sns.color_palette(n_colors=len(classes))
    fig, axes = _subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for c, (channel, ax) in enumerate(zip(CHANNELS, axes)):
        for k, name in enumerate(classes):
            pixels = array[labels == k, ..., c]
            if pixels.size:
                counts = np.bincount(pixels.ravel().astype(np.int64) * bins // 256, minlength=bins)
                ax.plot(centres, counts / counts.sum() / (256 / bins), color=palette[k], label=name)
        ax.set(title=f"{channel} channel", xlabel="pixel intensity (0-255)", xlim=(0, 255))
    axes[0].set_ylabel("density")
    axes[-1].legend(title="class", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def size_statistics(df: pd.DataFrame, *, title: str = "Image and WBC box sizes") -> Figure:
    """Image sizes (scatter, point area = count), WBC box width/height histograms and box width vs height.

    ``df`` columns: width, height (images); box_width, box_height (WBC boxes; NaN where an image has none);
    an optional ``label`` column colours the boxes by class.
    """
    has_boxes = {"box_width", "box_height"} <= set(df.columns)
    fig, axes = _subplots(1, 3 if has_boxes else 1, figsize=(14, 4) if has_boxes else (5, 4), squeeze=False)
    axes = axes[0]
    sizes = df[["width", "height"]].dropna().value_counts().rename("images").reset_index()
    area = 20 + 200 * sizes["images"] / sizes["images"].max()  # points^2
    axes[0].scatter(sizes["width"], sizes["height"], s=area)
    for (_, row), radius in zip(sizes.iterrows(), np.sqrt(area) / 2):
        axes[0].annotate(f"{int(row['images'])}", (row["width"], row["height"]), textcoords="offset points",
                         xytext=(0, radius + 2), ha="center", va="bottom", fontsize="small")
    axes[0].margins(x=0.15, y=0.25)  # room for the count above the outermost points, inside the axes
    axes[0].set(title="image size (count per size)", xlabel="width (px)", ylabel="height (px)")
    if not has_boxes:  # datasets without WBC boxes: the image sizes alone
        fig.suptitle(title)
        fig.tight_layout()
        return fig
    boxes = df.dropna(subset=["box_width", "box_height"])
    long = boxes.melt(value_vars=["box_width", "box_height"], var_name="side", value_name="pixels")
    sns.histplot(long, x="pixels", hue="side", element="step", ax=axes[1])
    axes[1].set(title="WBC box sides", xlabel="side length (px)", ylabel="boxes")
    sns.scatterplot(boxes, x="box_width", y="box_height", hue="label" if "label" in boxes else None,
                    alpha=0.7, ax=axes[2])
    axes[2].set(title="WBC box width vs height", xlabel="box width (px)", ylabel="box height (px)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ training / eval
def training_curves(history: pd.DataFrame, *, kept_epoch: int | None = None, title: str = "Training curves") -> Figure:
    """Loss, accuracy and macro-F1 per epoch, train vs validation; ``kept_epoch`` (the one the run kept,
    ``FitResult.kept_epoch``) is marked, or else the best validation macro-F1."""
    panels = [(key, evaluation.METRIC_LABELS[key]) for key in ("loss", "accuracy", "macro_f1")]
    fig, axes = _subplots(1, 3, figsize=(14, 3.8))
    marked, label = kept_epoch, "kept epoch"
    if kept_epoch is None and "val_macro_f1" in history and history["val_macro_f1"].notna().any():
        marked, label = history.loc[history["val_macro_f1"].idxmax(), "epoch"], "best epoch"
    for ax, (key, name) in zip(axes, panels):
        for split in ("train", "val"):
            column = f"{split}_{key}"
            if column in history:
                ax.plot(history["epoch"], history[column], marker="o", markersize=3,
                        label="train" if split == "train" else "validation")
        if marked is not None:
            ax.axvline(marked, color="grey", linestyle="--", linewidth=1, label=f"{label} ({marked})")
        ax.set(title=name, xlabel="epoch", ylabel=name)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(counts: pd.DataFrame, normalised: pd.DataFrame, *, title: str = "Confusion matrix") -> Figure:
    """Counts and row-normalised (recall per true class) heatmaps side by side."""
    fig, axes = _subplots(1, 2, figsize=(2.2 * len(counts) + 5, 0.9 * len(counts) + 2.2))
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", cbar=False, square=True, ax=axes[0])
    sns.heatmap(normalised, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, square=True, ax=axes[1])
    for ax, name in zip(axes, ("counts", "normalised by true class")):
        ax.set(title=name, xlabel="predicted class", ylabel="true class")
        ax.tick_params(axis="x", labelrotation=30)
        ax.tick_params(axis="y", labelrotation=0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def per_class_bars(table: pd.DataFrame, *, title: str = "Per-class precision, recall and F1") -> Figure:
    """Grouped bars of precision/recall/F1 per class, the support written under each class name."""
    columns = [c for c in ("precision", "recall", "f1", "auc") if c in table]
    names = [f"{c}\n(n={int(n)})" for c, n in zip(table.index, table["support"])] if "support" in table \
        else list(table.index)
    long = table[columns].set_axis(names).rename_axis("class").reset_index().melt(
        id_vars="class", var_name="metric", value_name="score")
    fig, ax = _subplots(figsize=(max(6, 1.8 * len(table)), 4))
    sns.barplot(long, x="class", y="score", hue="metric", ax=ax)
    ax.set(title=title, xlabel="class", ylabel="score", ylim=(0, 1.05))
    ax.legend(title=None, fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig


def metrics_with_ci(table: pd.DataFrame, metrics: Sequence[str] | None = None, *,
                    title: str = "Test metrics with 95% bootstrap intervals") -> Figure:
    """Point estimate and CI error bar per metric, one colour per model.

    ``table``: one row per model (index), columns ``m``, ``m_low``, ``m_high`` per metric (as
    :func:`bloodlib.evaluate.comparison_table` returns).
    """
    metrics = list(metrics or [c for c in table.columns if f"{c}_low" in table and f"{c}_high" in table])
    fig, ax = _subplots(figsize=(max(6, 1.6 * len(metrics) + 0.4 * len(table)), 4))
    palette = sns.color_palette(n_colors=len(table))
    width = 0.8 / max(1, len(table))
    x = np.arange(len(metrics))
    for i, (model, row) in enumerate(table.iterrows()):
        value = row[metrics].to_numpy(float)
        low = row[[f"{m}_low" for m in metrics]].to_numpy(float)
        high = row[[f"{m}_high" for m in metrics]].to_numpy(float)
        ax.errorbar(x - 0.4 + width * (i + 0.5), value, yerr=[value - low, high - value], fmt="o", capsize=4,
                    color=palette[i], label=str(model))
    ax.set_xticks(x, [evaluation.METRIC_LABELS.get(m, m.replace("_", " ")) for m in metrics])
    ax.set(title=title, xlabel="metric", ylabel="score")
    ax.legend(title="model", fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def search_progress(progress: pd.DataFrame, *, title: str = "Validation macro-F1 of each search's trials") -> Figure:
    """One panel per model: each finished trial's validation score (dots; pruned trials as crosses along the axis)
    and the best so far (a step line), so a reader sees where each search stopped improving.

    ``progress``: columns ``model``, ``order``, ``state``, ``validation_macro_f1``, ``best_so_far`` (as
    :func:`bloodlib.tuning.search.finished_in_order` returns)."""
    models = list(dict.fromkeys(progress["model"]))
    if not models:
        raise ValueError("search_progress: no finished trial to draw")
    fig, axes = _subplots(1, len(models), figsize=(3.4 * len(models) + 0.6, 3.6), squeeze=False, sharey=True)
    for ax, model, colour in zip(axes[0], models, sns.color_palette(n_colors=len(models))):
        mine = progress[progress["model"] == model]
        complete, pruned = mine[mine["state"] == "COMPLETE"], mine[mine["state"] == "PRUNED"]
        ax.plot(complete["order"], complete["validation_macro_f1"], "o", color=colour, label="trial")
        ax.plot(pruned["order"], np.full(len(pruned), 0.02), "x", color="grey", label="pruned (no score)")
        ax.step(mine["order"], mine["best_so_far"], where="post", color=colour, alpha=0.7, label="best so far")
        ax.set(title=model, xlabel="finished trial", ylim=(0, 1))
        ax.set_xticks(mine["order"])
    axes[0][0].set_ylabel("validation macro-F1")
    axes[0][-1].legend(fontsize="small", loc="lower right")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # the top twentieth for the suptitle
    return fig


def train_test_heatmaps(matrices: dict[str, pd.DataFrame], *, title: str) -> Figure:
    """One heatmap per model (rows: trained on, columns: tested on), values in [0, 1].

    Models differ in shape (one trained in a single lab has one row), so no axis is shared: each panel keeps its
    own rows and columns, and is as wide as its columns so that a cell has one size in every panel."""
    if not matrices:
        raise ValueError("train_test_heatmaps: no model to draw")
    widths = [max(1, matrix.shape[1]) for matrix in matrices.values()]
    rows = max(len(matrix) for matrix in matrices.values())
    fig, axes = _subplots(1, len(matrices), figsize=(1.2 * sum(widths) + 1.4 * len(matrices) + 0.4, 1.2 * rows + 2.0),
                          squeeze=False, width_ratios=widths)
    for ax, (model, matrix) in zip(axes[0], matrices.items()):
        sns.heatmap(matrix, annot=True, fmt=".2f", cmap="RdYlGn", vmin=0, vmax=1, cbar=False, square=True, ax=ax)
        ax.set_anchor("N")  # the first rows line up across panels
        ax.set(title=model, xlabel="tested on", ylabel="trained on")
        ax.tick_params(axis="y", labelrotation=0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_grid(images, titles: Sequence[str] | None = None, *, ncols: int = 4, title: str = "Images") -> Figure:
    """Images (N x 3 x H x W or N x H x W x 3 uint8) in a grid, each with its own small title."""
    array = _hwc(images)
    fig, axes = _grid(len(array), min(ncols, max(1, len(array))), size=2.2)
    for i, ax in enumerate(axes.flat[:len(array)]):
        ax.imshow(array[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize="small", fontweight="normal")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def gradcam_figure(model: nn.Module, images, y_true, classes: Sequence[str], *,
                   normalize: explain.Normalize | tuple | None = None, device: torch.device | str | None = None,
                   layer: nn.Module | None = None, ncols: int = 4, title: str | None = None) -> Figure:
    """Grad-CAM overlays for the predicted class, each titled "true / predicted (p)"."""
    maps, probs = explain.gradcam(model, images, normalize=normalize, device=device, layer=layer)
    pred = probs.argmax(axis=1)
    titles = [f"{classes[t]} /\n{classes[p]} ({prob[p]:.2f})" for t, p, prob in zip(np.asarray(y_true), pred, probs)]
    title = title or f"Grad-CAM of the predicted class ({type(model).__name__}): true / predicted (p)"
    return image_grid(explain.overlay(images, maps), titles, ncols=ncols, title=title)
