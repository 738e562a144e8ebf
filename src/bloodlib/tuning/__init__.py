"""The tuning search: every architecture's recipe chosen the same way, on validation parts only.

- :mod:`~bloodlib.tuning.space`: the knobs each model may search (notebook 07 shows them);
- :mod:`~bloodlib.tuning.objective`: the fold-mean validation macro-F1 of one recipe (test parts dropped first);
- :mod:`~bloodlib.tuning.search`: Optuna studies (TPE, median pruning, resumable storage), the trials table and the
  chosen recipes (``python -m bloodlib tune MODEL``).
"""
