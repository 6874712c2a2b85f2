"""Helpers for the slide and real-browser tests: headless Chromium, Voilà, small notebooks."""
