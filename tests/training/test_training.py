"""Training smoke runs: the CLI's --dry-run, and a tiny run that must actually learn."""

import torch

from digitlab.checkpoint import load_model_and_meta
from digitlab.palindrome import accuracy
from training import palindrome as train_palindrome


def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "p.pt"
    per_length = train_palindrome.main(["--dry-run", "--min-length", "3", "--max-length", "5", "--out", str(out)])
    assert set(per_length) == {3, 4, 5}
    assert not out.exists()


def test_a_short_run_learns_and_saves_a_self_describing_checkpoint(tmp_path):
    out = tmp_path / "p.pt"
    argv = [
        "--length",
        "3",
        "--steps",
        "300",
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--hidden-dim",
        "32",
        "--eval-every",
        "100",
        "--final-samples",
        "500",
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    per_length = train_palindrome.main(argv)
    assert per_length[3] >= 0.95  # chance is 0.10
    model, meta = load_model_and_meta(out)
    assert (meta["min_length"], meta["max_length"]) == (3, 3)
    assert meta["history"][-1]["step"] == 300
    assert accuracy(model, 3, 500, seed=123) >= 0.95


def test_cosine_schedule_decays_to_zero():
    cfg = train_palindrome.TrainConfig(lr=1e-3, lr_schedule="cosine", steps=100)
    assert train_palindrome.learning_rate(cfg, 0) == 1e-3
    assert abs(train_palindrome.learning_rate(cfg, 100)) < 1e-12
    assert train_palindrome.learning_rate(train_palindrome.TrainConfig(), 50) == 1e-3


def test_the_shipped_model_answers_every_served_length():
    model, meta = load_model_and_meta("weights/palindrome_lstm.pt")
    low, high = meta["min_length"], meta["max_length"]
    assert low <= 3 and high >= 15
    for length in range(low, 16):  # the short lengths at the served bar, on fresh palindromes
        assert accuracy(model, length, 1000, seed=length) >= 0.999, length
    for length in sorted({(15 + high) // 2, high}):  # and the long end of the range
        assert accuracy(model, length, 1000, seed=length) >= 0.99, length
    assert isinstance(torch.load("weights/palindrome_lstm.pt", weights_only=True)["state_dict"], dict)
