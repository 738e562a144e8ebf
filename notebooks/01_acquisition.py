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
# # 01 · Acquisition: the BCCD smears, verified and fingerprinted
#
# The study uses two public sources of the same 2017 BCCD blood-smear photographs:
#
# * the Kaggle dataset **paultimothymooney/blood-cells**, folder `dataset-master`: 366 smears (640×480 JPEG,
#   Wright/Giemsa stain) and `labels.csv`, which names the white blood cell (WBC) of interest in each smear;
# * the **BCCD_Dataset** repository: Pascal-VOC boxes for every WBC, RBC and platelet, which let the study crop
#   the WBC out of the smear.
#
# This notebook finds the data (a local folder, the project's cache, Kaggle through `kagglehub`, or the public
# GitHub archives, in that order), checks the layout and counts, and writes a manifest of every file
# (path, bytes, SHA-256). The manifest's checksum identifies the data in the run record of the report.

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

from bloodlib import config, datasets, plots

settings = config.resolve(profile=profile, data_dir=data_dir, output_dir=output_dir, dataset=dataset,
                          mode=mode, image_size=image_size, seed=seed)
plots.set_style()
pd.set_option("display.width", 120)
settings

# %% [markdown]
# ## Where the data comes from
#
# A folder named by `data_dir` (or `BLOODLIB_DATA`) is used as it is, or refused with a message that says what
# was expected and what was found. Downloads go to the cache (`data/bccd`, git-ignored) under a temporary name and
# are renamed into place only after they verify, so a second run finds them without any network.

# %%
from bloodlib import acquire

root = datasets.locate(settings, source)
print("data root:", root)
print("sources:", acquire.read_sources(root) or "a local folder, used as it is (read only)")

# %% [markdown]
# ## Layout and counts
#
# Every expected folder with its number of files. `dataset-master/Annotations` holds RBC boxes only; the WBC
# boxes come from `BCCD_Dataset/BCCD/Annotations`.

# %%
layout = acquire.verify_layout(root, require_boxes=settings.mode == "crop")
pd.Series({k: v for k, v in layout.items() if k != "root"}, name="files").to_frame()

# %% [markdown]
# ## The data manifest
#
# One row per file of `dataset-master` and `BCCD_Dataset`; the checksum over all rows goes into the run record,
# so two runs can be compared on exactly the same bytes.

# %%
record = datasets.write_data_record(root, settings.output_dir)
manifest = pd.read_csv(settings.output_dir / "data" / "data_manifest.csv")
print(f"{record['files']} files, {record['bytes'] / 1e6:.1f} MB, checksum {record['checksum'][:16]}…")
manifest.groupby(manifest["path"].str.rsplit("/", n=1).str[0])["bytes"].agg(["count", "sum"])
