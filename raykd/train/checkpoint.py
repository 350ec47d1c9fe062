"""Trial checkpoints: the one owner of where they live, what they hold and how they are written and read.

A trial's checkpoints live in ``<checkpoints>/<trial id>/step-<step>/`` (the study folder by default;
shared storage on a cluster), independent of any one Ray Tune or Train run, so a study that is resumed,
retried or grown finds them. One checkpoint holds:

- ``student/``: config (with raykd's metadata) and ``model.safetensors``, projections included;
- ``best.safetensors``: the best-on-validation weights so far;
- ``optimizer.pt``, ``scheduler.pt`` (not in a final checkpoint: nothing resumes from it);
- ``rng.<rank>.pt``: every random stream each rank uses (torch CPU, CUDA when present);
- ``state.json``: the loop state (epoch, step, step in epoch), best value and step, final flag.

Writes go to ``.tmp-step-<step>/`` and are committed by renaming it once complete; older checkpoints
are deleted after a commit, so a kill at any moment leaves the last complete one. Loading is
weights-only (safetensors, ``torch.load(weights_only=True)``) and checks every file before anything is
applied: an unreadable checkpoint is refused with the reason, and the trial starts over.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file

from raykd.student import save_student

PREFIX = "step-"


@dataclass
class Restored:
    """What a readable checkpoint gives back (the student's weights are already loaded)."""

    state: dict[str, Any]
    best_weights: dict[str, torch.Tensor] | None
    optimizer: dict | None
    scheduler: dict | None
    rng: dict[str, Any] | None


class CheckpointStore:
    """The checkpoints of one trial."""

    def __init__(self, root: str | Path, trial_id: str) -> None:
        self.folder = Path(root) / trial_id

    def latest(self) -> Path | None:
        """The newest committed checkpoint, or None."""
        found = sorted(self.folder.glob(f"{PREFIX}*"), key=lambda p: int(p.name[len(PREFIX):]))
        return found[-1] if found else None

    def save(self, step: int, write: Callable[[Path], None], *, rank: int = 0, world: int = 1,
             barrier: Callable[[], None] = lambda: None) -> Path:
        """Write a checkpoint at `step`: every rank calls this; `write(folder)` writes that rank's part.

        Rank 0 prepares the staging folder and commits it after the others have written (`barrier` is
        the collective barrier when `world` > 1).
        """
        staging = self.folder / f".tmp-{PREFIX}{step}"
        final = self.folder / f"{PREFIX}{step}"
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        if world > 1:
            barrier()
        write(staging)
        if world > 1:
            barrier()
        if rank == 0:
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            for old in self.folder.glob(f"{PREFIX}*"):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        if world > 1:
            barrier()
        return final

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """Every random stream a trial's process uses (data order comes from seeded samplers, not from here)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_rank(folder: Path, rank: int) -> None:
    """A non-zero rank's part of a checkpoint: its random streams."""
    torch.save(rng_state(), folder / f"rng.{rank}.pt")


def write_checkpoint(folder: Path, *, student, best_weights, optimizer, scheduler, state: dict[str, Any],
                     rank: int = 0) -> None:
    """Rank 0's part of a checkpoint (see the module docstring)."""
    save_student(student, folder / "student")
    if best_weights is not None:
        save_file({k: v.contiguous() for k, v in best_weights.items()}, str(folder / "best.safetensors"))
    if not state.get("final"):
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        write_rank(folder, rank)
    (folder / "state.json").write_text(json.dumps(state))


def read_checkpoint(folder: Path, student, *, rank: int = 0) -> Restored | str:
    """Load `folder` into `student` and return the rest; or the reason it is unreadable (also warned),
    in which case nothing was applied."""
    try:
        load_file(str(folder / "student" / "model.safetensors"))  # readable and complete
        state = json.loads((folder / "state.json").read_text())
        optimizer = scheduler = rng = None
        if not state.get("final"):
            optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
            scheduler = torch.load(folder / "scheduler.pt", weights_only=True)
            rng_file = folder / f"rng.{rank}.pt"
            rng = torch.load(rng_file, weights_only=True) if rng_file.is_file() else None
        best = None
        if (folder / "best.safetensors").is_file():
            loaded = load_file(str(folder / "best.safetensors"))
            best = {k: loaded[k] for k in student.state_dict()}
    except Exception as error:  # noqa: BLE001 - any unreadable file means the same: do not use this checkpoint
        reason = f"checkpoint {folder.name} is unreadable ({type(error).__name__}: {str(error)[:300]}); starting over"
        warnings.warn(reason, stacklevel=2)
        return reason
    load_model(student, str(folder / "student" / "model.safetensors"), strict=True)
    return Restored(state=state, best_weights=best, optimizer=optimizer, scheduler=scheduler, rng=rng)
