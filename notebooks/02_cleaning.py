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
# # 02 · Cleaning: the seed's rules, reproducible
#
# `labels.csv` has 411 rows for 366 smears. The seed study kept only images with exactly one labelled WBC
# class, dropped BASOPHIL (3 images: too few to learn or to split), deleted 10% of the neutrophils to soften the
# imbalance, and trained the rarer classes several times. Here the same rules run as one pure, seeded function
# (`bloodlib.data.cleaning.clean`): each step is counted per class, and every dropped row keeps its reason. The kept
# images are then split, **before** any oversampling, into the very splits the training notebooks use.

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
from bloodlib.data import folders, splits

prepared = datasets.prepare(settings)
result = prepared.cleaning
datasets.save_cleaning(prepared)
print(f"{len(result.kept)} images kept of {len(result.manifest)} label rows; classes: {result.classes}")

# %% [markdown]
# ## Images per class after each step
#
# Rows are the steps in the order they run; each row counts what is still kept. The label rows of `labels.csv`
# start with 59 rows that have no single class: 44 empty labels and 15 doubles such as
# "NEUTROPHIL, EOSINOPHIL" (parsed whatever their case and spacing).

# %%
result.table

# %% [markdown]
# ## Dropped rows and their reasons
#
# Label rows without an image, empty and double labels, unreadable (corrupt or truncated) JPEGs, BASOPHIL,
# images without a WBC box (see below) and the seeded 10% of neutrophils.

# %%
dropped = result.manifest[~result.manifest["kept"]]
display(dropped["reason"].value_counts().rename("rows").to_frame())
unreadable = dropped[dropped["reason"] == "unreadable"]
print("unreadable images:", ", ".join(unreadable["file"]) or "none")

# %% [markdown]
# ## The WBC crop rule
#
# The VOC boxes of BCCD_Dataset mark every WBC. With one box the crop is a square centred on it (the box's longer
# side plus a margin on each side, moved inside the smear at the edges). With two boxes the one nearest the
# smear's centre is taken. Without a box (five smears have none, two are not annotated) the image is dropped in
# both modes, so that crop and full runs use the same images and the same split.
#
# A dataset without boxes (`kaggle-augmented`, a folder of your own images) finds the WBC by its stain instead:
# the largest strongly purple blob (a nucleus) is the cell's centre, and a square 1.3 times its extent stands
# for the box (the ratio of the VOC boxes to these blobs on the BCCD smears); an image with no such blob keeps
# its centred square.

# %%
if prepared.boxes is not None:
    display(datasets.box_rule_counts(result.manifest).to_frame())
else:
    print(f"{settings.dataset} has no WBC boxes: crop mode centres each crop on the WBC found by its stain")
    display(folders.box_sources(result))

# %% [markdown]
# ## The splits the models are trained and tested on
#
# Every training notebook of this run trains on exactly these splits: they are made once, by
# `bloodlib.data.splits.plan`, from the kept images, their classes and their groups (copies of one source image
# share a group and never straddle a boundary). With cross-validation (`folds > 1`, BCCD's protocol) every image
# is tested once per repeat by a model that never saw it, and a stratified validation part of the training
# folds (never the test fold) chooses the epoch; a dataset with its own test set (kaggle-augmented's TEST)
# keeps it, and a validation part of its training images chooses the epoch. The manifest
# (`data/manifest.csv`) records, per repeat, the fold each image is tested in (`test_fold_r1`, ...), or its
# part of a holdout split (`split`).

# %%
print(f"protocol: {prepared.protocol}, {len(prepared.splits)} split(s)")
splits.table(prepared.splits, prepared.data.labels, prepared.data.classes)

# %% [markdown]
# ## Oversampling, per training part
#
# The seed's "train the less-amount classes multiple times" repeats the training images of each rare class
# `round(largest class / class count)` times, the factors computed from each split's training part alone;
# validation and test images are used once, as they are.

# %%
datasets.oversampling_table(prepared.data, prepared.splits)

# %% [markdown]
# ## Distribution after cleaning
#
# The seed's figure: images per class in `labels.csv` (single labels with an image) and after cleaning.

# %%
balance = datasets.class_balance(result)
plots.class_distribution(balance["before"], balance["after"])
