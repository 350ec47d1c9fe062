"""Angle statistics: against a direct NumPy computation, on constructed geometry, on real (tiny) models."""

import numpy as np
import pytest
import torch

from raykd.analysis.angles import HIST_EDGES, angle_matrix, student_angles, summarise, teacher_states
from raykd.losses import attach_projections
from raykd.student import build_student
from tests.tiny import tiny_batch, tiny_model


def direct(teacher: np.ndarray, student: np.ndarray):
    """Loop-by-loop NumPy: mean cosine per teacher pair, the i<j cosines."""
    tokens, n, _ = teacher.shape
    matrix = np.zeros((n, n))
    upper = []
    for i in range(n):
        for j in range(n):
            cos = []
            for t in range(tokens):
                a, b = teacher[t, i] - student[t], teacher[t, j] - student[t]
                cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
            matrix[i, j] = np.mean(cos)
            if i < j:
                upper += cos
    return matrix, np.array(upper)


def test_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(9, 5, 6)), rng.normal(size=(9, 6))
    out = angle_matrix(teacher, student)
    matrix, upper = direct(teacher, student)
    np.testing.assert_allclose(np.array(out["matrix"]), matrix, atol=1e-6)
    assert out["acute_share"] == pytest.approx(np.mean(upper > 0))
    assert out["histogram"]["counts"] == np.histogram(upper, bins=HIST_EDGES)[0].tolist()
    assert out["pairs"] == 9 * 10 and out["tokens"] == 9 and out["degenerate"] == 0


def test_teacher_points_on_one_side_are_acute_on_opposite_sides_obtuse():
    s = np.zeros((4, 3))
    one_side = np.stack([s + [1.0, 0.1 * i, 0.0] for i in range(4)], axis=1)  # all ahead of s along x
    out = angle_matrix(one_side, s)
    assert out["acute_share"] == 1.0 and min(min(r) for r in out["matrix"]) > 0.9
    opposite = np.stack([s + [1.0, 0, 0], s + [-2.0, 0, 0]], axis=1)  # s between the two teacher points
    out = angle_matrix(opposite, s)
    assert out["acute_share"] == 0.0 and out["matrix"][0][1] == pytest.approx(-1.0)
    right = np.stack([s + [1.0, 0, 0], s + [0, 3.0, 0]], axis=1)
    assert angle_matrix(right, s)["matrix"][0][1] == pytest.approx(0.0, abs=1e-12)


def test_a_teacher_state_equal_to_the_student_is_left_out():
    rng = np.random.default_rng(1)
    student = rng.normal(size=(3, 4))
    teacher = np.stack([student, student + rng.normal(size=(3, 4)), student + rng.normal(size=(3, 4))], axis=1)
    out = angle_matrix(teacher, student)
    assert out["matrix"][0][0] is None and out["matrix"][0][1] is None
    assert out["pairs"] == 3 and out["degenerate"] == 3 * 2  # pairs (0,1), (0,2) on each of 3 tokens
    _, upper = direct(teacher[:, 1:], student)
    assert out["acute_share"] == pytest.approx(np.mean(upper > 0))


def test_real_models_pads_never_count_and_all_states_are_measured():
    teacher = tiny_model("bert", depth=4)
    student = build_student(teacher, depth=2, init="teacher", copy_rule="matched", seed=0)
    batch = tiny_batch(teacher)
    cached = teacher_states(teacher, [batch])
    out = student_angles(student, cached)
    assert set(out) == {"encoder"} and set(out["encoder"]) == {"0", "1", "2"}
    n_valid = int(batch["attention_mask"].sum())
    trained = out["encoder"]["2"]
    assert trained["tokens"] == n_valid and len(trained["matrix"]) == 5
    assert out["encoder"]["0"]["degenerate"] > 0  # copied embeddings: t_0 == s_0 on every token
    # changing what sits under the padding changes nothing
    noisy = {**batch, "input_ids": batch["input_ids"].clone()}
    noisy["input_ids"][batch["attention_mask"] == 0] = 7
    again = student_angles(student, teacher_states(teacher, [noisy]))
    np.testing.assert_allclose(
        np.array(again["encoder"]["2"]["matrix"], dtype=float), np.array(trained["matrix"], dtype=float), atol=1e-5
    )
    # the same numbers as the direct computation on the valid tokens
    with torch.no_grad():
        t = torch.stack(teacher(**batch, output_hidden_states=True).hidden_states, dim=2)[
            batch["attention_mask"].bool()
        ]
        s = student(**batch, output_hidden_states=True).hidden_states[2][batch["attention_mask"].bool()]
    matrix, _ = direct(t.double().numpy(), s.double().numpy())
    np.testing.assert_allclose(np.array(trained["matrix"], dtype=float), matrix, atol=1e-5)


def test_width_mismatch_goes_through_the_projection_or_is_skipped():
    teacher = tiny_model("bert", depth=4, width=32)
    student = build_student(teacher, depth=2, width=16, init="random", seed=0)
    attach_projections(student, ["encoder_2"], 32)
    cached = teacher_states(teacher, [tiny_batch(teacher)])
    out = student_angles(student, cached)
    assert "skipped" in out["encoder"]["1"] and "no trained projection" in out["encoder"]["1"]["skipped"]
    with torch.no_grad():
        batch = tiny_batch(teacher)
        mask = batch["attention_mask"].bool()
        s = student.raykd_projections("encoder", 2, student(**batch, output_hidden_states=True).hidden_states[2][mask])
        t = torch.stack(teacher(**batch, output_hidden_states=True).hidden_states, dim=2)[mask]
    matrix, _ = direct(t.double().numpy(), s.double().numpy())
    np.testing.assert_allclose(np.array(out["encoder"]["2"]["matrix"], dtype=float), matrix, atol=1e-5)


def test_encoder_decoder_measures_both_stacks():
    teacher = tiny_model("t5", depth=3)
    student = build_student(teacher, depth=1, init="teacher", seed=0)
    out = student_angles(student, teacher_states(teacher, [tiny_batch(teacher)]))
    assert set(out) == {"encoder", "decoder"}
    assert len(out["decoder"]["1"]["matrix"]) == 4 and out["decoder"]["1"]["acute_share"] is not None


def test_summary_averages_per_init():
    def stats(share, value):
        return {
            "encoder": {
                "1": {
                    "matrix": [[1.0, value], [value, 1.0]],
                    "acute_share": share,
                    "histogram": {"edges": HIST_EDGES.tolist(), "counts": [1] * 40},
                }
            }
        }

    rows = [
        {"init": "random", "strategy": "forward", "seed": 0, "at_init": stats(0.2, 0.1), "trained": stats(0.8, 0.5)},
        {"init": "random", "strategy": "reverse", "seed": 0, "at_init": stats(0.2, 0.1), "trained": stats(0.6, 0.3)},
    ]
    out = summarise(rows)["random"]["encoder"]["1"]
    assert out["trained"]["acute_share"] == pytest.approx(0.7)
    assert out["trained"]["matrix"][0][1] == pytest.approx(0.4)
    assert out["trained"]["acute_share_by_strategy"] == {"forward": 0.8, "reverse": 0.6}
    assert out["at_init"]["histogram"]["counts"] == [2] * 40 and out["trained"]["n"] == 2


def test_null_states_keep_norms_and_move_every_token():
    from raykd.analysis.angles import null_state

    student = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    random_point = null_state("random_point", student, g)
    torch.testing.assert_close(random_point.norm(dim=-1), student.norm(dim=-1))
    assert not torch.allclose(random_point, student)
    other = null_state("other_token", student, g)
    rows = {tuple(r.tolist()) for r in student}
    assert all(tuple(r.tolist()) in rows for r in other)  # another token's state ...
    assert all(not torch.equal(a, b) for a, b in zip(other, student))  # ... never its own
    with pytest.raises(ValueError, match="null baseline must be one of"):
        null_state("shuffled", student, g)


def _stats(teacher: np.ndarray, student: np.ndarray, null_seeds: int = 5):
    """student_angles' per-state statistics for hand-made states, through a stand-in "model"."""
    from raykd.analysis.angles import NULLS, AngleAccumulator, interval, null_state

    t, s = torch.as_tensor(teacher).float(), torch.as_tensor(student).float()
    actual = AngleAccumulator(t.shape[1])
    actual.add(t, s)
    nulls = {}
    for i, kind in enumerate(NULLS):
        shares = []
        for j in range(null_seeds):
            acc = AngleAccumulator(t.shape[1])
            acc.add(t, null_state(kind, s, torch.Generator().manual_seed(1000 * i + j)))
            shares.append(acc.result()["acute_share"])
        nulls[kind] = interval(shares)
    return actual.result()["acute_share"], nulls


def test_random_geometry_looks_acute_and_the_null_says_so():
    """Random points in width 384: nearly every angle is acute for the student and for its null baselines alike,
    so a high acute share alone says nothing; the baseline is what makes it readable."""
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(200, 7, 384)), rng.normal(size=(200, 384))
    share, nulls = _stats(teacher, student)
    assert share > 0.99
    for kind in ("random_point", "other_token"):
        assert nulls[kind]["mean"] > 0.99 and abs(nulls[kind]["mean"] - share) < 0.01


def test_a_student_inside_the_teacher_cloud_falls_below_its_null():
    """Each token's student state at the centroid of that token's teacher states: the teacher layers surround it
    (far fewer acute angles), while the null baselines (a random point of the same norm, another token's state)
    stay near the far-away reading."""
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(200, 7, 64)) + rng.normal(size=(200, 1, 64)) * 3
    student = teacher.mean(axis=1)
    share, nulls = _stats(teacher, student)
    for kind in ("random_point", "other_token"):
        assert share < nulls[kind]["ci95"][0] - 0.2, (share, nulls[kind])


def test_student_angles_reports_nulls_per_seed_and_summarise_gives_intervals():
    teacher = tiny_model("bert", depth=4)
    student = build_student(teacher, depth=2, init="random", seed=0)
    cached = teacher_states(teacher, [tiny_batch(teacher, batch=4)])
    out = student_angles(student, cached, null_seeds=3)
    entry = out["encoder"]["1"]
    assert set(entry["null"]) == {"random_point", "other_token"} and len(entry["null"]["random_point"]) == 3
    rows = [{"init": "random", "strategy": "forward", "seed": 0, "at_init": out, "trained": out}]
    summary = summarise(rows)["random"]["encoder"]["1"]["trained"]
    null = summary["null"]["random_point"]["acute_share"]
    assert null["n"] == 3 and null["ci95"][0] <= null["mean"] <= null["ci95"][1]
    assert summary["mean_cos"] is not None and summary["null"]["other_token"]["matrix"] is not None


def test_states_added_in_one_batch_count_as_added_one_by_one():
    """`add_states` (a student state and its null replacements in one batch) gives each accumulator exactly what
    adding its state alone gives, degenerate tokens (a student state equal to a teacher state) included."""
    from raykd.analysis.angles import AngleAccumulator, add_states

    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(40, 5, 32, generator=g, dtype=torch.float64)
    states = torch.randn(4, 40, 32, generator=g)
    states[0, :7] = teacher[:7, 0].float()  # the embedding-output case: t_0 == s on 7 tokens
    gram = teacher @ teacher.transpose(1, 2)
    batched = [AngleAccumulator(5) for _ in states]
    add_states(batched, teacher, states, gram)
    for acc, state in zip(batched, states):
        alone = AngleAccumulator(5)
        alone.add(teacher, state, gram)
        assert acc.result() == alone.result()
    assert batched[0].result()["degenerate"] == 7 * 4 and batched[1].result()["degenerate"] == 0


def test_weights_digest_tells_students_apart_by_their_weights_only():
    """The analysis measures each distinct starting student once (trials paired by seed start from the same one):
    the digest it keys them by is equal for equal weights and differs for any other seed, an attached projection
    or a single changed weight."""
    from raykd.analysis.pipeline import weights_digest

    teacher = tiny_model("bert", depth=4)
    first = build_student(teacher, depth=2, init="random", seed=0)
    again = build_student(teacher, depth=2, init="random", seed=0)
    assert weights_digest(first) == weights_digest(again)
    assert weights_digest(build_student(teacher, depth=2, init="random", seed=1)) != weights_digest(first)
    with torch.no_grad():
        next(again.parameters()).view(-1)[0] += 1e-6
    assert weights_digest(again) != weights_digest(first)
    projected = build_student(teacher, depth=2, init="random", seed=0)
    attach_projections(projected, ["encoder_1"], teacher_width=2 * teacher.config.hidden_size)
    assert weights_digest(projected) != weights_digest(first)


def test_angles_are_measured_once_per_distinct_student_and_equal_a_fresh_measurement():
    from raykd.analysis.pipeline import once_per_weights

    teacher = tiny_model("bert", depth=4)
    cached = teacher_states(teacher, [tiny_batch(teacher, batch=4)])
    calls = []

    def measure(student):
        calls.append(student)
        return student_angles(student, cached, null_seeds=2)

    angles_of = once_per_weights(measure)
    students = [build_student(teacher, depth=2, init="random", seed=s) for s in (0, 0, 1, 0)]
    results = [angles_of(s) for s in students]
    assert len(calls) == 2 and results[0] is results[1] is results[3] and results[2] is not results[0]
    assert results[3] == student_angles(students[3], cached, null_seeds=2)


def _measured(seed, trained_cos, null_cos, init="random"):
    """One student's angle statistics: every off-diagonal cosine `trained_cos`, its random-point null `null_cos`."""

    def stats(value):
        matrix = [[1.0 if i == j else value for j in range(3)] for i in range(3)]
        return {"matrix": matrix, "acute_share": 1.0}

    layer = {**stats(trained_cos), "null": {"random_point": [stats(null_cos), stats(null_cos)]}}
    return {"init": init, "strategy": "forward", "seed": seed, "trained": {"encoder": {"1": layer, "2": layer}}}


def test_null_contrast_tests_the_trained_students_against_their_null_across_seeds():
    from raykd.analysis.angles import null_contrast

    rows = [_measured(s, 0.5 + 0.01 * s, 0.3) for s in range(3)]
    out = null_contrast(rows)["random"]["encoder"]["trained"]
    assert out["tested"] and out["seeds"] == [0, 1, 2] and out["mean"] == pytest.approx(0.21)
    assert out["ci95"][0] < 0.21 < out["ci95"][1] and out["p"] < 0.01
    two = null_contrast(rows[:2])["random"]["encoder"]["trained"]
    assert not two["tested"] and two["p"] is None  # fewer than 3 seeds: reported, not tested
    same = null_contrast([_measured(s, 0.3 + 0.01 * (s - 1), 0.3) for s in range(4)])["random"]["encoder"]["trained"]
    assert same["p"] > 0.3 and same["ci95"][0] < 0 < same["ci95"][1]  # no different from its null: not called so
