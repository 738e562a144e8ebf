"""Rendering without a kernel: a run folder made by hand (executed notebooks with a figure, a table,
stdout and stderr; metrics; a comparison) becomes self-contained pages and an index whose links resolve
(checked statically here; ``test_browser.py`` reads them in headless Chromium)."""
from __future__ import annotations

import re

import pytest

import json

import nbformat

from bloodlib.pipeline import pages, report
from bloodlib.pipeline.promote import promote
from bloodlib.pipeline.provenance import repo_root
from bloodlib.utils import fileio, paths
from browser.check import check_report, references, report_pages
from browser.study import SECRET_CODE, make_run, published_study


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    return published_study(tmp_path_factory.mktemp("report"))


def _srcs(page) -> list[str]:
    return [url for tag, attr, url in references(page) if tag in ("img", "script", "link", "iframe")]


def test_pages_are_self_contained(promoted):
    root, _ = promoted
    for page in report_pages(root):
        text = page.read_text()
        assert "<script src" not in text and "require.js" not in text and "mathjax" not in text.lower()
        for url in _srcs(page):
            assert url.startswith("data:"), f"{page.name} loads {url[:60]}"
    figures = _srcs(root / "pages" / "01_data.html")
    assert len(figures) == 1 and figures[0].startswith("data:image/png;base64,")  # drawn and returned: once


def test_code_hidden_by_default_and_shown_on_request(promoted, tmp_path):
    root, run_dir = promoted
    page = (root / "pages" / "01_data.html").read_text()
    assert "secret_code_marker" not in page
    assert 'class="jp-CodeMirrorEditor' not in page  # no code cell input at all
    assert "kept 6 images" in page and "<td>0.9</td>" in page  # outputs stay
    assert "nobody needs this" not in page  # stderr dropped
    assert "injected-parameters" not in page
    shown = pages.render_notebook(run_dir / "notebooks" / "01_data.ipynb", tmp_path / "p.html", show_input=True)
    assert SECRET_CODE.split()[0] in shown.read_text()


def test_page_header_links_back_and_shows_parameters(promoted):
    root, run_dir = promoted
    page = (root / "pages" / "02_figures.html").read_text()
    assert 'href="../index.html"' in page and 'href="01_data.html"' in page
    assert "image_size" in page and run_dir.name in page
    assert "<title>02 · Figures: curves</title>" in page


def test_index_opens_the_study(promoted):
    root, run_dir = promoted
    index = (root / "index.html").read_text()
    for words in ("The question", "The data after cleaning", "Results: the models compared", "Model card",
                  "Not for diagnosis", "one laboratory", "Run record", "smoke"):
        assert words in " ".join(index.split()), words
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", index)  # metrics with their CIs
    assert "ImageNet-pretrained" in index and "ab" * 32 in index and "0" * 40 in index  # weights, data, commit
    assert "resnet18: bf16 on cpu" in index  # each model's precision: part of its recipe
    assert index.count("data:image/png;base64,") == 1  # the headline figure, inline
    assert 'href="pages/01_data.html"' in index and 'href="pages/02_figures.html"' in index
    # the report folder's index is what gets committed, without the executed notebooks: it names their folder
    assert ".ipynb" not in index and f"<code>runs/{run_dir.name}/notebooks/</code>" in index
    assert 'href="./notebooks/01_data.ipynb"' in (run_dir / "index.html").read_text()  # the run's own links them
    hrefs = [url for tag, attr, url in references(root / "index.html") if tag == "a"]
    assert not [h for h in hrefs if h.startswith("/") or h.startswith("file:")]  # relative: the folder can move


def test_every_link_resolves(promoted):
    root, run_dir = promoted
    result = check_report(root)
    assert result["ok"], result["problems"]
    assert {p["page"] for p in result["pages"]} == {"index.html", "pages/01_data.html", "pages/02_figures.html"}
    assert check_report(run_dir)["ok"]  # the run's own copy too


def test_check_report_finds_problems(promoted, tmp_path):
    import shutil

    root, _ = promoted
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    page = copy / "pages" / "01_data.html"
    page.write_text(page.read_text().replace("</main>", '<a href="../nowhere.html">x</a>'
                                             '<script src="https://cdn.example.org/x.js"></script>'
                                             '<img src="figure.png"></main>'))
    problems = "\n".join(check_report(copy)["problems"])
    assert "nowhere.html" in problems and "loads from the network" in problems and "not embedded" in problems


def test_index_without_models_or_data(tmp_path):
    run_dir = make_run(tmp_path / "run", models=False)
    (run_dir / "data" / "manifest.csv").unlink()
    index = report.write_index(run_dir, run_dir / "index.html").read_text()
    assert "No model was evaluated in this run." in index and "was not produced by this run" in index


def test_missing_report_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.html: no report here"):
        check_report(tmp_path)


def test_index_names_the_dataset_and_what_was_skipped(tmp_path):
    import pandas as pd

    run_dir = make_run(tmp_path / "run", models=False)
    record = json.loads((run_dir / "run_record.json").read_text())
    record["settings"]["dataset"] = "folder:/home/me/cells"
    fileio.write_json(run_dir / "run_record.json", record)
    manifest = pd.DataFrame({"label": ["A", "A", "B", "B", "", "", ""], "split": ["train", "test", "train", "test", "", "", ""],
                             "group": ["g1", "g1", "g2", "g3", "", "", ""],
                             "reason": [""] * 4 + ["not_an_image", "duplicate", "duplicate"],
                             "kept": [True] * 4 + [False] * 3})
    fileio.write_csv(run_dir / "data" / "manifest.csv", manifest)
    index = report.write_index(run_dir, run_dir / "index.html").read_text()
    # a folder outside the checkout and every named place keeps only its name: the index travels
    assert "Dataset <code>folder:…/cells</code>" in index and "<code>…/cells</code>" in index
    assert "/home/me" not in index
    assert "split (stratified by class and grouped" in " ".join(index.split())
    assert "into one held-out training, validation and test part" in " ".join(index.split())
    assert "4 images kept of 7 files" in index
    assert "1 (skip files that are not images)" in index and "2 (drop byte-identical copies (first kept))" in index
    assert "source groups" in index  # g1 holds two images: the grouping is shown
    assert "The BCCD smears" not in index  # the model card does not describe data this run did not use


def test_index_of_bccd_keeps_its_wording(tmp_path):
    index = report.write_index(make_run(tmp_path / "run", models=False), tmp_path / "index.html").read_text()
    assert "Dataset <code>bccd</code>" in index and "label rows of <code>labels.csv</code>" in index
    assert "1 (drop BASOPHIL (too rare to split))" in index and "source groups" not in index


def test_index_says_how_the_run_split_and_which_epoch_it_kept(tmp_path):
    import pandas as pd

    run_dir = make_run(tmp_path / "run", models=False)
    manifest = pd.read_csv(run_dir / "data" / "manifest.csv", keep_default_na=False)
    manifest["split"] = ""
    manifest["test_fold_r1"] = [0, 1, 2, 0, -1]  # three folds; the dropped basophil tested in none
    manifest["test_fold_r2"] = [1, 2, 0, 1, -1]
    fileio.write_csv(run_dir / "data" / "manifest.csv", manifest)
    record = json.loads((run_dir / "run_record.json").read_text())
    record["notebooks"][1]["settings"] = {"model": "resnet18", "train": {"keep_epoch": "last", "epochs": 30,
                                                                         "patience": 12}}
    fileio.write_json(run_dir / "run_record.json", record)
    index = " ".join(report.write_index(run_dir, run_dir / "index.html").read_text().split())
    assert "into 3 folds for stratified k-fold cross-validation, repeated 2 times with other shuffles" in index
    assert "fixed train" not in index and "held-out" not in index
    assert "every kept image is tested once per repeat, by a model that never saw it" in index
    assert "each model keeps the last epoch of a fixed 30-epoch schedule" in index and "chooses its epoch" not in index
    assert "a paired t-test over folds" in index


def test_pages_and_index_show_no_absolute_path(tmp_path):
    """A run whose notebooks saw absolute paths (output_dir, the data, warnings naming the library's files)
    renders pages and an index that show them relative to the checkout, or named by where they came from."""
    checkout = repo_root()
    report_dir = tmp_path / "report"
    run_dir = make_run(report_dir / "runs" / "20260101-000000-abcdef0")
    data = checkout / ".." / "shared" / "data" / "bccd"
    for path in (run_dir / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nb.metadata.papermill.parameters.update(output_dir=str(run_dir), data_dir=str(data))
        nb.cells[2].source += f"\noutput_dir = {str(run_dir)!r}"  # papermill's injected parameters
        nb.cells[3].outputs[0].text = f"data root: {data.resolve()}\nsaved {checkout / 'outputs' / 'x.csv'}\n"
        nb.cells[3].outputs.append(nbformat.v4.new_output(
            "error", ename="ValueError", evalue=f"{checkout / 'data' / 'images'}: bad",
            traceback=[f"File {checkout / 'src' / 'bloodlib' / 'config.py'}:1, in resolve",
                       f"ValueError: {checkout / 'data' / 'images'}: bad"]))
        nbformat.write(nb, path)
    record = json.loads((run_dir / "run_record.json").read_text())
    record["settings"].update(output_dir=str(run_dir), data_dir=str(data))
    record["overrides"] = {"data_dir": str(data)}
    record["data"]["root"] = str(data.resolve())
    fileio.write_json(run_dir / "run_record.json", record)

    report.render_run(run_dir, show_input=True)
    promote(run_dir, report_dir)
    shown = [report_dir / "index.html", *(report_dir / "pages").glob("*.html"), run_dir / "index.html"]
    found = {p.name: paths.absolute_paths(p.read_text()) for p in shown}
    assert not {name: hits for name, hits in found.items() if hits}
    index = (report_dir / "index.html").read_text()
    assert "from <code>../shared/data/bccd</code>" in index and "data_dir=<code>../shared/data/bccd</code>" in index
    page = (report_dir / "pages" / "01_data.html").read_text()
    assert "data root: ../shared/data/bccd" in page and "saved outputs/x.csv" in page
    assert "data/images: bad" in page and "src/bloodlib/config.py" in page
    assert "<code>../shared/data/bccd</code>" in page  # the parameters table
    nb = nbformat.read(run_dir / "notebooks" / "01_data.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["output_dir"] == str(run_dir)  # the executed notebook: as it ran
