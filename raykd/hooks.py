"""The one injection point for code raykd does not ship (the tests' fault injection: tests/faults.py).

``RAYKD_HOOKS`` names a Python file (or an importable module) whose optional functions raykd calls:
- ``step_hook(study_dir, trial_id, rank, model)``: once per trial and rank; returns None or a callable that runs
  after every training step with the number of steps done;
- ``stage_started(stage)``: when a study stage starts (``"teacher fine-tuning"``, ``"analysis"``).
Unset, nothing is imported and nothing runs. It reaches a cluster's workers with raykd's other switches
(`raykd.cluster.forwarded_env`); the file must exist on their machines.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from functools import cache
from types import ModuleType

ENV = "RAYKD_HOOKS"


@cache
def _plugin(name: str) -> ModuleType:
    if not name.endswith(".py"):
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location("raykd_hooks_plugin", name)
    if spec is None or spec.loader is None or not os.path.isfile(name):
        raise FileNotFoundError(f"{ENV}={name}: no such Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(name: str):
    setting = os.environ.get(ENV)
    return getattr(_plugin(setting), name, None) if setting else None


def step_hook(study_dir: str, trial_id: str, rank: int, model) -> Callable[[int], None] | None:
    make = _function("step_hook")
    return make(study_dir, trial_id, rank, model) if make else None


def stage_started(stage: str) -> None:
    started = _function("stage_started")
    if started:
        started(stage)
