"""Leaderboards: a spec -> every checkpoint x task -> statistics -> CSV, Markdown, HTML, plot."""
