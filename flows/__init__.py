"""Prefect flows: one file per stage flow, pipeline.py chains them. Only flows/ imports Prefect."""

from adaptflow.env import configure_env

configure_env()  # must precede the first `import prefect` (PREFECT_HOME, analytics off)
