"""Fault injection for the tests, through raykd's one injection point (`raykd.hooks`: ``RAYKD_HOOKS`` set to this
file, as `ENABLE` does): make a trial's process die at a given step, poison a rank's weights, pause a stage.

``RAYKD_TEST_FAIL_AT_STEP="<trial id>:<step>"`` makes rank 0's process die once per study when that trial
reaches that step (a marker file in ``<study>/faults/`` remembers it fired); ``<trial id>:<step>:always``
makes it die there on every attempt (markers ``<trial id>.1``, ``.2``, ...). Several, comma-separated.
`step_hook` runs after every step; nothing is compiled into the loop. Before dying the
process sleeps `DELAY_S`, so a test can act on the marker (e.g. damage the last checkpoint) first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

ENV = "RAYKD_TEST_FAIL_AT_STEP"
DELAY_S = 2.0
ENABLE = {"RAYKD_HOOKS": str(Path(__file__).resolve())}  # merge into a study's environment to use these hooks


def step_hook(study_dir: str, trial_id: str, rank: int, model) -> Callable[[int], None] | None:
    """`raykd.hooks`' step hook: the fault and the NaN switches below, whichever are set for this trial."""
    hooks = [h for h in (fault_hook(study_dir, trial_id, rank), nan_hook(trial_id, rank, model)) if h is not None]
    if not hooks:
        return None

    def after_step(step: int) -> None:
        for hook in hooks:
            hook(step)

    return after_step


def stage_started(stage: str) -> None:
    pause(stage)


def fault_hook(study_dir: str | Path, trial_id: str, rank: int) -> Callable[[int], None] | None:
    """A hook ``(step) -> None`` that kills the process when the test switch says so; None when unset."""
    setting = os.environ.get(ENV, "")
    if not setting or rank != 0 or not any(item.startswith(f"{trial_id}:") for item in setting.split(",")):
        return None
    marker = Path(study_dir) / "faults" / trial_id

    def maybe_die(done: int) -> None:  # `done` steps done: dies as step `done - 1` (0-based) ends
        if fires(setting, trial_id, done - 1, marker):
            time.sleep(DELAY_S)
            os._exit(1)  # the process dies mid-trial, as a node loss or an OOM kill would

    return maybe_die


def fires(setting: str, trial_id: str, step: int, marker: Path) -> bool:
    """Whether the fault fires now; records each firing in a marker file."""
    wanted = {f"{trial_id}:{step}", f"{trial_id}:{step}:always"} & set(setting.split(","))
    if not wanted:
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    if wanted.pop().endswith(":always"):
        n = len(list(marker.parent.glob(f"{trial_id}.*"))) + 1
        (marker.parent / f"{trial_id}.{n}").touch()
        return True
    if marker.exists():
        return False
    marker.touch()
    return True


NAN_ENV = "RAYKD_TEST_NAN_AT_STEP"


def nan_hook(trial_id: str, rank: int, model) -> Callable[[int], None] | None:
    """``RAYKD_TEST_NAN_AT_STEP="<trial id>:<step>:<rank>"``: after that step, that rank's weights turn NaN, so its
    next loss is not finite while the other ranks' are (a divergence on one rank only, for DDP tests)."""
    setting = [item for item in os.environ.get(NAN_ENV, "").split(",") if item.startswith(f"{trial_id}:")]
    steps = {int(item.split(":")[1]) for item in setting if item.split(":")[2:] == [str(rank)]}
    if not steps:
        return None

    def poison(step: int) -> None:
        if step in steps:
            import torch

            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    return poison


PAUSE_ENV = "RAYKD_TEST_PAUSE"


def pause(stage: str) -> None:
    """``RAYKD_TEST_PAUSE="<stage>:<seconds>"``: sleep that long when `stage` starts (e.g. ``analysis``), so a test
    can kill the study while that stage is surely running, however fast it is on this machine."""
    for item in os.environ.get(PAUSE_ENV, "").split(","):
        name, _, seconds = item.partition(":")
        if name == stage and seconds:
            time.sleep(float(seconds))
