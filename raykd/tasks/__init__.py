"""Task types behind one interface (`raykd.tasks.base.Task`): classification, seq2seq, causal_lm.

``build_task(task_config)`` gives a task that loads its splits, tokenizes, collates and evaluates.
"""

from raykd.tasks import causal_lm, classification, seq2seq  # noqa: F401  (registration)
from raykd.tasks.registry import TASKS

__all__ = ["TASKS", "build_task"]


def build_task(config):
    """The `Task` for a `raykd.config.TaskConfig`."""
    return TASKS.get(config.type)(config)
