"""The cells of every numbered notebook (see nbbuild.py). Narrative in markdown, logic in bloodlib."""

COMMON_PARAMS = '''
profile = None      # "smoke" (seconds, for CI) or "full" (the study); None: $BLOODLIB_PROFILE, else "full"
data_dir = None     # a folder in the Kaggle layout; None: $BLOODLIB_DATA, ../shared/data/bccd, the cache, a download
output_dir = None   # where results go; None: $BLOODLIB_OUTPUT, else <repo>/outputs
dataset = "bccd"    # the BCCD smears with labels.csv
mode = "crop"       # "crop": a square around the WBC; "full": the whole 640x480 smear
image_size = None   # pixels (the short side); None: the profile's
seed = 42
'''

SETUP = '''
import pandas as pd
from IPython.display import display

from bloodlib import config, datasets, plots

settings = config.resolve(profile=profile, data_dir=data_dir, output_dir=output_dir, dataset=dataset,
                          mode=mode, image_size=image_size, seed=seed)
plots.set_style()
pd.set_option("display.width", 120)
settings
'''

NB01 = [
    ("md", """
# 01 · Acquisition: the BCCD smears, verified and fingerprinted

The study uses two public sources of the same 2017 BCCD blood-smear photographs:

* the Kaggle dataset **paultimothymooney/blood-cells**, folder `dataset-master`: 366 smears (640×480 JPEG,
  Wright/Giemsa stain) and `labels.csv`, which names the white blood cell (WBC) of interest in each smear;
* the **BCCD_Dataset** repository: Pascal-VOC boxes for every WBC, RBC and platelet, which let the study crop
  the WBC out of the smear.

This notebook finds the data (a local folder, the project's cache, Kaggle through `kagglehub`, or the public
GitHub archives, in that order), checks the layout and counts, and writes a manifest of every file
(path, bytes, SHA-256). The manifest's checksum identifies the data in the run record of the report.
"""),
    ("params", COMMON_PARAMS + '''source = "auto"     # "auto" | "local" | "cache" | "kaggle" | "github"
'''),
    ("code", SETUP),
    ("md", """
## Where the data comes from

A folder named by `data_dir` (or `BLOODLIB_DATA`) is used as it is, or refused with a message that says what
was expected and what was found. Downloads go to the cache (`data/bccd`, git-ignored) under a temporary name and
are renamed into place only after they verify, so a second run finds them without any network.
"""),
    ("code", '''
from bloodlib import acquire

root = datasets.locate(settings, source)
print("data root:", root)
print("sources:", acquire.read_sources(root) or "a local folder, used as it is (read only)")
'''),
    ("md", """
## Layout and counts

Every expected folder with its number of files. `dataset-master/Annotations` holds RBC boxes only; the WBC
boxes come from `BCCD_Dataset/BCCD/Annotations`.
"""),
    ("code", '''
layout = acquire.verify_layout(root, require_boxes=settings.mode == "crop")
pd.Series({k: v for k, v in layout.items() if k != "root"}, name="files").to_frame()
'''),
    ("md", """
## The data manifest

One row per file of `dataset-master` and `BCCD_Dataset`; the checksum over all rows goes into the run record,
so two runs can be compared on exactly the same bytes.
"""),
    ("code", '''
record = datasets.write_data_record(root, settings.output_dir)
manifest = pd.read_csv(settings.output_dir / "data" / "data_manifest.csv")
print(f"{record['files']} files, {record['bytes'] / 1e6:.1f} MB, checksum {record['checksum'][:16]}…")
manifest.groupby(manifest["path"].str.rsplit("/", n=1).str[0])["bytes"].agg(["count", "sum"])
'''),
]

NB02 = [
    ("md", """
# 02 · Cleaning: the seed's rules, reproducible

`labels.csv` has 411 rows for 366 smears. The seed study kept only images with exactly one labelled WBC
class, dropped BASOPHIL (3 images: too few to learn or to split), deleted 10% of the neutrophils to soften the
imbalance, and trained the rarer classes several times. Here the same rules run as one pure, seeded function
(`bloodlib.cleaning.clean`): each step is counted per class, every dropped row keeps its reason, and the
split into train, validation and test happens **before** any oversampling.
"""),
    ("params", COMMON_PARAMS),
    ("code", SETUP),
    ("code", '''
from bloodlib import cleaning

prepared = datasets.prepare(settings)
result = prepared.cleaning
datasets.save_cleaning(prepared)
print(f"{len(result.kept)} images kept of {len(result.manifest)} label rows; classes: {result.classes}")
'''),
    ("md", """
## Images per class after each step

Rows are the steps in the order they run; each row counts what is still kept. The label rows of `labels.csv`
start with 59 rows that have no single class: 44 empty labels and 15 doubles such as
"NEUTROPHIL, EOSINOPHIL" (parsed whatever their case and spacing).
"""),
    ("code", '''
result.table
'''),
    ("md", """
## Dropped rows and their reasons

Label rows without an image, empty and double labels, unreadable (corrupt or truncated) JPEGs, BASOPHIL,
images without a WBC box (see below) and the seeded 10% of neutrophils.
"""),
    ("code", '''
dropped = result.manifest[~result.manifest["kept"]]
display(dropped["reason"].value_counts().rename("rows").to_frame())
unreadable = dropped[dropped["reason"] == "unreadable"]
print("unreadable images:", ", ".join(unreadable["file"]) or "none")
'''),
    ("md", """
## The WBC crop rule

The VOC boxes of BCCD_Dataset mark every WBC. With one box the crop is a square centred on it (the box's longer
side plus a margin on each side, moved inside the smear at the edges). With two boxes the one nearest the
smear's centre is taken. Without a box (five smears have none, two are not annotated) the image is dropped in
both modes, so that crop and full runs use the same images and the same split.
"""),
    ("code", '''
datasets.box_rule_counts(result.manifest).to_frame()
'''),
    ("md", """
## The split

A stratified train / validation / test split (70 / 15 / 15), and a stratified k-fold id for the
cross-validated comparison. The oversampling of rare classes ("train the less-amount classes multiple times")
repeats training images only, by `round(largest class / class count)`; validation and test images are used
once, as they are.
"""),
    ("code", '''
from bloodlib.datasets import repeat_factors

display(cleaning.summary(result))
data = prepared.data
train = data.indices("train")
factors = repeat_factors(data.labels.numpy()[train])
oversampled = pd.Series(data.labels.numpy()[data.training_indices(train)]).map(dict(enumerate(data.classes)))
pd.DataFrame({"repeat factor": factors, "training images per epoch": oversampled.value_counts()},
             index=data.classes)
'''),
    ("md", """
## Distribution after cleaning

The seed's figure: images per class in `labels.csv` (single labels with an image) and after cleaning.
"""),
    ("code", '''
before = result.table.loc[cleaning.STEPS["unreadable"], list(cleaning.KNOWN_CATEGORIES)]
after = result.kept["label"].value_counts().reindex(cleaning.KNOWN_CATEGORIES, fill_value=0)
plots.class_distribution(before, after)
'''),
]

NB03 = [
    ("md", """
# 03 · Exploration: what the classes look like

Before training anything: how balanced the classes are, what a typical cell of each class looks like, how
the colours differ, and how large the smears and WBC boxes are. All figures use the cleaned images, decoded
once into the cache at the profile's image size.
"""),
    ("params", COMMON_PARAMS),
    ("code", SETUP),
    ("code", '''
from bloodlib import cleaning, images

prepared = datasets.prepare(settings)
data, result = prepared.data, prepared.cleaning
print(f"{len(data)} images, {settings.mode} mode, {data.image_size[0]}x{data.image_size[1]} pixels")
'''),
    ("md", """
## Class balance, raw and cleaned

NEUTROPHIL dominates; MONOCYTE and LYMPHOCYTE have a few dozen images each. This is why the study reports
macro-F1 and balanced accuracy, not accuracy alone.
"""),
    ("code", '''
raw = result.table.loc[cleaning.STEPS["unreadable"], list(cleaning.KNOWN_CATEGORIES)]
clean = result.kept["label"].value_counts().reindex(cleaning.KNOWN_CATEGORIES, fill_value=0)
display(pd.DataFrame({"raw (single label, with image)": raw, "cleaned": clean,
                      "cleaned share": (clean / clean.sum()).round(3)}))
plots.class_distribution(raw, clean, title="Class balance: raw vs cleaned")
'''),
    ("md", """
## Sample cells per class

Eosinophils show orange-red granules and a two-lobed nucleus; lymphocytes a large round nucleus with little
cytoplasm; monocytes a kidney-shaped nucleus; neutrophils a nucleus of three to five lobes.
"""),
    ("code", '''
plots.sample_grid(data.images, data.labels, data.classes, per_class=6, seed=settings.seed)
'''),
    ("md", """
## The average image per class

The seed's figure: the pixel-wise mean of every image of a class. A sharp dark centre means the cells are
centred (crop mode); the colour of the mean hints at what a network can use without looking at shape.
"""),
    ("code", '''
plots.average_images(data.images, data.labels, data.classes)
'''),
    ("md", """
## Pixel intensities per channel and class

The seed's figure: the distribution of red, green and blue values per class. Differences here come from
the stain and the cell's colour (eosinophil granules), but also from the background and the red cells around.
"""),
    ("code", '''
plots.channel_histograms(data.images, data.labels, data.classes)
'''),
    ("md", """
## Image sizes and WBC box sizes

Read from the file headers and the VOC boxes (nothing is decoded). Every smear is 640×480; the WBC boxes set
the scale of the crops.
"""),
    ("code", '''
sizes = images.image_sizes([prepared.root / f for f in result.kept["file"]])
boxes = prepared.boxes[prepared.boxes["file"].isin(result.kept["file"])] if prepared.boxes is not None else None
display(sizes[["width", "height"]].describe().T)
if boxes is not None:
    display(boxes[["box_width", "box_height"]].describe().T)
plots.size_statistics(pd.concat([sizes, boxes[["box_width", "box_height"]].reset_index(drop=True)], axis=1)
                      if boxes is not None else sizes)
'''),
]

NOTEBOOKS = {
    "01_acquisition.ipynb": NB01,
    "02_cleaning.ipynb": NB02,
    "03_exploration.ipynb": NB03,
}
