"""Post-hoc analysis of a study, in the order the data flows:

- `raykd.analysis.stats`: the tests over the trial results (cells, ANOVA / Friedman, pairs against the reference,
  matching vs none);
- `raykd.analysis.claims`: the claims and their verdicts, decided by tests of the margin, and the room they need
  (docs/claims.md);
- `raykd.analysis.sequential`: planned looks and the level each may decide at;
- `raykd.analysis.power`: what the design could decide, and the seeds it would take;
- `raykd.analysis.angles`: cos(t_i - s, t_j - s) statistics of teacher layers seen from the student, and their
  contrast with a null;
- `raykd.analysis.text`, `raykd.analysis.views`, `raykd.analysis.figures` (`drawing`, `angle_figures`),
  `raykd.analysis.report`: numbers as text, the verdict block (console) and MLflow description, figures, and ``summary.json`` / ``report.md`` /
  ``report.html``;
- `raykd.analysis.table`: the same analysis of a plain results table (no Ray, no MLflow);
- `raykd.analysis.pipeline`: the study-level pipeline and `AnalysisActor` (a Ray actor).
"""
