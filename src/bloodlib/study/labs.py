"""Several labs' cells as one image set (:class:`LabSet`), for leave-one-lab-out (:mod:`bloodlib.study.lolo`).

Each lab is prepared as every notebook prepares a dataset (:func:`bloodlib.data.datasets.prepare`: cleaned,
decoded, cached), all in crop mode at one image size and crop margin, so that a cell fills about the same share of
its image in every lab whatever the lab's magnification: BCCD's crops are squares around its annotated WBC boxes,
PBC's and DeepAPL's around the box their stain locates (:func:`bloodlib.data.images.stain_box`, calibrated to
BCCD's boxes). :func:`assemble` keeps the classes every lab has (names met through :mod:`bloodlib.data.classes`)
and says what it left out, per lab; a ``lab`` column names each cell's lab, and ids and groups (patients,
smears, copies of one file) are prefixed by the lab, so that two labs' groups never merge.

Training positions are balanced twice (:meth:`LabSet.training_indices`): classes within a lab as
:meth:`~bloodlib.data.datasets.ImageSet.training_indices` balances them, then labs, so that each lab weighs the
same in every epoch. Splits come from :func:`bloodlib.data.splits.plan`, grouped as everywhere in the study:
:func:`held_out_split` (one lab is the whole test part) and :func:`single_lab_split` (one lab alone).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from bloodlib import config, plots
from bloodlib.data import classes, datasets, splits
from bloodlib.data.datasets import ImageSet

LAB = "lab"  # the rows' column naming each cell's lab
MODE = "crop"  # every lab's cells cropped around their WBC: one scale across magnifications


@dataclasses.dataclass
class LabSet(ImageSet):
    """Several labs' images on the classes they all have; ``rows`` carry the lab (:data:`LAB`), ``id`` and
    ``group`` prefixed by it (``"deepapl:Patient_12"``), and each lab's own name of the class (``lab_label``)."""
    labs: list[str] = dataclasses.field(default_factory=list)  # in the order given
    left_out: pd.DataFrame | None = None  # per lab: the classes it has that not every lab has, and their images
    # per lab, the images of its classes left out: what an unlabelled deployment there would also see (AdaBN), never
    # trained or scored on
    unlabelled: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    seed: int = 0  # which positions round out a lab's share of an epoch (training_indices)
    lab_share: int = 0  # each training lab's positions per epoch at least (0: the largest training lab's count)

    def __post_init__(self):
        super().__post_init__()
        if LAB not in self.rows:
            raise ValueError(f"a LabSet's rows need a {LAB!r} column naming each image's lab")
        found = list(pd.unique(self.rows[LAB]))
        self.labs = list(self.labs) or found
        if set(found) != set(self.labs):
            raise ValueError(f"the rows' labs {found} are not the labs {self.labs}")

    def lab_of(self, positions) -> np.ndarray:
        return self.rows[LAB].to_numpy()[np.asarray(positions, dtype=int)]

    def positions(self, lab: str) -> np.ndarray:
        """Every position of ``lab``'s images, in order."""
        if lab not in self.labs:
            raise ValueError(f"no lab {lab!r} here: the labs are {self.labs}")
        return np.flatnonzero(self.rows[LAB].to_numpy() == lab)

    def training_indices(self, train: np.ndarray, oversample: bool = True) -> np.ndarray:
        """Training positions in which every lab weighs the same and, within a lab, every class about the same.

        Within each lab the rare classes are repeated by ImageSet's rule (``round(largest / count)`` times); each
        lab's positions are then repeated, in a seeded order, up to the largest lab's count (or ``lab_share``, if
        larger: a lab alone then gets the steps it would get beside others): whole copies, and the remainder a
        seeded draw without replacement. Without ``oversample`` the positions are returned as they are, as
        ImageSet does."""
        train = np.asarray(train, dtype=int)
        if not oversample or len(train) == 0:
            return train
        present = set(self.lab_of(train))
        by_lab = [super(LabSet, self).training_indices(train[self.lab_of(train) == lab])
                  for lab in self.labs if lab in present]
        target = max(self.lab_share, *(len(positions) for positions in by_lab))
        rng = np.random.default_rng(self.seed)
        # np.resize repeats a seeded permutation cyclically: whole copies of the lab, then a random remainder
        return np.concatenate([np.resize(rng.permutation(positions), target) for positions in by_lab])


def assemble(labs: Mapping[str, ImageSet], *, seed: int = 0) -> LabSet:
    """One :class:`LabSet` of ``labs`` (lab name -> its ImageSet, all at one image size), restricted to the
    classes every lab has (canonical names, :func:`bloodlib.data.classes.canonical`)."""
    if len(labs) < 2:
        raise ValueError(f"assembling labs needs at least two, got {list(labs)}")
    sizes = {lab: data.image_size for lab, data in labs.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the labs' images differ in size: {sizes}; prepare every lab at one image size and mode")
    try:
        shared = functools.reduce(classes.shared, [data.classes for data in labs.values()])
    except ValueError:
        raise ValueError("the labs share no class: " + "; ".join(
            f"{lab}: {', '.join(data.classes)}" for lab, data in labs.items())) from None
    images, labels, rows, left_out, unlabelled = [], [], [], [], {}
    for lab, data in labs.items():
        names = np.asarray(data.classes)[data.labels.numpy()]
        mask, dropped = classes.restriction(names, shared)
        kept = np.flatnonzero(mask.to_numpy())
        images.append(data.images[torch.as_tensor(kept)])
        unlabelled[lab] = data.images[torch.as_tensor(np.flatnonzero(~mask.to_numpy()))]
        labels.append(torch.as_tensor([shared.index(classes.canonical(name)) for name in names[kept]],
                                      dtype=torch.long))
        own = data.rows.iloc[kept]
        ids = own["id"].astype(str).to_numpy()
        groups = own["group"].astype(str).to_numpy() if "group" in own else ids  # no groups: each image its own
        rows.append(pd.DataFrame({"id": [f"{lab}:{i}" for i in ids], LAB: lab,
                                  "label": [classes.canonical(name) for name in names[kept]],
                                  "lab_label": names[kept], "group": [f"{lab}:{g}" for g in groups], "split": "",
                                  **({"file": own["file"].to_numpy()} if "file" in own else {})}))
        left_out.append(dropped.reset_index().assign(**{LAB: lab}))
    rows = pd.concat(rows, ignore_index=True)
    left = pd.concat(left_out, ignore_index=True)[[LAB, "class left out", "images"]]
    return LabSet(images=torch.cat(images), labels=torch.cat(labels), classes=shared, rows=rows, labs=list(labs),
                  left_out=left, unlabelled=unlabelled, seed=seed)


def lab_settings(settings: config.Settings, lab: str) -> config.Settings:
    """``lab``'s dataset at the run's image size, crop margin and seed, in crop mode, in the run's profile (the
    smoke profile reads its subset of PBC and DeepAPL, :data:`bloodlib.data.datasets.SMOKE_SUBSETS`); the lab's
    data are found by its own rules (:func:`bloodlib.data.datasets.locate`)."""
    return config.resolve(settings.profile, None, settings.output_dir, dataset=lab, mode=MODE,
                          image_size=settings.image_size, crop_margin=settings.crop_margin, seed=settings.seed)


def load(labs: Sequence[str], settings: config.Settings, *, progress: bool = True) -> LabSet:
    """Prepare every lab (:func:`lab_settings`) and :func:`assemble` them."""
    if len(set(labs)) != len(labs):
        raise ValueError(f"a lab is named twice in {list(labs)}")
    prepared = {lab: datasets.prepare(lab_settings(settings, lab), progress=progress).data for lab in labs}
    return assemble(prepared, seed=settings.seed)


# ------------------------------------------------------------------------------------------------ splits

def held_out_split(data: LabSet, held_out: str, *, seed: int = 42) -> splits.Split:
    """A leave-one-lab-out round: every image of ``held_out`` tests; the other labs' images train and validate,
    split by :func:`bloodlib.data.splits.plan` (stratified by lab and class, grouped: no patient or smear on both
    sides)."""
    data.positions(held_out)  # a lab it has, or a clear error
    own = np.where(data.rows[LAB].to_numpy() == held_out, "test", "train")
    strata = (data.rows[LAB] + "/" + data.rows["label"]).to_numpy()  # validation holds every lab's classes
    try:
        (split,) = splits.plan(strata, data.rows["group"].to_numpy(), own, folds=1, seed=seed)
    except ValueError as err:
        raise ValueError(f"training on {', '.join(lab for lab in data.labs if lab != held_out)}: {err}") from None
    return dataclasses.replace(split, name=f"{held_out} held out")


def single_lab_split(data: LabSet, lab: str, *, seed: int = 42) -> splits.Split:
    """``lab`` alone: its train, validation and test parts (:func:`bloodlib.data.splits.plan`'s holdout,
    stratified by class, grouped), as positions into ``data``."""
    positions = data.positions(lab)
    try:
        (split,) = splits.plan(data.labels.numpy()[positions], data.rows["group"].to_numpy()[positions],
                               folds=1, seed=seed)
    except ValueError as err:
        raise ValueError(f"lab {lab}: {err}") from None
    return splits.Split(f"{lab} alone", positions[split.train], positions[split.val], positions[split.test])


def all_labs_split(data: LabSet, *, seed: int = 42) -> splits.Split:
    """Every lab at once: each lab's :func:`single_lab_split` parts joined, so that the model trained on all labs
    is tested on the very test parts the single-lab models are (the same images, two models)."""
    parts = [single_lab_split(data, lab, seed=seed) for lab in data.labs]
    return splits.Split("all labs", *(np.concatenate([getattr(p, part) for p in parts])
                                      for part in ("train", "val", "test")))


def split_table(data: LabSet, split: splits.Split) -> pd.DataFrame:
    """Images per lab in each part of ``split``."""
    parts = {"train": split.train, "validation": split.val, "test": split.test}
    table = pd.DataFrame({part: pd.Series(data.lab_of(positions)).value_counts() for part, positions in parts.items()})
    return table.reindex(data.labs).fillna(0).astype(int).rename_axis(LAB)


def left_out_text(data: LabSet) -> str:
    """What :func:`assemble` left out, per lab, in words."""
    lines = [f"classes every lab has: {', '.join(data.classes)} ({len(data)} images)"]
    for lab in data.labs:
        kept = int((data.rows[LAB] == lab).sum())
        dropped = data.left_out[data.left_out[LAB] == lab]
        lines.append(f"{lab}: {kept} images kept; left out: " + (
            ", ".join(f"{row['class left out']} ({row['images']})" for _, row in dropped.iterrows()) or "nothing"))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ figure

def side_by_side(data: LabSet, *, per_class: int = 3, seed: int = 0):
    """Cells of every shared class from every lab, a row per class: ``per_class`` of each lab (as many as a lab
    has), the labs in their order."""
    rng = np.random.default_rng(seed)
    labs, labels = data.rows[LAB].to_numpy(), data.labels.numpy()
    picked, titles = [], []
    for k, name in enumerate(data.classes):
        for lab in data.labs:
            mine = np.flatnonzero((labs == lab) & (labels == k))
            chosen = rng.choice(mine, size=min(per_class, len(mine)), replace=False)
            # a lab short of cells of this class leaves blanks, so that every column stays one lab's
            picked += [data.images[int(i)] for i in chosen] + [None] * (per_class - len(chosen))
            titles += [f"{lab}: {name.lower()}"] * per_class
    blank = torch.full_like(data.images[0], 255)
    return plots.image_grid(torch.stack([blank if p is None else p for p in picked]), titles,
                            ncols=len(data.labs) * per_class,
                            title=f"The same cell types in {len(data.labs)} labs "
                                  f"({', '.join(data.labs)}, left to right)")
