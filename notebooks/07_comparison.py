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

from bloodlib.study import comparison, recipes, reruns
from bloodlib.tuning import space

trials = recipes.read_trials()
result = comparison.compare(settings.output_dir / "models", n=settings.bootstrap, seed=settings.seed,
                            trials=trials, tuning=True, spread=reruns.read_spread())
comparison.display_table(result)

# %% [markdown]
# ## How each model was tuned
#
# A fair race gives every architecture the same search: `python -m bloodlib tune MODEL` (`bloodlib.tuning`) draws
# recipes from each model's declared space (below) with Optuna's TPE sampler, trains each on every fold's
# training part for the profile's fixed schedule and scores it on the folds' **validation** parts only (the test
# parts are dropped before anything trains; a median pruner stops a recipe that trails the others at the end of
# a fold). Every model gets the same number of trials and the same epochs and image size, so the same budget in
# training images x epochs. The chosen recipe goes into `config.MODEL_RECIPES`; the training notebooks read it.
# The test score beside each choice was read once, after the search. One recipe serves all four folds, so a
# fold's test cells helped train the other folds' trial models (as in any search over the folds of one
# cross-validation; a nested search per fold would cost four times as much): no test part scored a trial.

# %%
display(space.space_table(list(result.table.index)))
comparison.display_tuning(result)

# %% [markdown]
# Each search's trials in the order they ran: a best found in the last trials says the search may not be
# done improving; a flat line after an early best says more trials of the same space would hardly help.

# %%
progress = recipes.search_progress(trials, result.table.index)
if progress.empty:
    display(Markdown("*No search of these models has finished a trial yet (`python -m bloodlib tune MODEL`).*"))
else:
    display(plots.search_progress(progress))

# %% [markdown]
# ## How much a rerun moves the answer
#
# The bootstrap intervals hold each trained model fixed. Training again with another seed draws other initial
# weights, batches and augmentations: the table below (from `benchmarks/results/seed_spread.csv`, written by
# `benchmarks/spread.py` with each model's recipe) gives each model's fold-mean macro-F1 over several training
# seeds, beside this run's bootstrap interval, and says whether the ranking survives the spread.

# %%
if result.spread is None:
    display(Markdown("*No seed-spread table yet: run `python benchmarks/spread.py` with the models' recipes.*"))
else:
    display(reruns.spread_table(result.spread, result.table).round(3),
            Markdown(reruns.ranking_sentence(result.spread, list(result.table.index))))

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
# Written from the numbers above (`bloodlib.study.comparison.conclusion`), so it changes with them: the test over
# folds first (the folds are the unit of the claim), whether the ranking holds under every seed of the spread
# table, then the pooled predictions with McNemar's test, then how the recipes were chosen.

# %%
Markdown(comparison.conclusion(result))
