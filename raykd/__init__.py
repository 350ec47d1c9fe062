"""raykd: controlled knowledge-distillation studies of intermediate-layer matching.

Data flow: strategies (layer maps) -> families (hidden-state stacks) -> student (construction)
-> losses -> train.loop (plain PyTorch); later: tasks, sweep (Ray), tracking (MLflow), analysis.
"""

__version__ = "0.1.0"
