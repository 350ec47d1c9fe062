"""What the end-to-end tests share: the entry scripts, the smoke config, and one smoke teacher per test session.

Most end-to-end tests are about the sweep, the analysis or a fault, not about fine-tuning the teacher. They start
from the session's smoke teacher (`seed_teacher` copies its folder into the new study, where the study's teacher
stage finds it complete and goes straight to the cache, exactly as a resumed study does). The tests about the
teacher stage itself (two fresh studies give identical teachers, a kill during fine-tuning, a weak teacher) build
their own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "studies" / "strategy_grid.py"
ANALYZE = ROOT / "studies" / "analyze.py"
SMOKE = ROOT / "studies" / "configs" / "smoke.yaml"


def build_smoke_teacher(folder: Path) -> Path:
    """The smoke config's teacher stage, run in this process (no cache: each study builds its own)."""
    from raykd.teacher_folder import TeacherFolder
    from raykd.train.teacher import prepare_teacher
    from raykd.validate import load_study_config

    config = load_study_config(SMOKE)
    target = TeacherFolder.of(folder, config)
    prepare_teacher(config, str(target.path))
    assert target.complete
    return target.path


def seed_teacher(teacher: Path, out: Path, name: str = "smoke", overrides: list[str] | tuple = ()) -> None:
    """Put the session's smoke teacher where the study `out/name` (with these `--set` overrides) looks for its
    teacher; a study whose overrides change the teacher gets none (it fine-tunes its own)."""
    from raykd.teacher_folder import TeacherFolder
    from raykd.validate import load_study_config

    config = load_study_config(SMOKE, [*overrides, f"name={name}"])
    target = TeacherFolder.of(out / name, config)
    if target.path.name == teacher.name and not target.path.exists():
        shutil.copytree(teacher, target.path, ignore=shutil.ignore_patterns("cache"))


def set_items(args: tuple | list) -> list[str]:
    """The `--set` overrides among command-line arguments."""
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"]
