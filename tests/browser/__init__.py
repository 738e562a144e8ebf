"""Helpers for the runner, report and browser tests: a tiny synthetic study of numbered notebooks."""
