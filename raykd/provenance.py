"""Provenance of a study's numbers: the versions of what computed them and the code's git commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import raykd


def versions() -> dict[str, str]:
    """``version.<package>`` for raykd and its main dependencies, and ``git.commit`` (or "unknown")."""
    import ray
    import torch
    import transformers

    import mlflow

    out = {
        "version.raykd": raykd.__version__,
        "version.torch": torch.__version__,
        "version.ray": ray.__version__,
        "version.transformers": transformers.__version__,
        "version.mlflow": mlflow.__version__,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        out["git.commit"] = commit or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["git.commit"] = "unknown"
    return out
