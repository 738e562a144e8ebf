# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (bloodcells)
#     language: python
#     name: bloodcells
# ---

# %% [markdown]
# # 03 · Exploration: what the classes look like
#
# Before training anything: how balanced the classes are, what a typical cell of each class looks like, how
# the colours differ, and how large the smears and WBC boxes are. All figures use the cleaned images, decoded
# once into the cache at the profile's image size.

# %% tags=["parameters"]
profile = None      # "smoke" (seconds, for CI) or "full" (the study); None: $BLOODLIB_PROFILE, else "full"
data_dir = None     # a folder in the Kaggle layout; None: $BLOODLIB_DATA, ../shared/data/bccd, the cache, a download
output_dir = None   # where results go; None: $BLOODLIB_OUTPUT, else <repo>/outputs
dataset = "bccd"    # "bccd" (the smears with labels.csv), "kaggle-augmented", "folder:/path", "csv:/path/list.csv"
mode = None         # "crop": a square around the WBC; "full": the whole smear (4:3); None: the dataset's default
image_size = None   # pixels (the short side); None: the profile's
seed = 42
folds = None        # cross-validation folds (None: the profile's; 1: a holdout split)
repeats = None      # repetitions of the k-fold with other shuffles

# %%
import pandas as pd
from IPython.display import display

from bloodlib import config, plots
from bloodlib.data import datasets

settings = config.resolve(**config.notebook_parameters(globals()))
plots.set_style()
pd.set_option("display.width", 120)
settings

# %%
prepared = datasets.prepare(settings)
data, result = prepared.data, prepared.cleaning
print(f"{len(data)} images, {settings.mode} mode, {data.image_size[0]}x{data.image_size[1]} pixels")

# %% [markdown]
# ## Class balance, raw and cleaned
#
# NEUTROPHIL dominates; MONOCYTE and LYMPHOCYTE have a few dozen images each. This is why the study reports
# macro-F1 and balanced accuracy, not accuracy alone.

# %%
balance = datasets.class_balance(result)
display(balance)
plots.class_distribution(balance["before"], balance["after"], title="Class balance: raw vs cleaned")

# %% [markdown]
# ## Sample cells per class
#
# Eosinophils show orange-red granules and a two-lobed nucleus; lymphocytes a large round nucleus with little
# cytoplasm; monocytes a kidney-shaped nucleus; neutrophils a nucleus of three to five lobes.

# %%
plots.sample_grid(data.images, data.labels, data.classes, per_class=6, seed=settings.seed)

# %% [markdown]
# ## The average image per class
#
# The seed's figure: the pixel-wise mean of every image of a class. A sharp dark centre means the cells are
# centred (crop mode); the colour of the mean hints at what a network can use without looking at shape.

# %%
plots.average_images(data.images, data.labels, data.classes)

# %% [markdown]
# ## Pixel intensities per channel and class
#
# The seed's figure: the distribution of red, green and blue values per class. Differences here come from
# the stain and the cell's colour (eosinophil granules), but also from the background and the red cells around.

# %%
plots.channel_histograms(data.images, data.labels, data.classes)

# %% [markdown]
# ## Image sizes and WBC box sizes
#
# Read from the file headers and the VOC boxes (nothing is decoded). Every smear is 640×480; the WBC boxes set
# the scale of the crops.

# %%
sizes = datasets.size_table(prepared)
display(sizes.describe().T.round(1))
plots.size_statistics(sizes)
