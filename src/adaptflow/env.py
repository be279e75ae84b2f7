"""Process environment for the tools: offline, no telemetry, state kept inside the project.

Called by the CLI and the flows before Prefect/MLflow/DVC are imported; values already set by
the user win (setdefault), so a real Prefect or MLflow server can be used instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure_env(root: Path | str = ".") -> None:
    root = Path(root).resolve()
    defaults = {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_SITE_CACHE_DIR": str(root / ".dvc" / "site-cache"),
        "MPLCONFIGDIR": str(root / ".cache" / "matplotlib"),
        "HF_HUB_OFFLINE": "1",  # nothing downloads at run time
        # with a tracking server: no "View run ..." lines per run, no download progress bars
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
