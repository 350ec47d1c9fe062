"""Corrupt or partial trial checkpoints: detected before anything is applied; the trial starts over."""

import pytest
import torch

from raykd.config import TrainConfig
from raykd.student import build_student
from raykd.train.optim import make_optimizer
from raykd.train.worker import _restore, _save
from tests.tiny import tiny_model


def trained_pair():
    teacher = tiny_model("bert", depth=4)
    student = build_student(teacher, depth=2, init="random", seed=0)
    optimizer, scheduler = make_optimizer(student.parameters(), TrainConfig(lr=1e-3), 10)
    student(input_ids=torch.randint(3, 100, (2, 5)), labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    scheduler.step()
    return teacher, student, optimizer, scheduler


def fresh(teacher):
    student = build_student(teacher, depth=2, init="random", seed=1)
    optimizer, scheduler = make_optimizer(student.parameters(), TrainConfig(lr=1e-3), 10)
    return student, optimizer, scheduler


def test_intact_checkpoint_restores_everything(tmp_path):
    teacher, student, optimizer, scheduler = trained_pair()
    state = {"epoch": 0, "step": 1, "step_in_epoch": 1, "best": 0.5, "best_step": 1, "evaluated_at": 1}
    _save(tmp_path, student, {k: v.clone() for k, v in student.state_dict().items()}, optimizer, scheduler, state)
    other, other_opt, other_sched = fresh(teacher)
    restored_state, best = _restore(tmp_path, other, other_opt, other_sched)
    assert restored_state == state and set(best) == set(student.state_dict())
    for (name, a), b in zip(student.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert other_sched.state_dict()["last_epoch"] == 1 and other_opt.state_dict()["state"]


@pytest.mark.parametrize("victim", ["student/model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt",
                                    "state.json", "best.safetensors"])
def test_truncated_file_is_detected_and_nothing_is_applied(tmp_path, victim):
    teacher, student, optimizer, scheduler = trained_pair()
    _save(tmp_path, student, {k: v.clone() for k, v in student.state_dict().items()}, optimizer, scheduler,
          {"epoch": 0, "step": 1, "step_in_epoch": 1, "best": None, "best_step": None, "evaluated_at": None})
    path = tmp_path / victim
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a partial write
    other, other_opt, other_sched = fresh(teacher)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.warns(UserWarning, match="is unreadable .*starting over"):
        result = _restore(tmp_path, other, other_opt, other_sched)
    assert isinstance(result, str) and "unreadable" in result
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # the fresh student is untouched
    assert other_sched.state_dict()["last_epoch"] == 0


def test_missing_file_is_detected(tmp_path):
    teacher, student, optimizer, scheduler = trained_pair()
    _save(tmp_path, student, None, optimizer, scheduler, {"epoch": 0, "step": 1})
    (tmp_path / "optimizer.pt").unlink()
    other, other_opt, other_sched = fresh(teacher)
    with pytest.warns(UserWarning, match="FileNotFoundError"):
        assert isinstance(_restore(tmp_path, other, other_opt, other_sched), str)
