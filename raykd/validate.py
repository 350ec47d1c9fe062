"""Preflight: everything about a study config that the schema (`raykd.config`) cannot check alone.

`validate(config)` checks every registry-backed name (task type and metric, built-in corpus, packaged
model, model family, strategies and their options, losses) and every shape the registries define
(student depths against the teacher's, what each strategy's registration needs), then the files the
study will read. The entry scripts call it before Ray starts, so bad input costs nothing: one
`ConfigError` naming the field and what is allowed.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

from raykd.config import ConfigError, StudyConfig, load_config, parse_config
from raykd.corpora import BUILTIN_DATASETS
from raykd.strategies import STRATEGIES, strategy_problem
from raykd.trial import student_depths


def load_study_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read, override, parse and validate a study config (the entry scripts' one call)."""
    return validate(load_config(path, overrides), source=str(path))


def parse_study_config(data: dict[str, Any], *, source: str = "config") -> StudyConfig:
    return validate(parse_config(data, source=source), source=source)


def validate(config: StudyConfig, *, source: str = "config", files: bool = True) -> StudyConfig:
    """`config` when it can run; else a ConfigError naming the field (``source: field: problem``)."""
    checks = [_task, _teacher, _strategies, _losses, _depths] + ([_files] if files else [])
    for check in checks:
        try:
            check(config)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
        except ValueError as error:  # a registry miss: "unknown <kind> 'x'; registered: ..."
            raise ConfigError(f"{source}: {error}") from None
    return config


def teacher_depths(config: StudyConfig) -> dict[str, int] | None:
    """The teacher's blocks per stack when the config knows them (from-config teachers, `teacher.depths`)."""
    from raykd.families import FAMILIES

    if config.teacher.source == "config":
        return FAMILIES.get(config.teacher.model["model_type"]).depths_from_fields(config.teacher.model)
    return dict(config.teacher.depths) if config.teacher.depths else None


def _task(config: StudyConfig) -> None:

    from raykd.tasks import TASKS

    task = config.task
    try:
        task_cls = TASKS.get(task.type)
    except ValueError as error:
        raise ConfigError(f"task.type: {error}") from None
    if task.metric is not None and task.metric not in task_cls.metrics:
        raise ConfigError(f"task.metric: {task.metric!r} is not one of {task.type}'s metrics {list(task_cls.metrics)}")
    if task.data.builtin is not None:
        try:
            BUILTIN_DATASETS.get(task.data.builtin)
        except ValueError as error:
            raise ConfigError(f"task.data.builtin: {error}") from None


def _teacher(config: StudyConfig) -> None:
    from raykd.families import FAMILIES
    from raykd.models import PACKAGED_MODELS

    teacher = config.teacher
    if teacher.source == "config":
        try:
            family = FAMILIES.get(teacher.model["model_type"])
        except ValueError as error:
            raise ConfigError(f"teacher.model.model_type: {error}") from None
        try:
            family.depths_from_fields(teacher.model)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if teacher.source == "package":
        try:
            PACKAGED_MODELS.get(teacher.name)
        except ValueError as error:
            raise ConfigError(f"teacher.name: {error}") from None


def _strategies(config: StudyConfig) -> None:

    for name in config.sweep.strategies:
        try:
            STRATEGIES.get(name)
        except ValueError as error:
            raise ConfigError(f"sweep.strategies: {error}") from None
    unknown = set(config.sweep.strategy_options) - set(STRATEGIES.names())
    if unknown:
        raise ConfigError(
            f"sweep.strategy_options: unknown strategies {sorted(unknown)}; registered: {', '.join(STRATEGIES.names())}"
        )


def _losses(config: StudyConfig) -> None:

    from raykd.losses import check_loss_settings

    check_loss_settings(config.distill.loss)


def _depths(config: StudyConfig) -> None:
    """Student depths per stack against the teacher's, and what each strategy's registration needs."""

    teachers = teacher_depths(config)
    if teachers is None:
        return
    depth = config.student.depth
    if isinstance(depth, dict) and set(depth) != set(teachers):
        raise ConfigError(f"student.depth names stacks {sorted(depth)}; the teacher has {sorted(teachers)}")
    students = student_depths(config, teachers)
    for stack, n in students.items():
        if n > teachers[stack] and "teacher" in config.sweep.inits:
            raise ConfigError(
                f"student.depth ({stack}) {n} exceeds the teacher's {teachers[stack]} blocks, "
                "which teacher init copies from"
            )
        for strategy in config.sweep.strategies:
            options = config.sweep.strategy_options.get(strategy, {})
            problem = strategy_problem(strategy, n, teachers[stack], **options)
            if problem:
                raise ConfigError(f"student.depth ({stack}) {n}, teacher {teachers[stack]} blocks: {problem}")


def _files(config: StudyConfig) -> None:
    """Files the study will read, before anything expensive starts."""
    if config.teacher.source == "path" and not Path(config.teacher.name).expanduser().exists():
        raise ConfigError(f"teacher.name: teacher folder {config.teacher.name!r} does not exist")
    files = config.task.data.files
    if files is None:
        return
    try:
        codecs.lookup(files.encoding)
    except LookupError:
        raise ConfigError(f"task.data.files.encoding: unknown encoding {files.encoding!r}") from None
    for split in ("train", "validation", "test"):
        path = getattr(files, split)
        if path is not None and not Path(path).expanduser().is_file():
            raise ConfigError(f"task.data.files.{split}: local file {path!r} does not exist")
