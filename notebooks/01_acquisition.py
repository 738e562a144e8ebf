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
# # 01 · Acquisition: the run's data, located, verified and fingerprinted
#
# The `dataset` parameter picks the data of the whole study; this notebook finds exactly that data:
#
# * `bccd` (the default): the 2017 BCCD blood-smear photographs from two public sources, the Kaggle dataset
#   **paultimothymooney/blood-cells**, folder `dataset-master` (366 smears, 640×480 JPEG, Wright/Giemsa stain,
#   and `labels.csv`, which names the white blood cell (WBC) of interest in each smear), and the
#   **BCCD_Dataset** repository (Pascal-VOC boxes for every WBC, RBC and platelet, which let the study crop the
#   WBC out of the smear);
# * `kaggle-augmented`: the folder `dataset2-master` of the same Kaggle download, 12,515 augmented 320×240 copies
#   of the smears in class folders under `TRAIN`, `TEST` and `TEST_SIMPLE` (only Kaggle has it);
# * `folder:/path`: a folder of your own with one sub-folder per class;
# * `csv:/path/list.csv`: a list of your own with the columns `path,label`.
#
# `bccd` and `kaggle-augmented` live in one data root in the Kaggle layout, found in a local folder, the
# project's cache, Kaggle through `kagglehub`, or the public GitHub archives (`bccd` only), in that order. A
# folder or list of your own is read where it is: nothing is downloaded and no BCCD data is needed. The notebook
# checks the layout and counts, and writes a manifest of every file the run reads (path, bytes, SHA-256), and of
# nothing else. The manifest's checksum identifies the data in the run record of the report.

# %% tags=["parameters"]
profile = None      # "smoke" (seconds, for CI) or "full" (the study); None: $BLOODLIB_PROFILE, else "full"
data_dir = None     # a folder in the Kaggle layout; None: $BLOODLIB_DATA, ../shared/data/bccd, the cache, a download
output_dir = None   # where results go; None: $BLOODLIB_OUTPUT, else <repo>/outputs
dataset = "bccd"    # "bccd" (the smears with labels.csv), "kaggle-augmented", "folder:/path", "csv:/path/list.csv"
mode = None         # "crop": a square around the WBC; "full": the whole smear (4:3); None: the dataset's default
image_size = None   # pixels (the short side); None: the profile's
seed = 42
source = "auto"     # "auto" | "local" | "cache" | "kaggle" | "github"

# %%
import pandas as pd
from IPython.display import display

from bloodlib import config, plots
from bloodlib.data import datasets

settings = config.resolve(profile=profile, data_dir=data_dir, output_dir=output_dir, dataset=dataset,
                          mode=mode, image_size=image_size, seed=seed)
plots.set_style()
pd.set_option("display.width", 120)
settings

# %% [markdown]
# ## Where the data comes from
#
# For `bccd` and `kaggle-augmented`, a folder named by `data_dir` (or `BLOODLIB_DATA`) is used as it is, or
# refused with a message that says what was expected and what was found. Downloads go to the cache
# (`data/bccd`, git-ignored) under a temporary name and are renamed into place only after they verify, so a
# second run finds them without any network. A `folder:` or `csv:` dataset names its own files (`data_dir` is not
# used); its data root is the folder that holds them all: the folder itself, or for a list the folder holding the
# CSV and every file it names.

# %%
from bloodlib.data import acquire, layout

root = datasets.locate(settings, source)
print("dataset:", settings.dataset)
print("data root:", root)
print("sources:", acquire.read_sources(root, settings.dataset) or "a local folder, used as it is (read only)")

# %% [markdown]
# ## Layout and counts
#
# What the run reads, with its number of files: for `bccd` the folders of `dataset-master` and `BCCD_Dataset`
# (`dataset-master/Annotations` holds RBC boxes only; the WBC boxes come from `BCCD_Dataset/BCCD/Annotations`);
# for `kaggle-augmented` the class folders of `dataset2-master`; for a folder the files of each class folder;
# for a list its rows per label and how many of the listed files exist (the cleaning drops, and counts, the
# missing ones).

# %%
counts = layout.verify_layout(root, dataset=settings.dataset)
pd.Series({k: v for k, v in counts.items() if k != "root"}, name="files").to_frame()

# %% [markdown]
# ## The data manifest
#
# One row per file the run reads, and no other: every file of `dataset-master` and `BCCD_Dataset` for `bccd`,
# of `dataset2-master` for `kaggle-augmented`, under the class folders for a folder, the CSV and the files it
# names for a list. The checksum over all rows goes into the run record, so two runs can be compared on exactly
# the same bytes.

# %%
record = datasets.write_data_record(settings, root)
manifest = pd.read_csv(settings.output_dir / "data" / "data_manifest.csv")
print(f"{settings.dataset}: {record['files']} files, {record['bytes'] / 1e6:.1f} MB, "
      f"checksum {record['checksum'][:16]}…")
manifest.groupby(manifest["path"].str.rsplit("/", n=1).str[0])["bytes"].agg(["count", "sum"])
