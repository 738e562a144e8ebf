{#- The one text of the training notebooks 04-06 (Jinja2, percent format). `make notebooks-sync`
    (bloodlib.pipeline.notebooks) renders it once per model into notebooks/NN_<name>.py and its .ipynb: edit here,
    never those. What differs between models (title, description, citation) is its entry in
    bloodlib.models.registry; number and model_name come from bloodlib.pipeline.notebooks.TRAINING_NOTEBOOKS. -#}
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
# # {{ number }} · {{ title }}
#
{{ description | markdown }}
#
{{ ("Reference: " ~ citation ~ ".") | markdown }}
#
# Every model of the study goes through the same code: `bloodlib.models.create_model` builds it,
# `bloodlib.training.train.fit` trains it (AdamW with a one-cycle schedule, label smoothing, augmentation of the
# training batches only: flips, rotations, colour jitter; the rare classes repeated in the training split only).
# The model is judged by stratified k-fold cross-validation: each cleaned image is tested once by a model that
# never saw it (a dataset with its own test set, and pbc, by one held-out split instead). A validation part of
# the training folds (never the test fold) is scored after every epoch. Which epoch's weights are kept is the
# recipe's `keep_epoch`, printed below for this run: `"last"`, the last epoch of a fixed schedule, or `"best"`, the
# epoch with the best validation macro-F1, with early stopping. The full profile keeps the last epoch on BCCD:
# choosing on a fold's ~40 validation images made the headline move with the seed and the thread count (the
# README, "How steady the headline is"); kaggle-augmented and pbc, whose validation parts hold thousands of
# images, keep the best.

# %% tags=["parameters"]
profile = None      # "smoke" (seconds, for CI) or "full" (the study); None: $BLOODLIB_PROFILE, else "full"
data_dir = None     # a folder in the Kaggle layout; None: $BLOODLIB_DATA, ../shared/data/bccd, the cache, a download
output_dir = None   # where results go; None: $BLOODLIB_OUTPUT, else <repo>/outputs
resume = False      # True: keep the splits already trained in output_dir and continue an interrupted one from
                    # its last.pt (what `python -m bloodlib run --resume` sets)
dataset = "bccd"    # "bccd" (the smears with labels.csv), "kaggle-augmented", "folder:/path", "csv:/path/list.csv"
mode = None         # "crop": a square around the WBC; "full": the whole smear (4:3); None: the dataset's default
image_size = None   # pixels (the short side); None: the profile's
seed = 42
model_name = "{{ model_name }}"  # any name of bloodlib.models.list_models()
pretrained = "scratch"  # random initial weights: the same numbers on every machine, with or without internet.
                        # ImageNet only when asked (`-p pretrained imagenet`; "auto": ImageNet when it can be
                        # fetched, else from scratch with a warning); "pbc" (this study's backbone trained on PBC,
                        # built once and cached) or the path of a best.pt of this study; its head is replaced
folds = None        # cross-validation folds (None: the profile's; 1: a holdout split)
repeats = None      # repetitions of the k-fold with other shuffles
# The training recipe (bloodlib.config.TrainConfig); None: the layered default (base recipe, profile,
# dataset, then this model's recipe for the dataset in config.MODEL_RECIPES, chosen by `python -m bloodlib tune`
# on validation parts for training from scratch: notebook 07 shows how)
epochs = None
batch_size = None
lr = None               # peak learning rate of the one-cycle schedule
weight_decay = None     # decoupled (AdamW) or L2 (SGD); biases and norm layers are not decayed
optimizer = None        # "adamw" or "sgd" (Nesterov momentum 0.9)
drop_rate = None        # dropout before the classifier (None: the model's own)
drop_path_rate = None   # stochastic depth, where the model has it (None: the model's own)
warmup = None           # fraction of the steps spent warming up
keep_epoch = None       # "last": a fixed schedule keeps its last epoch; "best": the best on validation, and
                        # early stopping after `patience` epochs without a better one
patience = None
label_smoothing = None
augment = None          # random flips, rotations and colour jitter of the training batches
colour_jitter = None    # strength of the colour jitter (0: geometry only)
stain_jitter = None     # > 0: random jitter of the haematoxylin and eosin stains (HED space)
input_colour = None     # "lab": the network reads each image's own standardised CIELAB channels; None: RGB
zoom = None             # > 0: random zoom range
shift = None            # > 0: random shift, a fraction of the side
ema_decay = None        # > 0: keep an exponential moving average of the weights
mixup_alpha = None
cutmix_alpha = None
oversample = None       # repeat the rare classes in the training part
backbone_lr_scale = None  # fine-tuning: the backbone's learning rate relative to the new head's (1: the same)
eval_batch_size = None
channels_last = None    # None: chosen for the device
cpu_bf16 = None         # None: chosen for the CPU and model
cuda_autocast = None    # None: fp16 autocast on CUDA; False: fp32 there too (no TF32)

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
from bloodlib.study import experiment
from bloodlib.pipeline import report
from bloodlib.data import splits

prepared = datasets.prepare(settings)
data = prepared.data
print(f"{len(data)} images, {len(data.classes)} classes, {settings.mode} mode at "
      f"{data.image_size[0]}x{data.image_size[1]} px; device: {config.select_device()}")
splits.table(prepared.splits, data.labels, data.classes)

# %% [markdown]
# ## Training
#
# One fit per split (fold and repeat). The first line below says which epoch each split keeps (this run's
# `keep_epoch`), the second where the initial weights came from: from scratch (the default), ImageNet (only when
# asked, and it cannot always be fetched) or a backbone this study trained on another dataset (with its score on
# that dataset's own test part). The table gives each split's sizes, the epoch kept and its validation macro-F1.

# %%
recipe = settings.train
print(f"keep_epoch={recipe.keep_epoch!r}: " + (
    f"every split trains all {recipe.epochs} epochs and keeps the last; validation is scored, never used to choose"
    if recipe.keep_epoch == "last" else
    f"every split keeps its epoch of best validation macro-F1, stopping after {recipe.patience} epochs without a "
    f"better one (at most {recipe.epochs})"))
run = experiment.run_model(prepared, model_name, pretrained=pretrained, resume=resume)
print("weights:", report.weights(run.model.initial_weights))
tables = experiment.statistics(run, n=settings.bootstrap, seed=settings.seed)
tables["splits"].round(3)

# %% [markdown]
# ## Loss and accuracy curves
#
# Train against validation for the first split (the other splits behave alike; their histories are in
# `history.csv`). The dashed line marks the epoch that was kept.

# %%
first = run.history[run.history["split"] == run.splits[0].name]
plots.training_curves(first, kept_epoch=run.fits[0].kept_epoch,
                      title=f"{model_name}: training curves ({run.splits[0].name})")

# %% [markdown]
# ## Test statistics
#
# Each image's prediction comes from the model of the fold that held it out. Point estimates with 95%
# bootstrap confidence intervals (resampling the test images within each class); below, the metrics per fold
# with a t-interval over folds, Nadeau-Bengio corrected (the folds share training images). Where the test images
# are augmented copies of fewer source smears (kaggle-augmented: 2,487 TEST images from 71 smears), whole source
# groups are resampled instead: the copies of one smear are right or wrong together, so they are one piece of
# evidence, not 35.

# %%
print("intervals:", tables["headline"].attrs["method"])
display(tables["headline"].round(3))
if "fold_summary" in tables:
    display(tables["fold_summary"].round(3))
tables["per_class"].round(3)

# %% [markdown]
# ## Does validation predict the test?
#
# With `keep_epoch="best"` the validation part chose the epoch, so it is optimistic by construction; with
# `"last"` it was only watched, an honest estimate from fewer images. Split by source image (copies of one smear
# never straddle it), it should land within a few points of the test. Any further test set of the dataset
# (TEST_SIMPLE of kaggle-augmented: the unaugmented source images) is scored here by the first split's model.

# %%
experiment.test_sets_table(run, n=settings.bootstrap, seed=settings.seed).round(3)

# %%
plots.per_class_bars(tables["per_class"], title=f"{model_name}: precision, recall and F1 per class")

# %% [markdown]
# ## Confusion matrix
#
# Counts and the same matrix normalised by row (the recall of each class on the diagonal).

# %%
plots.confusion_matrix(tables["confusion"], tables["confusion_normalised"], title=f"{model_name}: confusion matrix")

# %% [markdown]
# ## Grad-CAM: where the network looks
#
# Grad-CAM maps of the predicted class for held-out cells of each class (the first split's model). A model
# that learned the cell should light up the nucleus and granules, not the red cells around it.

# %%
experiment.gradcam_figure(run, data, per_class=settings.gradcam_per_class, seed=settings.seed)

# %% [markdown]
# ## The most confident mistakes
#
# The wrong predictions the model was surest of: label noise, ambiguous cells, or a systematic confusion. Where
# the test images are augmented copies of fewer smears, one image per smear, so that one misread smear does not
# fill the grid with copies of itself.

# %%
mistakes, figure = experiment.mistakes_figure(run, data, k=8)
display(mistakes.round(3))
figure

# %% [markdown]
# ## Errors by source smear
#
# On a test set of augmented copies (kaggle-augmented's TEST) each smear stands behind tens of images, and a
# few misread smears can hold most of the errors: one monocyte smear of 155 copies is 6 points of accuracy.
# The table lists every source smear with an error, the most errors first.

# %%
by_source = experiment.errors_by_source(run)
if by_source is None:
    print("Every test image is its own source image: the confusion matrix above says where the errors are.")
else:
    print(by_source.attrs["summary"])
    display(by_source.round(3))
