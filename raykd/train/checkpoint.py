"""Trial checkpoints: the one owner of where they live, what they hold and how they are written and read.

A trial's checkpoints live in ``<checkpoints>/<trial id>/step-<step>/`` (the study folder by default;
shared storage on a cluster), independent of any one Ray Tune or Train run, so a study that is resumed,
retried or grown finds them. One checkpoint holds:

- ``student/``: config (with raykd's metadata) and ``model.safetensors``, projections included;
- ``best.safetensors``: the best-on-validation weights so far;
- ``optimizer.pt``, ``scheduler.pt`` (not in a final checkpoint: nothing resumes from it);
- ``rng.<rank>.pt``: every random stream each rank uses (torch CPU, CUDA when present);
- ``state.json``: the loop state (epoch, step, step in epoch), best value and step, final flag.

Writes are committed as a whole (a rename on POSIX storage, a ``COMPLETE`` marker written last on remote storage
such as S3 or GCS); older checkpoints are deleted after a commit, so a kill at any moment leaves the last
complete one. Remote storage that stops answering (a restarting S3 server) is retried with backoff for up to
``RAYKD_STORAGE_RETRY_S`` seconds (default 300; the S3 client alone gives up after ~6 s), then the trial fails with
the storage's error and is retried from its last checkpoint like any failed trial. Loading is
weights-only (safetensors, ``torch.load(weights_only=True)``) and checks every file before anything is
applied: an unreadable checkpoint is refused with the reason, and the trial starts over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, load_model, save_file

from raykd.student import save_student

PREFIX = "step-"
COMMITTED = "COMPLETE"  # written last: a checkpoint without it is not one
T = TypeVar("T")


@dataclass
class Restored:
    """What a readable checkpoint gives back (the student's weights are already loaded)."""

    state: dict[str, Any]
    best_weights: dict[str, torch.Tensor] | None
    optimizer: dict | None
    scheduler: dict | None
    rng: dict[str, Any] | None


class CheckpointStore:
    """The checkpoints of one trial, under a local (or shared POSIX) folder or a remote storage URI that pyarrow
    understands (``s3://``, ``gs://``, ``file://`` ...).

    POSIX: each checkpoint is staged in ``.tmp-step-<n>/`` and committed by a rename. Remote: each rank writes its
    part locally and uploads it into ``step-<n>/``; rank 0 commits by writing ``COMPLETE`` last. Either way a
    reader takes the newest committed step and older ones are deleted after a commit.
    """

    def __init__(self, root: str | Path, trial_id: str, filesystem=None) -> None:
        from pyarrow import fs

        root = str(root)
        if filesystem is not None:  # an explicit pyarrow file system (tests; exotic storage)
            self.fs, base = filesystem, root
        elif "://" in root:
            self.fs, base = fs.FileSystem.from_uri(root)
        else:
            self.fs, base = fs.LocalFileSystem(), root
        self.remote = not isinstance(self.fs, fs.LocalFileSystem)
        self.path = f"{base.rstrip('/')}/{trial_id}"
        self.folder = Path(self.path)  # meaningful for local storage
        self.retry_s = float(os.environ.get("RAYKD_STORAGE_RETRY_S", "300"))

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, retried with backoff (1, 2, 4 ... 30 s) for up to `retry_s` while remote storage does not answer."""
        if not self.remote:
            return call()
        deadline, wait = time.monotonic() + self.retry_s, 1.0
        while True:
            try:
                return call()
            except FileNotFoundError:
                raise
            except OSError as error:
                if time.monotonic() + wait > deadline:
                    message = f"checkpoint storage {self.path!r}: {what} failed for {self.retry_s:g} s: {error}"
                    raise OSError(message) from error
                warnings.warn(f"checkpoint storage: {what} failed ({error}); retrying in {wait:g} s", stacklevel=3)
                time.sleep(wait)
                wait = min(2 * wait, 30.0)

    def _steps(self) -> list[tuple[int, str]]:
        return self._retry("listing checkpoints", self._list_steps)

    def _list_steps(self) -> list[tuple[int, str]]:
        from pyarrow import fs

        try:
            entries = self.fs.get_file_info(fs.FileSelector(self.path, allow_not_found=True))
        except FileNotFoundError:
            return []
        steps = []
        for entry in entries:
            name = entry.base_name
            if (
                entry.type == fs.FileType.Directory
                and name.startswith(PREFIX)
                and name[len(PREFIX) :].isdigit()
                and self.fs.get_file_info(f"{entry.path}/{COMMITTED}").type == fs.FileType.File
            ):
                steps.append((int(name[len(PREFIX) :]), entry.path))
        return sorted(steps)

    def latest(self) -> Path | str | None:
        """The newest committed checkpoint (a local folder, or a path in the remote storage), or None."""
        steps = self._steps()
        if not steps:
            return None
        return Path(steps[-1][1]) if not self.remote else steps[-1][1]

    @contextlib.contextmanager
    def open(self, checkpoint: Path | str) -> Iterator[Path]:
        """A local folder with the checkpoint's files (the folder itself, or a downloaded copy)."""
        if not self.remote:
            yield Path(checkpoint)
            return
        from pyarrow import fs

        with tempfile.TemporaryDirectory(prefix="raykd-ckpt-") as local:
            self._retry("download", lambda: fs.copy_files(str(checkpoint), local, source_filesystem=self.fs))
            yield Path(local)

    def save(
        self,
        step: int,
        write: Callable[[Path], None],
        *,
        rank: int = 0,
        world: int = 1,
        barrier: Callable[[], None] = lambda: None,
    ) -> str:
        """Write a checkpoint at `step`: every rank calls this; `write(folder)` writes that rank's part.

        Rank 0 commits after the others have written (`barrier` is the collective barrier when `world` > 1).
        """
        final = f"{self.path}/{PREFIX}{step}"
        if self.remote:
            self._upload(final, write, rank, world, barrier)
        else:
            self._stage_and_rename(step, final, write, rank, world, barrier)
        if rank == 0:
            for _, older in self._steps():
                if older != final:
                    self._retry("deleting an older checkpoint", lambda older=older: self.fs.delete_dir(older))
        if world > 1:
            barrier()
        return final

    def _stage_and_rename(self, step, final, write, rank, world, barrier) -> None:
        staging = self.folder / f".tmp-{PREFIX}{step}"
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        if world > 1:
            barrier()
        write(staging)
        if world > 1:
            barrier()
        if rank == 0:
            (staging / COMMITTED).touch()
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)

    def _upload(self, final, write, rank, world, barrier) -> None:

        def commit() -> None:
            with self.fs.open_output_stream(f"{final}/{COMMITTED}") as marker:
                marker.write(b"")

        if rank == 0:
            self._retry("clearing the step's folder", lambda: self.fs.delete_dir_contents(final, missing_dir_ok=True))
            self._retry("creating the step's folder", lambda: self.fs.create_dir(final))
        if world > 1:
            barrier()
        with tempfile.TemporaryDirectory(prefix="raykd-ckpt-") as local:
            write(Path(local))
            self._retry("upload", lambda: self._put(Path(local), final))
        if world > 1:
            barrier()
        if rank == 0:
            self._retry("commit", commit)

    def _put(self, local: Path, final: str) -> None:
        """Upload `local`'s files into `final`, then check that every one arrived whole. Each stream is closed
        explicitly, so a failed upload raises (pyarrow's ``copy_files`` drops the error of an upload cut off
        mid-way: a checkpoint then committed without its weights was seen with S3 restarting mid-upload)."""
        from pyarrow import fs

        files = {p.relative_to(local).as_posix(): p for p in local.rglob("*") if p.is_file()}
        for name, path in files.items():
            with path.open("rb") as source, self.fs.open_output_stream(f"{final}/{name}") as sink:
                shutil.copyfileobj(source, sink, 8 << 20)
        landed = {
            info.path.removeprefix(f"{final}/"): info.size
            for info in self.fs.get_file_info(fs.FileSelector(final, recursive=True, allow_not_found=True))
            if info.type == fs.FileType.File
        }
        short = sorted(n for n, p in files.items() if landed.get(n) != p.stat().st_size)
        if short:
            raise OSError(f"upload incomplete: {', '.join(short)} missing or truncated in {final}")

    def clear(self) -> None:
        self._retry("clearing", lambda: self.fs.delete_dir_contents(self.path, missing_dir_ok=True))


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


def write_checkpoint(
    folder: Path, *, student, best_weights, optimizer, scheduler, state: dict[str, Any], rank: int = 0
) -> None:
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
            _check_optimizer_shapes(optimizer, student)
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


def _check_optimizer_shapes(optimizer: dict[str, Any], student) -> None:
    """Raise when the saved optimizer state belongs to other parameter shapes (e.g. a checkpoint of a student that
    trained every embedding row, resumed by one that trains only the rows in use: `raykd.train.vocab`); loading it
    would only fail at the next step."""
    shapes = [tuple(p.shape) for p in student.parameters() if p.requires_grad]
    for index, entry in optimizer.get("state", {}).items():
        expected = shapes[int(index)] if int(index) < len(shapes) else "no such parameter"
        for name in ("exp_avg", "exp_avg_sq"):
            if name in entry and tuple(entry[name].shape) != expected:
                shape = tuple(entry[name].shape)
                raise ValueError(
                    f"optimizer state {name} of parameter {index} has shape {shape}, the student's {expected}"
                )
