"""Benchmarks of the real daemon on synthetic OpenCode streams; `python -m bench` runs them (not a test)."""
