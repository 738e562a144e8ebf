"""Several benchmarks/quality.py recipes at once, each in its own process, then one table of the results.

On a GPU one small-image run keeps the card mostly idle (each step is a few milliseconds of kernel launches
from Python), so running recipes side by side multiplies what a lease of the card measures. Each line of
JOBS holds one quality.py command line (``#`` starts a comment). The image caches the recipes need are
built first, one process per cache, so that runs do not decode the same images at once; a run starts as
soon as its own cache is ready. Runs still
going at ``--deadline`` seconds are stopped and listed as such; every finished run has appended its JSON
line to ``--log``.

    python benchmarks/sweep.py benchmarks/gpu_recipes.txt --jobs 12 --deadline 420
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import quality  # noqa: E402  (a sibling script, not a package)

SUMMARY = ["model", "dataset", "mode", "size", "epochs", "folds", "repeats", "batch_size", "fold_mean_macro_f1",
           "pooled_macro_f1", "pooled_balanced_accuracy", "pooled_accuracy", "validation_accuracy",
           "test_simple_accuracy", "seconds"]


def read_jobs(path: Path) -> list[list[str]]:
    jobs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = shlex.split(line, comments=True)
        if words:
            try:
                quality.parser().parse_args(words)
            except SystemExit:
                raise SystemExit(f"{path}:{number}: not a quality.py command line: {line!r}") from None
            jobs.append(words)
    if not jobs:
        raise SystemExit(f"{path} holds no job")
    return jobs


def cache_key(words: list[str]) -> tuple:
    settings = quality.settings_for(quality.parser().parse_args(words))
    return settings.dataset, settings.mode, settings.image_size


def start_caches(jobs: list[list[str]], keys: list[tuple], extra: list[str]) -> dict[tuple, subprocess.Popen]:
    """One ``quality.py --prepare-only`` per distinct (dataset, mode, size), all at once."""
    by_key = dict(zip(keys, jobs))  # any run of a key builds its cache
    return {key: subprocess.Popen([sys.executable, str(HERE / "quality.py"), *words, *extra, "--prepare-only"])
            for key, words in by_key.items()}


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=Path, help="a file of quality.py command lines")
    parser.add_argument("--jobs", dest="parallel", type=int, default=4, help="runs at once")
    parser.add_argument("--deadline", type=float, default=None, help="seconds after which running jobs are stopped")
    parser.add_argument("--log", type=Path, default=Path("outputs/quality/runs.jsonl"))
    parser.add_argument("--logs", type=Path, default=Path("outputs/quality/logs"), help="one output file per run")
    args = parser.parse_args(argv)
    jobs = read_jobs(args.jobs)
    extra = ["--log", str(args.log)]
    started = time.perf_counter()
    keys = [cache_key(words) for words in jobs]
    caches = start_caches(jobs, keys, extra)  # a run starts once its own cache is built
    args.logs.mkdir(parents=True, exist_ok=True)
    waiting, running, status = list(enumerate(jobs)), {}, {}
    while waiting or running:
        for k, words in list(waiting):
            cache = caches[keys[k]]
            if cache.poll() is not None and cache.returncode != 0:
                waiting.remove((k, words))
                status[k] = f"failed: preparing its data exited with {cache.returncode}"
                print(f"job {k}: {status[k]}: {shlex.join(words)}", flush=True)
        ready = [(k, words) for k, words in waiting if caches[keys[k]].poll() == 0]
        while ready and len(running) < args.parallel:
            k, words = ready.pop(0)
            waiting.remove((k, words))
            out = open(args.logs / f"{k:02d}.log", "w")
            running[k] = (subprocess.Popen([sys.executable, str(HERE / "quality.py"), *words, *extra],
                                           stdout=out, stderr=subprocess.STDOUT), out, time.perf_counter())
        time.sleep(1)
        for k, (proc, out, t0) in list(running.items()):
            late = args.deadline is not None and time.perf_counter() - started > args.deadline
            if proc.poll() is None and late:
                proc.kill()
                proc.wait()
                status[k] = f"stopped at the deadline after {time.perf_counter() - t0:.0f} s"
            elif proc.poll() is not None:
                status[k] = "done" if proc.returncode == 0 else f"failed ({proc.returncode}), see {out.name}"
            else:
                continue
            out.close()
            del running[k]
            print(f"job {k}: {status[k]}: {shlex.join(jobs[k])}", flush=True)
        if args.deadline is not None and time.perf_counter() - started > args.deadline:
            for k, words in waiting:
                status[k] = "not started (deadline)"
            waiting = []
            for cache in caches.values():
                if cache.poll() is None:
                    cache.kill()
    names = {quality.name_of(quality.parser().parse_args(words)): k for k, words in enumerate(jobs)}
    results = [json.loads(line) for line in args.log.read_text().splitlines()] if args.log.is_file() else []
    table = pd.DataFrame([r for r in results if r["name"] in names])
    if not table.empty:
        table = table.drop_duplicates("name", keep="last")
        print(table[[c for c in SUMMARY if c in table]].round(3).to_string(index=False))
    print(f"sweep: {sum(s == 'done' for s in status.values())} of {len(jobs)} runs done in "
          f"{time.perf_counter() - started:.0f} s")
    return table


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
