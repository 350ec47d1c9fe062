"""Post-hoc analysis of a study: angle statistics, "does the strategy matter?" tests, the report.

- `raykd.analysis.stats`: ANOVA / Friedman / Holm / TOST / matching-vs-none over the trial results;
- `raykd.analysis.angles`: cos(t_i - s, t_j - s) statistics of teacher layers seen from the student;
- `raykd.analysis.report`: ``summary.json``, ``report.md`` and figures;
- `raykd.analysis.actor`: the study-level driver and `AnalysisActor` (a Ray actor).
"""
