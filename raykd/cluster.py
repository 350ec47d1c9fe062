"""Starting or joining Ray, and what its nodes can hold.

Local runs start Ray in-process sized to this machine; ``RAY_ADDRESS`` (or an explicit address) joins an
existing cluster. Every resource request raykd makes must fit on one node, so the stages ask here what
the largest node has instead of using the cluster's totals.
"""

from __future__ import annotations

import os

from raykd.config import ConfigError

DRIVER_RESOURCE = "tune_driver"  # trial drivers of multi-worker trials hold this instead of a CPU
# Settings of this shell that every Ray worker of the study must see. A local Ray's workers inherit the driver's
# environment; a cluster's workers inherit their raylet's, so on a cluster these travel in the job's runtime_env.
# (Not HF_HOME or other paths: those are per machine.)
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
)
FORWARDED_PREFIXES = (
    "RAYKD_",
    "MLFLOW_HTTP_REQUEST_",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_",  # --storage s3://: credentials, region and endpoint of the checkpoints' store
)


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The part of `environ` (default: this process's) a study's workers on a cluster must see."""
    environ = dict(os.environ if environ is None else environ)
    return {k: v for k, v in environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIXES)}


def start_ray(address: str | None = None, *, dashboard: bool = False) -> None:
    """Connect to RAY_ADDRESS (or `address`), else start a local Ray in-process sized to this machine.

    The dashboard is only needed for multi-worker trials: without its State API, Ray Train 2.60's
    placement-group cleaner cannot see finished controllers, and each trial's worker placement group
    stays reserved (the next wave of trials then waits forever on a small machine).
    """
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # faster worker-group teardown
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": forwarded_env()})
    else:
        ray.init(
            num_cpus=os.cpu_count(),
            resources={DRIVER_RESOURCE: 1000},
            include_dashboard=dashboard,
            log_to_driver=False,
            configure_logging=False,
        )


def node_resources() -> list[dict[str, float]]:
    """The total resources of each alive node."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def largest_node(resource: str = "CPU") -> float:
    """The most of `resource` any one node has (0 when none has it)."""
    return max((node.get(resource, 0.0) for node in node_resources()), default=0.0)


def stage_cpus(requested: float | None, cap: float = 8.0) -> float:
    """CPUs for a one-task stage (teacher, cache, analysis): as requested, else the largest node's, at most
    `cap`; never more than one node has (a request no node can hold would never be scheduled)."""
    largest = largest_node("CPU")
    if requested is not None and requested > largest:
        raise ConfigError(f"compute.teacher_cpus: {requested:g} CPUs asked, the largest node has {largest:g}")
    return requested or max(1.0, min(cap, largest))
