"""Shared fixtures: the real BCCD data from ../shared/data/bccd (or $BLOODLIB_DATA), and an isolated cache."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests draw figures without a display

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bccd"


def data_root() -> Path:
    return Path(os.environ.get("BLOODLIB_DATA") or DEFAULT_DATA)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """``config.cache_dir()`` is a session folder: decoded images are shared by the session's tests (and the
    notebooks they start), never written into the checkout's ``data/``."""
    from bloodlib import config

    folder = tmp_path_factory.mktemp("cache")
    # The file index (and the near-duplicate groups stored beside it) alone outlive the session: both are keyed by
    # the files' (path, size, mtime), so a file that changes is read again, and the next session does not hash the
    # 17,093 PBC files or fingerprint dataset2-master's 12,515 anew (outputs/ is ignored by git).
    index = REPO / "outputs" / "unit" / "index"
    index.mkdir(parents=True, exist_ok=True)
    (folder / "index").symlink_to(index, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(config.ENV_CACHE, str(folder))
        yield folder


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    """The real data; tests that need it skip, with the reason, where it is absent."""
    root = data_root()
    if not (root / "dataset-master" / "labels.csv").is_file():
        pytest.skip(f"real BCCD data not found at {root} (set BLOODLIB_DATA or provide ../shared/data/bccd)")
    return root


@pytest.fixture(scope="session")
def bccd_manifest(bccd_root):
    """The seed's cleaning on the real data, computed once for the session."""
    from bloodlib.data import cleaning, datasets

    return datasets.clean_bccd(bccd_root, cleaning.CleaningParams())


def make_bccd(root: Path, labels: dict[int, str], boxes: dict[int, list[tuple]] | None = None,
              size=(64, 48)) -> Path:
    """A tiny data folder in the Kaggle layout: one JPEG per label id, labels.csv, optional WBC boxes."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    images = root / "dataset-master" / "JPEGImages"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id in labels:
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"BloodImage_{image_id:05d}.jpg", quality=90)
    pd.DataFrame({"Image": list(labels), "Category": list(labels.values())}).to_csv(
        root / "dataset-master" / "labels.csv")  # the Kaggle file's shape: an unnamed index column first
    if boxes is not None:
        annotations = root / "BCCD_Dataset" / "BCCD" / "Annotations"
        annotations.mkdir(parents=True, exist_ok=True)
        for image_id, image_boxes in boxes.items():
            objects = "".join(
                f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for name, x0, y0, x1, y1 in image_boxes)
            (annotations / f"BloodImage_{image_id:05d}.xml").write_text(
                f"<annotation><filename>BloodImage_{image_id:05d}.jpg</filename>{objects}</annotation>")
    return root


@pytest.fixture(scope="session")
def smears() -> dict[str, list[Path]]:
    """Six real dataset-master smears per class (labels from labels.csv)."""
    import pandas as pd
    from bloodlib.data.cleaning import CLASSES

    master = data_root() / "dataset-master"
    if not (master / "labels.csv").is_file():
        pytest.skip(f"dataset-master not found under {data_root()}")
    labels = pd.read_csv(master / "labels.csv", dtype=str, keep_default_na=False)
    chosen = {}
    for label in CLASSES:
        ids = labels.loc[labels["Category"].str.strip() == label, "Image"].astype(int)
        paths = [master / "JPEGImages" / f"BloodImage_{i:05d}.jpg" for i in ids]
        chosen[label] = [p for p in paths if p.is_file()][:6]
    return chosen


def augment(smear: Path, copies: int, rng) -> list:
    """Copies of a smear as Keras made dataset2-master: rotated, shifted (black fill), mirrored."""
    from PIL import Image

    image = Image.open(smear).convert("RGB").resize((320, 240))
    out = []
    for copy in range(copies):
        moved = image.rotate(rng.uniform(-20, 20), translate=tuple(int(t) for t in rng.integers(-25, 26, 2)))
        if copy % 2:
            moved = moved.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if copy % 3 == 0:
            moved = moved.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        out.append(moved)
    return out


def check_figure(fig) -> None:
    """What a reader needs from a figure of the study.

    - A title: the figure's suptitle, or the axes title of a figure that shows a single axes.
    - Every axes that plots data (lines, bars, points, heatmap cells) has an x and a y label: its own, or
      that of an axes it shares the axis with (panels with ``sharey`` are labelled once, at the left).
    - Axes that show pictures (``imshow``: sample grids, mean images, Grad-CAM overlays) have no axes in a
      reader's sense and need no axis labels; the figure's title says what they show. Empty axes (the
      unused cells of a grid) are ignored.
    - Every text drawn in an axes (heatmap cells, counts on bars, point annotations) lies inside that axes, as
      drawn: a text outside it belongs to no cell a reader can see, or sits on a neighbouring panel.
    """
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure), type(fig)
    shown = [ax for ax in fig.axes if ax.has_data()]
    assert shown, "the figure shows nothing"
    title = fig.get_suptitle() or (shown[0].get_title() if len(shown) == 1 else "")
    assert title.strip(), "the figure has no title"
    for ax in shown:
        if ax.get_images():
            continue
        for axis, shared in (("x", ax.get_shared_x_axes()), ("y", ax.get_shared_y_axes())):
            labels = [getattr(other, f"get_{axis}label")() for other in shared.get_siblings(ax)]
            assert any(label.strip() for label in labels), f"{title!r}, axes {ax.get_title()!r}: no {axis} label"
    renderer = _drawn(fig)
    for ax in fig.axes:
        inside = ax.get_window_extent(renderer).padded(1)  # a pixel of rounding
        for text in ax.texts:
            if text.get_visible() and text.get_text().strip():
                box = text.get_window_extent(renderer)
                assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), \
                    f"{title!r}, axes {ax.get_title()!r}: text {text.get_text()!r} lies outside its axes"


def tick_labels(ax, axis: str) -> list[str]:
    """The tick labels a reader sees on ``axis`` ("x" or "y") of ``ax``, in order: visible, at a tick inside the
    axis' view limits (a shared axis can carry ticks another panel set)."""
    _drawn(ax.figure)
    which = getattr(ax, f"{axis}axis")
    low, high = sorted(which.get_view_interval())
    locations = which.get_majorticklocs()
    return [tick.label1.get_text() for location, tick in zip(locations, which.get_major_ticks(len(locations)))
            if low <= location <= high and tick.label1.get_visible()]


def _drawn(fig):
    """Draw ``fig`` with Agg (texts and tick labels get their final place) and return the renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


class LocalServer:
    """An HTTP server on 127.0.0.1 serving bytes by name (no test reaches the internet); ``hits`` lists every
    name asked for, in order."""

    def __init__(self, files: dict[str, bytes], truncated: dict[str, bytes] | None = None):
        """``truncated``: names that announce the whole body of their bytes but send half of it."""
        import http.server
        import threading

        hits: list[str] = []
        truncated = truncated or {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/")
                hits.append(name)
                body = truncated.get(name, files.get(name))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in truncated else body)
                if name in truncated:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.hits = hits
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    """``serve(files, truncated=None, kind=LocalServer)``: a :class:`LocalServer`, closed after the test."""
    servers = []

    def start(files: dict[str, bytes], truncated: dict[str, bytes] | None = None, kind=LocalServer):
        servers.append(kind(files, truncated))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive, in memory, holding ``members`` (name -> bytes)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
