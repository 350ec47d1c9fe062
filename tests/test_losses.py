import math

import pytest
import torch

from raykd.config import LossSettings
from raykd.losses import (
    HIDDEN_KINDS,
    HIDDEN_NORMS,
    HIDDEN_REDUCTIONS,
    LossConfig,
    Projections,
    attach_projections,
    check_loss_settings,
    hidden_loss,
    masked_mean,
    normalise_hidden,
    pair_loss,
    prediction_kd,
    projection_keys,
    total_loss,
)
from raykd.student import build_student
from tests.tiny import tiny_model

# student [batch 1, seq 3, width 2]; the last position is padding.
S = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
ZERO = torch.zeros_like(S)
MASK = torch.tensor([[1, 1, 0]]).bool()


def test_masked_mse_golden_excludes_pads():
    # (1 + 4 + 9 + 16) / (2 tokens * 2 width) = 7.5; the pad token's 100s are ignored.
    assert pair_loss(S, ZERO, MASK).item() == pytest.approx(7.5)


def test_masked_mean_shapes():
    assert masked_mean(torch.tensor([[1.0, 3.0, 99.0]]), MASK).item() == pytest.approx(2.0)
    assert masked_mean(torch.ones(1, 3), torch.zeros(1, 3).bool()).item() == 0.0  # no valid token: 0, not NaN


def test_cosine_golden():
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    t = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [-5.0, 0.0]]])
    assert pair_loss(s, t, MASK, kind="cosine").item() == pytest.approx(0.5)  # (1 - 0 + 1 - 1) / 2


def test_token_l2_golden():
    s = torch.tensor([[[3.0, 4.0]]])
    t = torch.tensor([[[0.0, 1.0]]])
    mask = torch.ones(1, 1).bool()
    loss = pair_loss(normalise_hidden(s, mask, "token_l2"), normalise_hidden(t, mask, "token_l2"), mask)
    assert loss.item() == pytest.approx((0.6**2 + 0.2**2) / 2)


def test_layer_zscore_golden_and_scale_invariant():
    z = normalise_hidden(S, MASK, "layer_zscore")
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(1.25 + 1e-6)
    torch.testing.assert_close(z[0, :2].reshape(-1), expected)
    teacher = S * 10 + 3  # z-scoring removes scale and shift
    loss = pair_loss(z, normalise_hidden(teacher, MASK, "layer_zscore"), MASK)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_bert_released_reduction_golden_is_element_mean_times_width_over_batch():
    # per token sum over width: 1+4 = 5 and 9+16 = 25; summed over valid tokens 30; / (batch 1 * 2 valid tokens)
    assert pair_loss(S, ZERO, MASK, reduction="bert_released").item() == pytest.approx(15.0)
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 6, 8, generator=g), torch.randn(4, 6, 8, generator=g)
    mask = torch.rand(4, 6, generator=g) > 0.3
    element = pair_loss(s, t, mask, reduction="element_mean")
    released = pair_loss(s, t, mask, reduction="bert_released")
    assert released.item() == pytest.approx(element.item() * 8 / 4, rel=1e-6)  # x width / batch
    # the paper's scale note: at width 384 and batch 32 the released weight 3 is weight 36 of the element mean
    assert 3 * 384 / 32 == 36


def test_a_user_registered_hidden_loss_is_used_like_the_built_ins():
    @HIDDEN_KINDS.register("absolute")
    def absolute(student, teacher):
        return (student - teacher).abs()

    try:
        assert pair_loss(S, ZERO, MASK, kind="absolute").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
        check_loss_settings(LossSettings(hidden_kind="absolute"))  # a registered name validates
    finally:
        HIDDEN_KINDS.remove("absolute")
    with pytest.raises(
        ValueError, match=r"distill.loss.hidden_kind must be one of \['cosine', 'mse'\], got 'absolute'"
    ):
        check_loss_settings(LossSettings(hidden_kind="absolute"))


@pytest.mark.parametrize("reduction", HIDDEN_REDUCTIONS.names())
@pytest.mark.parametrize("norm", HIDDEN_NORMS.names())
@pytest.mark.parametrize("kind", HIDDEN_KINDS.names())
def test_pads_never_count(norm, kind, reduction):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).bool()
    s2, t2 = s.clone(), t.clone()
    s2[1, 3:] = 1e3
    t2[1, 3:] = -7.0
    maps = {"encoder": [(0, 0), (1, 1)]}
    a, _ = hidden_loss(
        {"encoder": [s, s]}, {"encoder": [t, t]}, maps, {"encoder": mask}, kind=kind, norm=norm, reduction=reduction
    )
    b, _ = hidden_loss(
        {"encoder": [s2, s2]}, {"encoder": [t2, t2]}, maps, {"encoder": mask}, kind=kind, norm=norm, reduction=reduction
    )
    torch.testing.assert_close(a, b)


def test_hidden_loss_pairs_stacks_and_reduction():
    # student states: 0 -> S, 1 -> S/2; teacher states all zero
    student = {"encoder": [S, S / 2], "decoder": [S]}
    teacher = {"encoder": [ZERO, ZERO], "decoder": [ZERO, ZERO]}
    masks = {"encoder": MASK, "decoder": MASK}
    maps = {"encoder": [(0, 0), (1, 1)], "decoder": [(0, 1)]}
    mean, per_stack = hidden_loss(student, teacher, maps, masks)
    # encoder: mean(7.5, 7.5 / 4) = 4.6875; decoder: 7.5; stacks summed
    assert per_stack["encoder"].item() == pytest.approx(4.6875)
    assert per_stack["decoder"].item() == pytest.approx(7.5)
    assert mean.item() == pytest.approx(12.1875)
    _summed, per_stack = hidden_loss(student, teacher, maps, masks, pair_reduction="sum")
    assert per_stack["encoder"].item() == pytest.approx(9.375)
    empty, per_stack = hidden_loss(student, teacher, {"encoder": [], "decoder": []}, masks)
    assert empty.item() == 0.0 and per_stack == {}


def test_prediction_kd_golden_sequence_level():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p_t = [0.75, 0.25]
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert prediction_kd(student, teacher).item() == pytest.approx(expected)
    assert prediction_kd(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_prediction_kd_temperature_scaled_by_t_squared():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    temp = 2.0
    p_t = torch.softmax(t / temp, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / temp, -1))).sum(-1).mean()
    assert prediction_kd(s, t, temperature=temp).item() == pytest.approx(kl.item() * temp**2, rel=1e-5)


def test_prediction_kd_token_level_excludes_non_targets():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    s2 = s.clone()
    s2[1, 2:] = 50.0
    torch.testing.assert_close(prediction_kd(s, t, mask=mask), prediction_kd(s2, t, mask=mask))
    per_token = torch.stack(
        [prediction_kd(s[b, i][None], t[b, i][None]) for b in range(2) for i in range(4) if mask[b, i]]
    )
    torch.testing.assert_close(prediction_kd(s, t, mask=mask), per_token.mean())


def test_total_loss_weights():
    config = LossConfig(ce=1.0, kd=0.5, hidden=3.0)
    assert total_loss(torch.tensor(2.0), torch.tensor(4.0), torch.tensor(1.0), config).item() == pytest.approx(7.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden=-1.0), "hidden\n.*loss weights must be numbers >= 0, got -1.0"),
        (dict(kd=float("nan")), "kd\n.*loss weights must be numbers >= 0, got nan"),
        (dict(ce="1"), "ce\n.*loss weights must be numbers >= 0, got '1'"),
        (dict(temperature=0), "temperature\n.*greater than 0"),
        (dict(pair_reduction="max"), "pair_reduction\n.*'mean' or 'sum'"),
    ],
)
def test_loss_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**kwargs)


@pytest.mark.parametrize(
    "field, value", [("hidden_norm", "zscore"), ("hidden_kind", "l1"), ("hidden_reduction", "sum")]
)
def test_unknown_registered_names_are_refused_listing_the_registry(field, value):
    with pytest.raises(ValueError, match=f"distill.loss.{field} must be one of .*got '{value}'"):
        check_loss_settings(LossConfig(**{field: value}))
    with pytest.raises(ValueError, match="unknown hidden"):  # and at use
        hidden_loss(
            {"encoder": [S]},
            {"encoder": [S]},
            {"encoder": [(0, 0)]},
            {"encoder": MASK},
            **{"kind" if field == "hidden_kind" else "norm" if field == "hidden_norm" else "reduction": value},
        )


def test_projection_keys_union_over_maps():
    maps = [{"encoder": [(0, 0), (1, 4)]}, {"encoder": [(1, 5), (2, 8)], "decoder": [(3, 3)]}]
    assert projection_keys(maps) == ["decoder_3", "encoder_0", "encoder_1", "encoder_2"]
    assert projection_keys(maps[0]) == ["encoder_0", "encoder_1"]


def test_projections_are_registered_trained_and_absent_when_widths_match():
    teacher = tiny_model("bert", depth=4, width=32)
    same = build_student(teacher, depth=2)
    assert attach_projections(same, ["encoder_1"], teacher_width=32) is None
    assert not hasattr(same, "raykd_projections")

    student = build_student(teacher, depth=2, width=16)
    projections = attach_projections(student, ["encoder_1", "encoder_2"], teacher_width=32)
    assert isinstance(projections, Projections)
    names = [n for n, _ in student.named_parameters()]
    assert "raykd_projections.layers.encoder_1.weight" in names  # the optimizer sees it
    assert any(k.startswith("raykd_projections.") for k in student.state_dict())  # checkpoints save it

    s = torch.randn(2, 3, 16)
    t = torch.randn(2, 3, 32)
    mask = torch.ones(2, 3).bool()
    loss, _ = hidden_loss(
        {"encoder": [s, s, s]},
        {"encoder": [t] * 5},
        {"encoder": [(1, 4), (2, 4)]},
        {"encoder": mask},
        projections=projections,
    )
    loss.backward()
    for key in ("encoder_1", "encoder_2"):
        grad = projections.layers[key].weight.grad
        assert grad is not None and grad.abs().sum() > 0
