"""The registry of built-in corpora (`raykd.corpora` registers raykd's; users register their own)."""

from raykd.registry import Registry

BUILTIN_DATASETS: Registry = Registry("built-in dataset")
