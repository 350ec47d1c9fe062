"""Task types behind one interface (`raykd.tasks.base.Task`): classification, seq2seq, causal_lm.

``build_task(task_config)`` gives a task that loads its splits, tokenizes, collates and evaluates.
"""

from raykd.registry import Registry

TASKS: Registry = Registry("task type")

from raykd.tasks import causal_lm, classification, seq2seq  # noqa: E402,F401  (registration)


def build_task(config):
    """The `Task` for a `raykd.config.TaskConfig`."""
    return TASKS.get(config.type)(config)
