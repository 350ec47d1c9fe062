import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raykd.strategies import (
    STRATEGIES,
    forward_targets,
    is_per_epoch,
    layer_map,
    layer_maps,
    spread_targets,
)

# --- golden maps from the paper (docs/paper.md) -------------------------------------------------


@pytest.mark.parametrize(
    "teacher, student, targets",
    [
        (12, 3, [4, 8, 12]),
        (12, 6, [2, 4, 6, 8, 10, 12]),
        (12, 9, [2, 3, 4, 6, 7, 8, 10, 11, 12]),
        (36, 9, [4, 8, 12, 16, 20, 24, 28, 32, 36]),
    ],
)
def test_forward_golden(teacher, student, targets):
    assert layer_map("forward", student, teacher) == [(0, 0)] + list(zip(range(1, student + 1), targets))


def test_reverse_golden_12_to_3():
    assert layer_map("reverse", 3, 12) == [(0, 0), (1, 12), (2, 8), (3, 4)]


@pytest.mark.parametrize("teacher, middle", [(12, 6), (36, 18), (6, 3), (7, 4)])
def test_all_to_one_golden(teacher, middle):
    assert layer_map("all_to_one", 3, teacher) == [(k, middle) for k in range(4)]


def test_all_to_one_target_option_and_no_embeddings():
    assert layer_map("all_to_one", 2, 12, target=9, match_embeddings=False) == [(1, 9), (2, 9)]


def test_none_is_empty():
    assert layer_map("none", 3, 12) == []


def test_last_is_pkd_last():
    assert layer_map("last", 3, 12) == [(0, 0), (1, 10), (2, 11), (3, 12)]


def test_uniform_is_forward_with_embeddings():
    assert layer_map("uniform", 4, 12) == layer_map("forward", 4, 12)


def test_match_embeddings_false_drops_index_zero():
    assert layer_map("forward", 9, 36, match_embeddings=False) == [(k, 4 * k) for k in range(1, 10)]


def test_spread_and_forward_targets_golden():
    assert spread_targets(3, 12) == [1, 7, 12]
    assert spread_targets(9, 36) == [1, 5, 10, 14, 19, 23, 27, 32, 36]
    assert forward_targets(3, 12) == [4, 8, 12]


# --- random, rail ----------------------------------------------------------------------------


def test_random_is_a_seeded_permutation_of_forward_targets():
    pairs = layer_map("random", 6, 12, seed=3)
    assert pairs[0] == (0, 0)
    assert sorted(t for _, t in pairs[1:]) == forward_targets(6, 12)
    assert pairs == layer_map("random", 6, 12, seed=3)


def test_random_differs_across_seeds():
    maps = {tuple(layer_map("random", 6, 12, seed=s)) for s in range(10)}
    assert len(maps) == 10  # dealt: distinct for seeds 0..M-1


@pytest.mark.parametrize("blocks, teacher", [(3, 6), (3, 12), (4, 12), (5, 20)])
def test_random_deals_distinct_permutations_that_are_neither_forward_nor_reverse(blocks, teacher):
    """The audit's case (3 blocks, 6 permutations): seeds 1, 4, 6 drew forward and seeds 0 and 2 the same map.
    Now seeds 0..M-1 get the M = S! - 2 other permutations once each, and more seeds cycle through them evenly."""
    forward = layer_map("forward", blocks, teacher)
    reverse = layer_map("reverse", blocks, teacher)
    available = math.factorial(blocks) - 2
    seeds = range(min(available, 40))
    maps = [tuple(layer_map("random", blocks, teacher, seed=s)) for s in seeds]
    assert len(set(maps)) == len(maps)
    assert tuple(forward) not in maps and tuple(reverse) not in maps
    if available <= 40:  # more seeds than permutations: balanced (each used 2 or 3 times over 2.5 rounds)
        counts = Counter(tuple(layer_map("random", blocks, teacher, seed=s)) for s in range(5 * available // 2))
        assert len(counts) == available and set(counts.values()) <= {2, 3}


def test_random_deal_depends_on_the_seed_alone_and_independent_draws_stay_available():
    assert layer_map("random", 3, 6, seed=5) == layer_map("random", 3, 6, seed=5)  # growing a study keeps maps
    independent = {tuple(layer_map("random", 3, 6, seed=s, deal="independent")) for s in range(40)}
    assert tuple(layer_map("forward", 3, 6)) in independent  # the paper's draws may equal forward
    with pytest.raises(ValueError, match="at least 3 matched student blocks: with 2"):
        layer_map("random", 2, 6, seed=0)
    with pytest.raises(ValueError, match=r"option deal must be one of \('distinct', 'independent'\)"):
        layer_map("random", 3, 6, seed=0, deal="fresh")


def test_rail_is_ordered_subset_redrawn_per_epoch():
    assert is_per_epoch("rail") and not is_per_epoch("forward")
    epochs = [layer_map("rail", 3, 12, seed=0, epoch=e) for e in range(8)]
    for pairs in epochs:
        teachers = [t for s, t in pairs if s > 0]
        assert teachers == sorted(teachers) and len(set(teachers)) == 3
        assert all(1 <= t <= 12 for t in teachers) and pairs[0] == (0, 0)
    assert len({tuple(p) for p in epochs}) > 1
    assert epochs[5] == layer_map("rail", 3, 12, seed=0, epoch=5)


def test_layer_maps_per_stack_single_stack_equals_layer_map():
    assert layer_maps("random", {"encoder": 4}, {"encoder": 12}, seed=7) == {
        "encoder": layer_map("random", 4, 12, seed=7)
    }


def test_layer_maps_encoder_decoder_independent_random_draws():
    draws = [
        layer_maps("random", {"encoder": 6, "decoder": 6}, {"encoder": 12, "decoder": 12}, seed=s) for s in range(10)
    ]
    assert any(d["encoder"] != d["decoder"] for d in draws)
    forward = layer_maps("forward", {"encoder": 3, "decoder": 2}, {"encoder": 12, "decoder": 6})
    assert forward == {"encoder": [(0, 0), (1, 4), (2, 8), (3, 12)], "decoder": [(0, 0), (1, 3), (2, 6)]}


def test_layer_maps_stack_mismatch():
    with pytest.raises(ValueError, match="student stacks"):
        layer_maps("forward", {"encoder": 3}, {"decoder": 12})


def test_custom_per_stack_pairs():
    maps = layer_maps(
        "custom",
        {"encoder": 2, "decoder": 2},
        {"encoder": 4, "decoder": 4},
        pairs={"encoder": [[1, 4], [2, 4]], "decoder": [[2, 1]]},
    )
    assert maps == {"encoder": [(1, 4), (2, 4)], "decoder": [(2, 1)]}


# --- properties --------------------------------------------------------------------------------

ONE_PER_STATE = ("forward", "reverse", "random", "all_to_one", "last", "rail", "uniform")


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(ONE_PER_STATE),
    teacher=st.integers(1, 48),
    data=st.data(),
    seed=st.integers(0, 2**31),
    embeddings=st.booleans(),
)
def test_properties(name, teacher, data, seed, embeddings):
    student = data.draw(st.integers(3 if name == "random" and teacher >= 3 else 1, teacher))
    if name == "random" and student < 3:
        return  # no permutation other than forward and reverse exists (tested above)
    pairs = layer_map(name, student, teacher, seed=seed, match_embeddings=embeddings, epoch=seed % 5)
    first = 0 if embeddings else 1
    assert [s for s, _ in pairs] == list(range(first, student + 1))  # one pair per student state
    assert all(0 <= t <= teacher for _, t in pairs)
    assert all(t >= 1 for s, t in pairs if s >= 1)
    assert pairs == layer_map(name, student, teacher, seed=seed, match_embeddings=embeddings, epoch=seed % 5)


# --- bad input -------------------------------------------------------------------------------


def test_unknown_name_lists_registered():
    with pytest.raises(ValueError, match="unknown layer strategy 'fwd'; registered: .*forward.*reverse"):
        layer_map("fwd", 3, 12)


@pytest.mark.parametrize("name", ["forward", "reverse", "random", "last", "rail"])
def test_student_deeper_than_teacher_refused(name):
    with pytest.raises(ValueError, match=r"needs student depth <= teacher depth, got 13 > 12"):
        layer_map(name, 13, 12)


def test_all_to_one_allows_deeper_student():
    assert len(layer_map("all_to_one", 8, 4)) == 9


@pytest.mark.parametrize("student, teacher", [(0, 12), (-1, 12), (3, 0), (2.5, 12), (True, 12)])
def test_depth_must_be_positive_int(student, teacher):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        layer_map("forward", student, teacher)


@pytest.mark.parametrize(
    "pairs, message",
    [
        (None, "needs a `pairs` option"),
        ([[4, 1]], r"pair \(4, 1\) out of range; student indices are 0..3"),
        ([[1, 13]], r"teacher indices 0..12"),
        ([[1, -1]], "out of range"),
        ([[1, 2], [1, 2]], "duplicates"),
        ([[1]], "not a \\[student, teacher\\] pair"),
        ([["1", 2]], "not a \\[student, teacher\\] pair"),
    ],
)
def test_custom_validation(pairs, message):
    with pytest.raises(ValueError, match=message):
        layer_map("custom", 3, 12, pairs=pairs)


def test_custom_embedding_pair_needs_match_embeddings():
    assert layer_map("custom", 3, 12, pairs=[[0, 0], [3, 12]]) == [(0, 0), (3, 12)]
    with pytest.raises(ValueError, match="match_embeddings=False"):
        layer_map("custom", 3, 12, pairs=[[0, 0]], match_embeddings=False)


@pytest.mark.parametrize("seed", [-1, "1", 1.5, ()])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be"):
        layer_map("random", 3, 12, seed=seed)


def test_bad_options():
    with pytest.raises(ValueError, match="all_to_one target must be an integer in 0..12"):
        layer_map("all_to_one", 3, 12, target=13)
    with pytest.raises(ValueError, match="rail epoch"):
        layer_map("rail", 3, 12, epoch=-1)


def test_user_registered_strategy_is_validated():
    @STRATEGIES.register("test_out_of_range")
    def broken(n_student, n_teacher, *, seed, match_embeddings, **_):
        return [(1, n_teacher + 1)]

    try:
        with pytest.raises(ValueError, match="strategy 'test_out_of_range': pair"):
            layer_map("test_out_of_range", 3, 12)
    finally:
        STRATEGIES.remove("test_out_of_range")  # tests leave no global state behind
    assert "test_out_of_range" not in STRATEGIES
