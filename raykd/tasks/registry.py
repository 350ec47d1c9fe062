"""The registry of task types (`raykd.tasks` registers the built-in ones; users register their own)."""

from raykd.registry import Registry

TASKS: Registry = Registry("task type")
