"""raykd: controlled knowledge-distillation studies of intermediate-layer matching.

A study flows through: config -> tasks (data, metrics) -> models, families, student -> strategies (layer maps) ->
losses -> train (the loop, a trial's run, the teacher stage) -> sweep (Ray Tune / Train) -> tracking (MLflow) ->
analysis (tests, claims, report). The README's "Where things live" has one row per module.

`raykd.load_study(folder)` gives a finished study's trials (a pandas DataFrame) and its summary, for notebooks.
"""

__version__ = "0.1.0"


def load_study(study_dir):
    """(trials DataFrame, summary dict) of a study folder: `raykd.analysis.table.load_study`."""
    from raykd.analysis.table import load_study as load  # the analysis loads on first use, not with `import raykd`

    return load(study_dir)
