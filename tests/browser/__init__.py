"""Helpers for the runner, report and browser tests: a tiny synthetic study of numbered notebooks
(``study``) and a reader's check of a rendered report, static or in headless Chromium (``check``)."""
