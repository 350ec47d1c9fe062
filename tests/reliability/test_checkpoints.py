"""Trial checkpoints: complete ones restore everything; corrupt or partial ones are detected before anything
is applied (the trial starts over); the store commits atomically and keeps only the newest."""

import json

import pytest
import torch

from raykd.config import TrainConfig
from raykd.student import build_student
from raykd.train.checkpoint import CheckpointStore, read_checkpoint, write_checkpoint
from raykd.train.optim import make_optimizer
from tests.tiny import tiny_model

STATE = {"epoch": 0, "step": 1, "step_in_epoch": 1, "best": 0.5, "best_step": 1, "evaluated_at": 1, "final": False}


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


def save(folder, student, optimizer, scheduler, state=STATE, best=True):
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.clone() for k, v in student.state_dict().items()} if best else None
    write_checkpoint(
        folder, student=student, best_weights=weights, optimizer=optimizer, scheduler=scheduler, state=state
    )


def test_intact_checkpoint_restores_everything(tmp_path):
    teacher, student, optimizer, scheduler = trained_pair()
    torch.manual_seed(123)
    save(tmp_path, student, optimizer, scheduler)
    expected_draw = torch.rand(3)
    other, other_opt, other_sched = fresh(teacher)
    restored = read_checkpoint(tmp_path, other)
    assert restored.state == STATE and set(restored.best_weights) == set(student.state_dict())
    for (name, a), b in zip(student.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    other_opt.load_state_dict(restored.optimizer)
    other_sched.load_state_dict(restored.scheduler)
    assert other_sched.state_dict()["last_epoch"] == 1 and other_opt.state_dict()["state"]
    torch.manual_seed(999)
    torch.set_rng_state(restored.rng["torch"])  # the random streams continue where they were saved
    assert torch.equal(torch.rand(3), expected_draw)


@pytest.mark.parametrize(
    "victim",
    ["student/model.safetensors", "optimizer.pt", "scheduler.pt", "rng.0.pt", "state.json", "best.safetensors"],
)
def test_truncated_file_is_detected_and_nothing_is_applied(tmp_path, victim):
    teacher, student, optimizer, scheduler = trained_pair()
    save(tmp_path, student, optimizer, scheduler)
    path = tmp_path / victim
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a partial write
    other, _, _ = fresh(teacher)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.warns(UserWarning, match="is unreadable .*starting over"):
        result = read_checkpoint(tmp_path, other)
    assert isinstance(result, str) and "unreadable" in result
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # the fresh student is untouched


def test_missing_file_is_detected(tmp_path):
    teacher, student, optimizer, scheduler = trained_pair()
    save(tmp_path, student, optimizer, scheduler, best=False)
    (tmp_path / "optimizer.pt").unlink()
    other, _, _ = fresh(teacher)
    with pytest.warns(UserWarning, match="FileNotFoundError"):
        assert isinstance(read_checkpoint(tmp_path, other), str)


def test_final_checkpoint_holds_weights_only(tmp_path):
    teacher, student, optimizer, scheduler = trained_pair()
    save(tmp_path, student, optimizer, scheduler, state={**STATE, "final": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "state.json", "student"]
    restored = read_checkpoint(tmp_path, fresh(teacher)[0])
    assert restored.optimizer is None and restored.rng is None and restored.state["final"]


def test_store_commits_whole_checkpoints_and_keeps_the_newest(tmp_path):
    store = CheckpointStore(tmp_path, "trial-a")
    assert store.latest() is None

    def writer(step):
        def write(folder):
            (folder / "state.json").write_text(json.dumps({"step": step}))

        return write

    store.save(4, writer(4))
    store.save(8, writer(8))
    assert store.latest().name == "step-8" and [p.name for p in store.folder.iterdir()] == ["step-8"]

    def dies(folder):  # a kill mid-write leaves the staging folder, never a half checkpoint
        (folder / "state.json").write_text("{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.save(12, dies)
    assert store.latest().name == "step-8"
    store.save(12, writer(12))
    assert store.latest().name == "step-12" and json.loads((store.latest() / "state.json").read_text()) == {"step": 12}


def test_a_store_on_remote_storage_commits_with_a_marker_and_restores(tmp_path):
    """Object stores have no rename: each rank uploads its part, rank 0 writes COMPLETE last; a checkpoint without
    the marker (an upload cut short) is never taken. Exercised on fsspec's in-memory file system through pyarrow."""
    from fsspec.implementations.memory import MemoryFileSystem
    from pyarrow import fs

    memory = fs.PyFileSystem(fs.FSSpecHandler(MemoryFileSystem()))
    store = CheckpointStore("/bucket/study/checkpoints", "trial-r", filesystem=memory)
    assert store.remote and store.latest() is None
    teacher, student, optimizer, scheduler = trained_pair()
    store.save(3, lambda folder: save(folder, student, optimizer, scheduler))
    store.save(5, lambda folder: save(folder, student, optimizer, scheduler, state={**STATE, "step": 5}))
    assert store.latest() == "/bucket/study/checkpoints/trial-r/step-5"
    assert [i.base_name for i in memory.get_file_info(fs.FileSelector(store.path))] == ["step-5"]  # older deleted
    memory.create_dir(f"{store.path}/step-9")  # an upload that never finished: no marker
    with memory.open_output_stream(f"{store.path}/step-9/state.json") as part:
        part.write(b"{}")
    assert store.latest().endswith("step-5")
    with store.open(store.latest()) as folder:
        restored = read_checkpoint(folder, fresh(teacher)[0])
    assert restored.state["step"] == 5 and restored.optimizer is not None


def test_optimizer_state_of_other_parameter_shapes_is_refused_before_anything_is_applied(tmp_path):
    """A checkpoint of a student that trained every embedding row, resumed by one that trains only the rows in use
    (`raykd.train.vocab`, as after an upgrade mid-study): refused with the reason, so the trial starts over instead
    of failing at its next step."""
    from raykd.train.vocab import compact_word_embeddings

    teacher, student, optimizer, scheduler = trained_pair()
    save(tmp_path, student, optimizer, scheduler)
    other, _, _ = fresh(teacher)
    assert compact_word_embeddings(other, range(0, 50))  # half of the tiny vocabulary
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.warns(UserWarning, match="unreadable"):
        reason = read_checkpoint(tmp_path, other)
    assert isinstance(reason, str) and "optimizer state exp_avg of parameter 0 has shape" in reason
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
