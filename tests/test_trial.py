"""One trial in-process (no Ray): golden loss values, exact resume from a checkpoint, seeds that pair arms, and a
process that ran another trial first computing what a fresh process computes."""

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from raykd.config import load_config
from raykd.train.checkpoint import CheckpointStore
from raykd.train.run import TeacherArtifacts, TrialRun
from raykd.train.teacher import prepare_teacher
from raykd.trial import StudyContext, TrialSpec

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "task.data.max_examples={train: 96, validation: 32, test: 32}",
    "teacher.train.epochs=1",
    "compute.precision=fp32",
    "compute.teacher_cache.enabled=false",
    "distill.train.epochs=2",
    "distill.train.eval_every=2",
]
# fp32, one thread: the first three total losses of forward-random-w3-s0 on the tiny teacher below (golden: any change
# to the loss, the data order, the seeding or the student build shows up here)
GOLDEN = [7.341847896575928, 7.067557334899902, 6.7701826095581055]


def make_context(tmp: Path) -> StudyContext:
    config = load_config(ROOT / "studies" / "configs" / "smoke.yaml", OVERRIDES)
    teacher = tmp / "teacher"
    prepare_teacher(config, str(teacher))
    return StudyContext(config=config, study_dir=str(tmp), teacher_dir=str(teacher), checkpoints=str(tmp / "ckpt"))


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    torch.set_num_threads(1)
    return make_context(tmp_path_factory.mktemp("trial"))


def run_trial(context, spec, artifacts=None, *, every_row: bool = False, curve: list | None = None):
    """Train `spec` to the end, validating at every evaluation point as a study does; returns the per-step total
    losses and the test metrics of the best-on-validation weights. `every_row`: the baseline of
    `raykd.train.vocab`, every word-embedding row trains (the compaction switched off for this run only).
    `curve`: a learning-curve point after every step is appended to it."""
    run = TrialRun(context, spec, artifacts or TeacherArtifacts.load(context, "cpu"))
    if every_row:
        with mock.patch("raykd.train.run.compact_word_embeddings", return_value=False):
            run.setup()
        assert run.embedding_rows is None  # every row trains
    else:
        run.setup()
    losses = []

    def on_step(result) -> None:
        losses.append(result.terms["total"])
        if curve is not None:
            curve.append(run.curve())

    run.train(on_step=on_step, on_eval=lambda state: run.validate())
    run.validate()
    return losses, run.test()


def test_golden_first_steps(context):
    run = TrialRun(context, TrialSpec.of("forward", "random", 3.0, 0), TeacherArtifacts.load(context, "cpu")).setup()
    losses = []
    run.train(on_step=lambda r: losses.append(r.terms["total"]))
    assert losses[:3] == pytest.approx(GOLDEN, rel=1e-6)
    assert run.steps == 6 and run.state.step == 6  # 96 examples / batch 32 x 2 epochs


class Stop(Exception):
    pass


def test_resume_from_a_checkpoint_continues_exactly(context, tmp_path):
    """Stop after step 3 (checkpoint at step 2), restore into a new trial object, continue: the same losses,
    weights and test metrics as a run that was never interrupted."""
    spec = TrialSpec.of("all_to_one", "random", 3.0, 1)
    # benchmarks/gpu.py runs this test with RAYKD_TEST_DEVICE=cuda: the CUDA RNG state in checkpoints
    artifacts = TeacherArtifacts.load(context, os.environ.get("RAYKD_TEST_DEVICE", "cpu"))
    uninterrupted, test = run_trial(context, spec, artifacts)

    store = CheckpointStore(tmp_path, spec.trial_id)
    first = TrialRun(context, spec, artifacts).setup()
    seen = []

    def on_step(result):
        seen.append(result.terms["total"])
        if first.state.step == 3:
            raise Stop

    def on_eval(state):
        first.validate()
        store.save(state.step, first.save_checkpoint)

    with pytest.raises(Stop):
        first.train(on_step=on_step, on_eval=on_eval)
    assert store.latest().name == "step-2"

    second = TrialRun(context, spec, artifacts).setup()
    torch.manual_seed(12345)  # whatever happened to the global RNG since, the checkpoint restores it
    assert second.load_checkpoint(store.latest()) is None
    assert second.state.step == 2 and second.state.step_in_epoch == 2 and second.best is not None
    rest = []
    second.train(on_step=lambda r: rest.append(r.terms["total"]), on_eval=lambda state: second.validate())
    second.validate()
    assert seen[:2] + rest == uninterrupted
    assert second.test() == test


def test_arms_at_one_seed_share_data_order_init_and_dropout(context):
    """Same seed, other strategy: the same student weights at the start and the same batches; `none` differs only
    in what it matches, so with the hidden weight at 0 a forward trial is the none trial."""
    artifacts = TeacherArtifacts.load(context, "cpu")
    a = TrialRun(context, TrialSpec.of("forward", "random", 0.0, 2), artifacts).setup()
    b = TrialRun(context, TrialSpec.of("none", "random", 0.0, 2), artifacts).setup()
    assert all(torch.equal(x, y) for x, y in zip(a.student.state_dict().values(), b.student.state_dict().values()))
    assert [batch["input_ids"].tolist() for batch in a.loader] == [batch["input_ids"].tolist() for batch in b.loader]
    losses_a, test_a = run_trial(context, TrialSpec.of("forward", "random", 0.0, 2), artifacts)
    losses_b, test_b = run_trial(context, TrialSpec.of("none", "random", 0.0, 2), artifacts)
    assert losses_a == losses_b and test_a == test_b  # dropout masks too: nothing else is random


def test_a_trial_trains_only_the_embedding_rows_its_data_reaches_and_computes_the_same(context):
    """`raykd.train.vocab`: the trial's student trains the rows of the study's token ids (all splits, special ids)
    and, for both inits, loses and scores what the student training every row does."""
    artifacts = TeacherArtifacts.load(context, "cpu")
    run = TrialRun(context, TrialSpec.of("forward", "random", 3.0, 0), artifacts).setup()
    seen = {i for split in artifacts.data.values() for row in split["input_ids"] for i in row}
    assert seen | {artifacts.tokenizer.pad_token_id} <= set(artifacts.token_ids)
    assert run.embedding_rows == len(artifacts.token_ids) < len(artifacts.tokenizer)
    assert run.student.get_input_embeddings().rows.shape[0] == run.embedding_rows
    assert run.params()["trial.embedding_rows_trained"] == run.embedding_rows
    for spec in (TrialSpec.of("forward", "random", 3.0, 0), TrialSpec.of("all_to_one", "teacher", 3.0, 1)):
        compact_losses, compact_test = run_trial(context, spec, artifacts)
        full_losses, full_test = run_trial(context, spec, artifacts, every_row=True)
        assert compact_losses == pytest.approx(full_losses, rel=1e-5) and compact_test == pytest.approx(full_test)


FRESH = """
import json, sys, torch
torch.set_num_threads(1)
from raykd.train.run import TeacherArtifacts, TrialRun
from tests.test_trial import run_trial
from raykd.trial import StudyContext, TrialSpec
import pickle
context = pickle.loads(bytes.fromhex(sys.argv[1]))
losses, test = run_trial(context, TrialSpec.of("forward", "teacher", 3.0, 3))
print(json.dumps({"losses": losses, "test": test}))
"""


def test_a_reused_process_computes_what_a_fresh_process_computes(context):
    """A Tune actor runs trial after trial: nothing of one (RNG state, optimizer, model, metrics) may leak into
    the next. Trial B after trial A in this process == trial B alone in a fresh Python process."""
    import pickle

    artifacts = TeacherArtifacts.load(context, "cpu")
    run_trial(context, TrialSpec.of("reverse", "random", 3.0, 7), artifacts)  # trial A: another arm and seed
    torch.rand(5)  # and some stray use of the global RNG
    losses, test = run_trial(context, TrialSpec.of("forward", "teacher", 3.0, 3), artifacts)
    out = subprocess.run(
        [sys.executable, "-c", FRESH, pickle.dumps(context).hex()], capture_output=True, text=True, cwd=ROOT, check=True
    )
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert losses == fresh["losses"] and test == fresh["test"]


def test_a_learning_curve_leaves_the_training_exactly_as_it_was(context):
    """The learning curve evaluates on `distill.curve.examples` validation examples between steps; the trial
    trains exactly as without it (its evaluations' draws from the global RNG are undone): same losses, same test."""
    artifacts = TeacherArtifacts.load(context, "cpu")
    spec = TrialSpec.of("forward", "random", 3.0, 4)
    points: list[dict] = []
    with_curve = run_trial(context, spec, artifacts, curve=points)
    assert with_curve == run_trial(context, spec, artifacts)
    assert len(points) == len(with_curve[0]) and {"accuracy", "f1_macro"} <= set(points[-1])
    assert len({p["accuracy"] for p in points}) > 1  # the metric moves over training
    run = TrialRun(context, spec, artifacts).setup()  # a task whose evaluation draws random numbers: undone
    before = torch.get_rng_state()
    with mock.patch.object(run.task, "evaluate", side_effect=lambda *a, **k: {"accuracy": float(torch.rand(1))}):
        run.curve()
    assert torch.equal(torch.get_rng_state(), before)


def test_the_analysis_rebuilds_exactly_the_student_a_trial_started_from(context):
    """ "At init" in the angle statistics is the very student (projections included, here for a narrower student)
    the trial trained from: `TrialRun.setup` draws it from the trial's seed alone."""
    narrow = StudyContext(
        **{
            **context.__dict__,
            "config": load_config(ROOT / "studies" / "configs" / "smoke.yaml", [*OVERRIDES, "student.width=32"]),
        }
    )
    spec = TrialSpec.of("reverse", "random", 3.0, 5)
    artifacts = TeacherArtifacts.load(narrow, "cpu")
    trained_from = TrialRun(narrow, spec, artifacts).setup()
    before = {k: v.clone() for k, v in trained_from.student.state_dict().items()}
    assert any(k.startswith("raykd_projections.") for k in before)
    trained_from.train()  # the trial trains; the analysis later rebuilds its start in another process
    rebuilt = TrialRun(narrow, spec, artifacts).setup().student.state_dict()
    assert before.keys() == rebuilt.keys() and all(torch.equal(before[k], rebuilt[k]) for k in before)


def test_a_cached_random_init_trial_never_loads_the_teachers_weights(context):
    """A reused trial actor holds the teacher's weights only for trials that need them: copied init, or a live
    teacher. A random-init student served by the cache is built from the weightless skeleton (and is the same
    student: `test_golden_first_steps` pins its first losses)."""
    from raykd.train.teacher import prepare_cache

    overrides = [o for o in OVERRIDES if not o.startswith("compute.teacher_cache")]
    config = load_config(
        ROOT / "studies" / "configs" / "smoke.yaml", [*overrides, "compute.teacher_cache.enabled=true"]
    )
    specs = [TrialSpec.of("forward", "random", 3.0, 0), TrialSpec.of("forward", "teacher", 3.0, 0)]
    cache = prepare_cache(config, context.teacher_dir, specs)["path"]
    assert cache is not None
    cached = StudyContext(**{**context.__dict__, "config": config, "teacher_cache": cache})
    artifacts = TeacherArtifacts.load(cached, "cpu")
    run = TrialRun(cached, specs[0], artifacts).setup()
    assert run.teacher_source == "cache" and "model" not in artifacts.__dict__
    assert all(p.device.type == "cpu" for p in run.student.parameters())
    TrialRun(cached, specs[1], artifacts).setup()  # copies teacher blocks: now the weights are loaded
    assert "model" in artifacts.__dict__
