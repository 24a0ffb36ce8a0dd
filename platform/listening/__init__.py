"""Listening studies: the human evaluation of section 5.3 / table 5, runnable on any set of trained models.

- :mod:`~arfm.listening.spec` — what a study asks (task, criteria in the paper's wording, sizes, screening);
- :mod:`~arfm.listening.create` — a study from MLflow runs: their logged clips, or clips generated through the
  evaluation job's own generation, written to the media folder under opaque names;
- :mod:`~arfm.listening.store` — the SQLAlchemy store (SQLite file by default, PostgreSQL by URL): studies,
  blinded clips, raters and their seeded item orders, plays and judgments, each submission one transaction;
- :mod:`~arfm.listening.app` — the FastAPI app raters use (the page under ``static/``) and its admin routes;
- :mod:`~arfm.listening.results` — screening by the anchor items, n / mean / 95% t interval per system and
  criterion, table 5's counterpart as markdown and a plot, the raw judgments as CSV, logged to MLflow.
"""
