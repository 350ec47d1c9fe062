"""raykd: controlled knowledge-distillation studies of intermediate-layer matching.

A study flows through: config -> tasks (data, metrics) -> models, families, student -> strategies (layer maps) ->
losses -> train (the loop, a trial's run, the teacher stage) -> sweep (Ray Tune / Train) -> tracking (MLflow) ->
analysis (tests, claims, report). The README's "Where things live" has one row per module.
"""

__version__ = "0.1.0"
