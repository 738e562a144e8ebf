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

# %%

# %% [markdown]
# # 08 · Across labs: how models trained in one lab read another lab's cells
#
# Every number so far comes from one lab: BCCD's smears, one stain, one camera. Two questions follow, and
# published work says the answer to the second is mostly no (Tsutsui, Su and Wen, ICASSP 2023: an
# ImageNet-pretrained ResNet-50 at 98.5% in its own domain, 23% on BCCD):
#
# 1. Does a larger, expert-labelled atlas from another lab lift the small study? The PBC atlas (Acevedo et
#    al. 2020: 17,092 cells, 8 classes, Hospital Clinic of Barcelona, CellaVision DM96, May Grünwald-Giemsa)
#    trains a backbone here once (cached by what made it), which the BCCD models then start from.
# 2. Does a model trained in one lab read the other lab's cells?
#
# Cross-dataset numbers are computed on the classes both labs share (`bloodlib.data.classes`), and each table says
# what was left out. Macro-F1 comes first: on BCCD an "always neutrophil" model scores accuracy 0.60 and
# macro-F1 0.19.

# %% tags=["parameters"]
profile = None      # "smoke" (seconds, for CI) or "full" (the study); None: $BLOODLIB_PROFILE, else "full"
data_dir = None     # a folder in the Kaggle layout; None: $BLOODLIB_DATA, ../shared/data/bccd, the cache, a download
output_dir = None   # where results go; None: $BLOODLIB_OUTPUT, else <repo>/outputs
dataset = "bccd"    # the home lab: the dataset notebooks 02-07 ran on
mode = None         # "crop": a square around the WBC; "full": the whole smear (4:3); None: the dataset's default
image_size = None   # pixels (the short side); None: the profile's
seed = 42
folds = None        # the home dataset's folds (None: the profile's), as in notebooks 02-06
repeats = None
source = "pbc"      # the other lab: a dataset name (its backbone is trained here once, then cached)
models = ["resnet18", "efficientnet_b0", "alexnet"]  # home models (notebooks 04-06) scored on the other lab
pretrain = ["resnet18"]  # architectures trained on the other lab (a backbone each: the costly part on a CPU)
adapt = ["reinhard", "adabn"]  # gap-narrowing at test time: stain normalisation, BatchNorm statistics (AdaBN)
finetune = ["resnet18"]  # architectures fine-tuned from their backbone on the home folds
lr = None                # the fine-tuning recipe (None: the layered default, as notebooks 04-06)
backbone_lr_scale = None  # the backbone's learning rate relative to the new head's
epochs = None

# %%
import pandas as pd
from IPython.display import Markdown, display

from bloodlib import config, plots
from bloodlib.study import transfer

settings = config.resolve(**config.notebook_parameters(globals()))
plots.set_style()
pd.set_option("display.width", 120)
settings

# %% [markdown]
# ## The two labs, and the backbones
#
# For each architecture of `pretrain` a backbone is trained from scratch on the other lab's training part (its
# own held-out split: train, validation for early stopping, test), at this run's image size and mode, or read
# from the cache when the same data, model, size and recipe made one before: on two CPU cores one backbone is
# most of this notebook's time, so the full profile pretrains resnet18 alone. Then every pair of labs is
# scored, the test-time methods are measured, and the fine-tuned models are trained on the home folds.

# %%
study = transfer.across_labs(settings, source, models, pretrain=pretrain, adapt=adapt, finetune=finetune)
print(study.why_not or "\n".join(f"{model}: backbone {path}" for model, path in study.backbones.items()))

# %% [markdown]
# ## The same cells in two labs
#
# A reader sees the shift before any model does: stain, illumination, magnification and framing differ.

# %%
transfer.side_by_side(study.home, study.away, per_class=4, seed=settings.seed) if study.home else None

# %% [markdown]
# ## Trained in one lab, tested in another
#
# home -> home: cross-validation (notebooks 04-06); home -> other: a home model (the first split's) on every
# image of the other lab; other -> other: the backbone on the other lab's held-out test part (all its
# classes); other -> home: the backbone on every home image, without any home training. 95% bootstrap
# intervals.

# %%
scores = transfer.table(study.cells, n=settings.bootstrap, seed=settings.seed)
display(transfer.display_table(scores)) if len(scores) else print(study.why_not)
print(transfer.left_out(study.cells))

# %%
transfer.heatmap(scores) if len(scores) else None

# %% [markdown]
# ## Narrowing the gap at test time
#
# The other lab's backbone on the home cells, before and after: stain normalisation of each home image
# towards the other lab's colours (Reinhard; torchstain), and AdaBN (the BatchNorm statistics re-estimated on
# the home images, labels unseen). Same images before and after; McNemar's test on the changed predictions.

# %%
for model, gap in study.gaps.items():
    display(Markdown(f"**{model}**"), transfer.display_gap(gap))

# %% [markdown]
# ## From scratch, or from the other lab's backbone
#
# The home folds of notebooks 02-06, once from scratch (notebooks 04-06) and once starting from the backbone
# (a new head), with the fine-tuning recipe: the home recipe with the changes printed below
# (`config.FINETUNE_RECIPES`, chosen on the folds' validation parts, never on their test parts). Per fold, then
# the corrected resampled t-test over folds and McNemar's test.

# %%
print("fine-tuning recipe, changes to the home recipe:", transfer.finetune_recipe(settings) or "none")
for model, compared in study.finetuned.items():
    display(Markdown(f"**{model}**"), *transfer.display_finetuned(compared))

# %% [markdown]
# ## Conclusion
#
# Written from the numbers above (`bloodlib.study.transfer.conclusion`).

# %%
Markdown(transfer.conclusion(study))
