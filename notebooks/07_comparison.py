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
# # 07 · Comparison: which architecture, and how sure are we?
#
# The three training notebooks saved every test prediction. Here they are compared on the same images:
# accuracy, balanced accuracy and macro-F1 with 95% bootstrap intervals, the cost of each model (parameters,
# FLOPs, training time, inference throughput), and paired tests. McNemar's test asks whether two models err on
# different images more often than chance allows; with cross-validation the corrected resampled t-test over
# folds (Nadeau and Bengio, 2003) asks the same of the fold macro-F1: the folds share most of their training
# images, so a plain paired t-test over folds would overstate significance. p-values are Holm-adjusted for the
# three pairs.

# %% tags=["parameters"]
profile = None      # "smoke" (seconds, for CI) or "full" (the study); None: $BLOODLIB_PROFILE, else "full"
data_dir = None     # a folder in the Kaggle layout; None: $BLOODLIB_DATA, ../shared/data/bccd, the cache, a download
output_dir = None   # where results go; None: $BLOODLIB_OUTPUT, else <repo>/outputs
dataset = "bccd"    # "bccd" (the smears with labels.csv), "kaggle-augmented", "folder:/path", "csv:/path/list.csv"
mode = None         # "crop": a square around the WBC; "full": the whole smear (4:3); None: the dataset's default
image_size = None   # pixels (the short side); None: the profile's
seed = 42

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
from IPython.display import Markdown

from bloodlib.study import comparison

result = comparison.compare(settings.output_dir / "models", n=settings.bootstrap, seed=settings.seed)
comparison.display_table(result)

# %% [markdown]
# ## The metrics with their confidence intervals

# %%
headline = plots.metrics_with_ci(result.table, ["accuracy", "balanced_accuracy", "macro_f1", "roc_auc"],
                                 title="Test metrics per model, with 95% bootstrap intervals")
comparison.save(result, settings.output_dir / "comparison", figure=headline)
headline

# %% [markdown]
# ## Further test sets
#
# A dataset with more than one test set (kaggle-augmented: TEST, and TEST_SIMPLE, the unaugmented source images
# of TEST) is compared on each here, by each model's first-split network. Nothing is shown for BCCD, whose
# only test set is the cross-validation above.

# %%
further = comparison.further_test_sets(settings.output_dir, n=settings.bootstrap, seed=settings.seed)
for split, other in further.items():
    display(Markdown(f"**{split}**"), comparison.display_table(other))

# %% [markdown]
# ## Paired tests
#
# `n01`: images only the first model got right; `n10`: only the second. McNemar's test looks at these alone and
# treats images as independent. On a test set of augmented copies (kaggle-augmented: 71 smears behind 2,487
# images) copies of one smear are right or wrong together, so there the pairs are compared by a sign-flip
# permutation test over source smears instead (the `method` column says which test ran).

# %%
display(comparison.display_tests(result.mcnemar))
if result.fold_tests is not None:
    display(comparison.display_tests(result.fold_tests))

# %% [markdown]
# ## Conclusion
#
# Written from the numbers above (`bloodlib.study.comparison.conclusion`), so it changes with them.

# %%
Markdown(comparison.conclusion(result))
