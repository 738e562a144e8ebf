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
# # 09 · Any lab: leave one lab out
#
# Notebook 08 showed that a model trained in one lab reads another lab's cells badly. A study that claims its
# models generalise has to test them on a lab they never saw, and a single pair of labs says little about the
# next one. Three labs are at hand:
#
# - **bccd**: Kaggle's BCCD smears (Wright/Giemsa, photographed whole, the WBC cropped around its annotated box);
# - **pbc**: the PBC atlas (Acevedo et al. 2020: Hospital Clinic of Barcelona, CellaVision DM96, May Grünwald-Giemsa);
# - **deepapl**: DeepAPL's signed-off normal white cells (Sidhom et al. 2021: Johns Hopkins, CellaVision, 106
#   leukaemia patients).
#
# **Leave one lab out (LOLO)**: for each lab, a model is trained on the other labs and tested on every cell of the
# held-out lab, whose labels it never sees, without and with the test-time methods of notebook 08 (Reinhard stain
# normalisation towards the training labs' colours, AdaBN on the held-out lab's images). Each model is also trained
# on every lab alone, which fills the lab x lab matrix: the LOLO rounds are the question "does a second training lab
# help with a third?".
#
# Every lab's cells are cropped the same way (a square around the WBC, grown by the same margin: one cell scale
# across magnifications) and compared on the classes all labs have (`bloodlib.data.classes`); what was left out is
# said. Training epochs are lab-balanced (every lab weighs the same, classes balanced within a lab); validation is
# split from the training labs by patient or smear, never from the held-out lab. Macro-F1 comes first; the 95%
# intervals resample whole patients where a lab has them (DeepAPL).

# %% tags=["parameters"]
profile = None      # "smoke" (seconds, for CI) or "full" (the study); None: $BLOODLIB_PROFILE, else "full"
output_dir = None   # where results go; None: $BLOODLIB_OUTPUT, else <repo>/outputs
labs = ["bccd", "pbc", "deepapl"]  # datasets, each found by its own rules (docs/datasets.md)
dataset = "labs"    # several labs at once: its recipe is config.DATASET_DEFAULTS[(profile, "labs")]
model_name = "resnet18"  # the architecture trained in every round, from scratch
methods = ["none", "reinhard", "adabn"]  # at test time on a lab not trained on ("reinhard+adabn": both)
single_lab = True   # also train on each lab alone (the lab x lab matrix): one model per lab more
all_labs = True     # also train on every lab at once: the model published for other labs (--checkpoint any-lab)
image_size = None   # pixels; None: the page's recipe for the profile (config.DATASET_DEFAULTS, "labs")
seed = 42
epochs = None       # the recipe (None: the profile's, then the page's, as notebooks 04-06 layer theirs)
lr = None
stain_jitter = None  # > 0: HED stain augmentation while training (Tellez et al. 2018): other labs' stains
input_colour = None  # "lab": the network reads each image's CIELAB channels standardised by the image's own
                     # mean and spread, a lab's overall colour and contrast taken out; "rgb": as notebooks 04-06;
                     # None: the page's recipe ("lab", config.DATASET_DEFAULTS)
resume = False      # True: keep the models already trained in output_dir, continue an interrupted one

# %%
import pandas as pd
from IPython.display import Markdown, display

from bloodlib import config, plots
from bloodlib.study import lab_recipes
from bloodlib.study import labs as labsets
from bloodlib.study import lolo

settings = config.resolve(**config.notebook_parameters(globals()))
plots.set_style()
pd.set_option("display.width", 120)
settings

# %% [markdown]
# ## The labs, on the classes they share
#
# Each lab is cleaned and decoded as notebooks 01-02 do for one dataset (with the smoke profile, PBC and DeepAPL are
# seeded subsets), in crop mode at this run's image size.

# %%
data = labsets.load(labs, settings)
print(labsets.left_out_text(data))

# %% [markdown]
# ## The same cell types in every lab
#
# A row per class, the labs left to right: stain, illumination, framing and the cells' own look differ.

# %%
labsets.side_by_side(data, per_class=3, seed=settings.seed)

# %% [markdown]
# ## Training: once per held-out lab, once per lab alone, once on every lab
#
# The study's loop (`bloodlib.training.train.fit`) with the layered recipe, each model seeded as the training
# notebooks seed their splits. Per model and training lab: its images in each part, the training positions one epoch
# holds (equal for every training lab; a lab alone, or beside all others, gets at least what each lab got in a LOLO
# round, so that no model is short of steps), the kept epoch and its validation macro-F1.

# %%
result = lolo.leave_one_lab_out(data, model_name, settings, methods=methods, single_lab=single_lab,
                                all_labs=all_labs, resume=resume)
lolo.training_table(result)

# %% [markdown]
# ## Leave one lab out
#
# Every cell of the held-out lab, scored by the model trained on the others, per test-time method. 95% bootstrap
# intervals.

# %%
scores = lolo.scores(result.cells, n=settings.bootstrap, seed=settings.seed)
lolo.display_lolo(scores)

# %% [markdown]
# ### Which training recipe travels
#
# `benchmarks/lolo_recipes.py` compares these rounds, run once per training recipe (the network; HED stain jitter
# while training; the input colour: RGB, or each image's CIELAB channels standardised by its own mean and spread), on
# the same held-out cells; its committed table is shown here, with how the recipe of this run was chosen.

# %%
recipe_table = lab_recipes.read_recipes()
if recipe_table is not None:
    display(lab_recipes.display_recipes(recipe_table))
Markdown(lab_recipes.recipe_sentence(recipe_table, model_name, settings.train))

# %% [markdown]
# Recall per class: which cell types a lab nobody trained on loses.

# %%
lolo.display_recall(lolo.per_class_recall(result.cells))

# %% [markdown]
# ## Trained on one lab (or two), tested on each
#
# Rows: the labs a model trained on; columns: the lab it was tested on. The diagonal is a lab's own held-out test
# part (grouped by patient or smear), without adaptation in every panel; off the diagonal, every image of the other
# lab. The last rows are the LOLO rounds.

# %%
lolo.heatmap(scores)

# %% [markdown]
# ## Conclusion
#
# Written from the numbers above (`bloodlib.study.lolo.conclusion`); every prediction is saved under the run's
# `lolo/<model>/cells/`, from which this page's numbers can be recomputed.

# %%
Markdown(lolo.conclusion(result.cells, scores))
