"""The cells of every numbered notebook (see nbbuild.py). Narrative in markdown, logic in bloodlib."""

COMMON_PARAMS = '''
profile = None      # "smoke" (seconds, for CI) or "full" (the study); None: $BLOODLIB_PROFILE, else "full"
data_dir = None     # a folder in the Kaggle layout; None: $BLOODLIB_DATA, ../shared/data/bccd, the cache, a download
output_dir = None   # where results go; None: $BLOODLIB_OUTPUT, else <repo>/outputs
dataset = "bccd"    # "bccd" (the smears with labels.csv), "kaggle-augmented", "folder:/path", "csv:/path/list.csv"
mode = None         # "crop": a square around the WBC; "full": the whole smear (4:3); None: the dataset's default
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
from bloodlib import cleaning, folders

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

A dataset without boxes (`kaggle-augmented`, a folder of your own images) finds the WBC by its stain instead:
the largest strongly purple blob (a nucleus) is the cell's centre, and a square 1.3 times its extent stands
for the box (the ratio of the VOC boxes to these blobs on the BCCD smears); an image with no such blob keeps
its centred square.
"""),
    ("code", '''
if prepared.boxes is not None:
    display(datasets.box_rule_counts(result.manifest).to_frame())
else:
    print(f"{settings.dataset} has no WBC boxes: crop mode centres each crop on the WBC found by its stain")
    display(folders.box_sources(result))
'''),
    ("md", """
## The split

A stratified train / validation / test split (70 / 15 / 15), and a stratified k-fold id for the
cross-validated comparison. The oversampling of rare classes ("train the less-amount classes multiple times")
repeats training images only, by `round(largest class / class count)`; validation and test images are used
once, as they are.
"""),
    ("code", '''
display(cleaning.summary(result))
datasets.oversampling_table(prepared.data)
'''),
    ("md", """
## Distribution after cleaning

The seed's figure: images per class in `labels.csv` (single labels with an image) and after cleaning.
"""),
    ("code", '''
balance = datasets.class_balance(result)
plots.class_distribution(balance["before"], balance["after"])
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
balance = datasets.class_balance(result)
display(balance)
plots.class_distribution(balance["before"], balance["after"], title="Class balance: raw vs cleaned")
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
sizes = datasets.size_table(prepared)
display(sizes.describe().T.round(1))
plots.size_statistics(sizes)
'''),
]

TRAIN_PARAMS = COMMON_PARAMS + '''model_name = "{model}"  # any name of bloodlib.models.list_models()
pretrained = "auto"  # "auto": ImageNet weights when they can be fetched, else from scratch (with a warning)
epochs = None       # None: the profile's
batch_size = None
folds = None        # cross-validation folds (None: the profile's; 1: the fixed train/val/test split)
repeats = None      # repetitions of the k-fold with other shuffles
'''

TRAIN_SETUP = SETUP.replace("mode=mode, image_size=image_size, seed=seed)",
                            "mode=mode, image_size=image_size, seed=seed, epochs=epochs,\n"
                            "                          batch_size=batch_size, folds=folds, repeats=repeats)")


def training_notebook(number: str, title: str, model: str, about: str) -> list:
    return [
        ("md", f"""
# {number} · {title}

{about}

Every model of the study goes through the same code: `bloodlib.models.create_model` builds it,
`bloodlib.train.fit` trains it (AdamW with a one-cycle schedule, label smoothing, augmentation of the training
batches only: flips, rotations, colour jitter; the rare classes repeated in the training split only), and early
stopping keeps the epoch with the best validation macro-F1. The model is judged by stratified k-fold
cross-validation: each cleaned image is tested once by a model that never saw it, and a validation part of
the training folds (never the test fold) chooses the epoch.
"""),
        ("params", TRAIN_PARAMS.replace("{model}", model)),
        ("code", TRAIN_SETUP),
        ("code", '''
from bloodlib import cleaning, experiment

prepared = datasets.prepare(settings)
data = prepared.data
print(f"{len(data)} images, {len(data.classes)} classes, {settings.mode} mode at "
      f"{data.image_size[0]}x{data.image_size[1]} px; device: {config.select_device()}")
cleaning.summary(prepared.cleaning)
'''),
        ("md", """
## Training

One fit per split (fold and repeat). The table gives each split's sizes, the epoch early stopping kept and
its validation macro-F1. ImageNet weights cannot always be fetched: the line below says whether this run
started from them or from scratch.
"""),
        ("code", '''
run = experiment.run_model(prepared, model_name, pretrained=pretrained)
print("weights:", "ImageNet-pretrained" if run.evaluation.pretrained_source == "imagenet" else "trained from scratch")
tables = experiment.statistics(run, n=settings.bootstrap, seed=settings.seed)
tables["splits"].round(3)
'''),
        ("md", """
## Loss and accuracy curves

Train against validation for the first split (the other splits behave alike; their histories are in
`history.csv`). The dashed line marks the epoch that was kept.
"""),
        ("code", '''
first = run.history[run.history["split"] == run.splits[0].name]
plots.training_curves(first, title=f"{model_name}: training curves ({run.splits[0].name})")
'''),
        ("md", """
## Test statistics

Each image's prediction comes from the model of the fold that held it out. Point estimates with 95%
bootstrap confidence intervals (resampling the test images within each class); below, the metrics per fold
with a t-interval over folds. Where the test images are augmented copies of fewer source smears
(kaggle-augmented: 2,487 TEST images from 71 smears), whole source groups are resampled instead: the copies
of one smear are right or wrong together, so they are one piece of evidence, not 35.
"""),
        ("code", '''
print("intervals:", tables["headline"].attrs["method"])
display(tables["headline"].round(3))
if "fold_summary" in tables:
    display(tables["fold_summary"].round(3))
tables["per_class"].round(3)
'''),
        ("md", """
## Does validation predict the test?

The validation part chose the epoch, so it is optimistic by construction; split by source image (copies of one
smear never straddle it), it should still land within a few points of the test. Any further test set of the
dataset (TEST_SIMPLE of kaggle-augmented: the unaugmented source images) is scored here by the first split's model.
"""),
        ("code", '''
experiment.test_sets_table(run, n=settings.bootstrap, seed=settings.seed).round(3)
'''),
        ("code", '''
plots.per_class_bars(tables["per_class"], title=f"{model_name}: precision, recall and F1 per class")
'''),
        ("md", """
## Confusion matrix

Counts and the same matrix normalised by row (the recall of each class on the diagonal).
"""),
        ("code", '''
plots.confusion_matrix(tables["confusion"], tables["confusion_normalised"], title=f"{model_name}: confusion matrix")
'''),
        ("md", """
## Grad-CAM: where the network looks

Grad-CAM maps of the predicted class for held-out cells of each class (the first split's model). A model
that learned the cell should light up the nucleus and granules, not the red cells around it.
"""),
        ("code", '''
experiment.gradcam_figure(run, data, per_class=settings.gradcam_per_class, seed=settings.seed)
'''),
        ("md", """
## The most confident mistakes

The wrong predictions the model was surest of: label noise, ambiguous cells, or a systematic confusion. Where
the test images are augmented copies of fewer smears, one image per smear, so that one misread smear does not
fill the grid with copies of itself.
"""),
        ("code", '''
mistakes, figure = experiment.mistakes_figure(run, data, k=8)
display(mistakes.round(3))
figure
'''),
        ("md", """
## Errors by source smear

On a test set of augmented copies (kaggle-augmented's TEST) each smear stands behind tens of images, and a
few misread smears can hold most of the errors: one monocyte smear of 155 copies is 6 points of accuracy.
The table lists every source smear with an error, the most errors first.
"""),
        ("code", '''
by_source = experiment.errors_by_source(run)
if by_source is None:
    print("Every test image is its own source image: the confusion matrix above says where the errors are.")
else:
    print(by_source.attrs["summary"])
    display(by_source.round(3))
'''),
    ]


NB07 = [
    ("md", """
# 07 · Comparison: which architecture, and how sure are we?

The three training notebooks saved every test prediction. Here they are compared on the same images:
accuracy, balanced accuracy and macro-F1 with 95% bootstrap intervals, the cost of each model (parameters,
FLOPs, training time, inference throughput), and paired tests. McNemar's test asks whether two models err on
different images more often than chance allows; with cross-validation a paired t-test over folds asks the
same of the fold macro-F1. p-values are Holm-adjusted for the three pairs.
"""),
    ("params", COMMON_PARAMS),
    ("code", SETUP),
    ("code", '''
from IPython.display import Markdown

from bloodlib import comparison

result = comparison.compare(settings.output_dir / "models", n=settings.bootstrap, seed=settings.seed)
comparison.display_table(result)
'''),
    ("md", """
## The metrics with their confidence intervals
"""),
    ("code", '''
headline = plots.metrics_with_ci(result.table, ["accuracy", "balanced_accuracy", "macro_f1", "roc_auc"],
                                 title="Test metrics per model, with 95% bootstrap intervals")
comparison.save(result, settings.output_dir / "comparison", figure=headline)
headline
'''),
    ("md", """
## Further test sets

A dataset with more than one test set (kaggle-augmented: TEST, and TEST_SIMPLE, the unaugmented source images
of TEST) is compared on each here, by each model's first-split network. Nothing is shown for BCCD, whose
only test set is the cross-validation above.
"""),
    ("code", '''
further = comparison.further_test_sets(settings.output_dir, n=settings.bootstrap, seed=settings.seed)
for split, other in further.items():
    display(Markdown(f"**{split}**"), comparison.display_table(other))
'''),
    ("md", """
## Paired tests

`n01`: images only the first model got right; `n10`: only the second. McNemar's test looks at these alone and
treats images as independent. On a test set of augmented copies (kaggle-augmented: 71 smears behind 2,487
images) copies of one smear are right or wrong together, so there the pairs are compared by a sign-flip
permutation test over source smears instead (the `method` column says which test ran).
"""),
    ("code", '''
display(result.mcnemar.round(4))
if result.fold_tests is not None:
    display(result.fold_tests.round(4))
'''),
    ("md", """
## Conclusion

Written from the numbers above (`bloodlib.comparison.conclusion`), so it changes with them.
"""),
    ("code", '''
Markdown(comparison.conclusion(result))
'''),
]


NOTEBOOKS = {
    "01_acquisition.ipynb": NB01,
    "02_cleaning.ipynb": NB02,
    "03_exploration.ipynb": NB03,
    "04_resnet.ipynb": training_notebook("04", "ResNet-18", "resnet18", """
A residual network (He et al., 2016): 11 million parameters in four stages of 3x3 convolutions with
skip connections. The workhorse baseline of image classification; here through `timm`."""),
    "05_efficientnet.ipynb": training_notebook("05", "EfficientNet-B0", "efficientnet_b0", """
EfficientNet-B0 (Tan and Le, 2019): 4 million parameters of mobile inverted bottlenecks with
squeeze-and-excitation, scaled for accuracy per FLOP; through `timm`."""),
    "06_alexnet.ipynb": training_notebook("06", "AlexNet", "alexnet", """
AlexNet (Krizhevsky et al., 2012): five large convolutions and three dense layers, 57 million
parameters, the network the seed study started from; through `torchvision` (timm has none)."""),
    "07_comparison.ipynb": NB07,
}
