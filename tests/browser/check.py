"""Reading a rendered report as a reader would: a static link check and a headless-Chromium check.

:func:`check_report` needs no browser: every page self-contained and every relative link resolving to a
file inside the report. :func:`check_in_browser` opens ``index.html`` and every page in Debian's
chromium through chromium-driver and selenium (``requirements-test.txt``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


# ------------------------------------------------------------------------------------------- links
class _Refs(HTMLParser):
    """Every URL a page references: (tag, attribute, url)."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is not None and (name in ("src", "href") or (tag == "object" and name == "data")):
                self.refs.append((tag, name, value))


def references(page: str | os.PathLike) -> list[tuple[str, str, str]]:
    parser = _Refs()
    parser.feed(Path(page).read_text(encoding="utf-8"))
    return parser.refs


def resolve_link(page: Path, url: str) -> tuple[str, Path | None]:
    """What a URL on ``page`` points at: ("external"|"inline"|"anchor"|"file", local path or None)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "ftp") or url.startswith("//"):
        return "external", None
    if parts.scheme in ("data", "mailto", "javascript"):
        return "inline", None
    if parts.scheme == "file":
        return "file", Path(unquote(parts.path))
    if not parts.path:
        return "anchor", None
    return "file", (page.parent / unquote(parts.path)).resolve()


def _in_report(target: Path | None, root: Path) -> bool:
    return target is not None and target.is_file() and target.is_relative_to(root)


def report_pages(report_dir: str | os.PathLike) -> list[Path]:
    """The pages a reader can reach: ``index.html`` and ``pages/*.html``."""
    report_dir = Path(report_dir)
    index = report_dir / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no report here (run `python -m bloodlib run` first)")
    return [index, *sorted((report_dir / "pages").glob("*.html"))]


def check_report(report_dir: str | os.PathLike) -> dict:
    """Without a browser: every page self-contained (images inline, no script, style or image from the
    network) and every relative link resolving to a file inside the report folder."""
    root = Path(report_dir).resolve()
    pages, problems = [], []
    for page in report_pages(root):
        rel = page.relative_to(root).as_posix()
        images = broken = 0
        for tag, attr, url in references(page):
            kind, target = resolve_link(page, url)
            if tag == "img":
                images += 1
                if kind != "inline":
                    problems.append(f"{rel}: <img> not embedded: {url[:80]}")
            elif kind == "external" and tag != "a":
                problems.append(f"{rel}: <{tag} {attr}> loads from the network: {url[:80]}")
            if kind == "file" and not _in_report(target, root):
                broken += 1
                problems.append(f"{rel}: link to a missing file or outside the report: {url}")
        pages.append({"page": rel, "images": images, "broken_links": broken})
    return {"report": str(root), "pages": pages, "problems": problems, "ok": not problems}


# ----------------------------------------------------------------------------------------- browser
_PAGE_STATE = """
const imgs = Array.from(document.images).map(i => ({src: i.getAttribute('src').slice(0, 60), complete: i.complete,
                                                 width: i.naturalWidth}));
const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));
const remote = performance.getEntriesByType('resource').map(r => r.name).filter(n => /^https?:/.test(n));
return {images: imgs, links: links, remote: remote, title: document.title,
        height: document.documentElement.scrollHeight};
"""


def missing_tools(chromium: str = CHROMIUM, driver: str = CHROMEDRIVER) -> list[str]:
    """What the browser check lacks here, each with how to get it; empty when it can run."""
    missing = []
    if absent := [tool for tool in (chromium, driver) if not Path(tool).is_file()]:
        missing.append(f"{', '.join(absent)} (apt-get install chromium chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip install -r requirements-test.txt)")
    return missing


def _browser(chromium: str, driver: str, width: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},1000", "--allow-file-access-from-files"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def published_run(report_dir: Path) -> Path | None:
    """The run folder that ``report_dir`` publishes (from ``published.json``)."""
    try:
        run = json.loads((Path(report_dir) / "published.json").read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError):
        return None
    return (Path(report_dir) / run) if run and (Path(report_dir) / run).is_dir() else None


def check_in_browser(report_dir: str | os.PathLike, *, screenshot: str | os.PathLike | None = None,
                     chromium: str = CHROMIUM, driver: str = CHROMEDRIVER, width: int = 1280,
                     timeout: float = 60) -> dict:
    """Open ``index.html`` and every page in headless Chromium as a reader would: every ``<img>`` decoded
    (naturalWidth > 0), every link resolving to a file in the report, nothing fetched from the network,
    no console error. A full-page screenshot of the index goes to ``screenshot`` (default: the published
    run folder's ``index.png``, else ``report_dir/index.png``)."""
    root = Path(report_dir).resolve()
    if missing := missing_tools(chromium, driver):
        raise FileNotFoundError("not found: " + "; ".join(missing))
    pages = report_pages(root)
    shot = Path(screenshot) if screenshot else (published_run(root) or root) / "index.png"
    results, problems = [], []
    browser = _browser(chromium, driver, width)
    browser.set_page_load_timeout(timeout)
    try:
        for page in pages:
            rel = page.relative_to(root).as_posix()
            browser.get(page.as_uri())
            state = browser.execute_script(_PAGE_STATE)
            bad_images = [i["src"] for i in state["images"] if not i["complete"] or i["width"] <= 0]
            bad_links = [url for url in state["links"]
                         if (link := resolve_link(page, url))[0] == "file" and not _in_report(link[1], root)]
            errors = [e["message"] for e in browser.get_log("browser")]
            problems += [f"{rel}: image not decoded: {s}" for s in bad_images]
            problems += [f"{rel}: link does not resolve to a file in the report: {u}" for u in bad_links]
            problems += [f"{rel}: fetched from the network: {u}" for u in state["remote"]]
            problems += [f"{rel}: console error: {e}" for e in errors]
            results.append({"page": rel, "title": state["title"], "images": len(state["images"]),
                            "bad_images": bad_images, "links": len(state["links"]), "bad_links": bad_links,
                            "remote": state["remote"], "console_errors": errors})
            if page == pages[0]:  # the whole index, as tall as it is
                browser.set_window_size(width, min(max(state["height"], 600), 16000))
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(browser.get_screenshot_as_png())
                browser.set_window_size(width, 1000)
    finally:
        browser.quit()
    return {"report": str(root), "pages": results, "screenshot": str(shot), "problems": problems,
            "ok": not problems, "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def summary(result: dict) -> str:
    """A few lines for the terminal: pages, images, links, problems."""
    lines = [f"{p['page']}: {p['images']} images, {p.get('links', '-')} links" for p in result["pages"]]
    if result.get("screenshot"):
        lines.append(f"screenshot: {result['screenshot']}")
    lines += [f"PROBLEM {p}" for p in result["problems"]] or ["ok: every image decoded, every link resolves"]
    return "\n".join(lines)
