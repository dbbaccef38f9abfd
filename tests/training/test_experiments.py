"""The experiment grid (--quick), its summary, the length curriculum, the long-memory search and the speed benchmark."""

import json
import math

import pytest
import torch

from benchmarks.models import train_speed
from digitlab.checkpoint import read_checkpoint
from training import experiments, long_memory, palindrome
from training.palindrome import TrainConfig, length_range


def test_quick_grid_writes_results_and_figures_and_repeats_exactly(tmp_path):
    first = experiments.main(["--quick", "--out-dir", str(tmp_path / "a")])
    second = experiments.main(["--quick", "--out-dir", str(tmp_path / "b")])
    for name in ("histories.csv", "summary.json", "curves.png", "final_accuracy.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    assert len(list((tmp_path / "a" / "runs").glob("*.json"))) == 4  # {lstm, rnn} x 2 lengths x 1 seed
    assert first == second  # same seeds -> same numbers on the CPU
    assert (tmp_path / "a" / "histories.csv").read_bytes() == (tmp_path / "b" / "histories.csv").read_bytes()
    header = (tmp_path / "a" / "histories.csv").read_text().splitlines()[0]
    assert header == ",".join(experiments.HISTORY_FIELDS)


def test_resume_reads_saved_runs_instead_of_training(tmp_path, monkeypatch):
    out = tmp_path / "grid"
    before = experiments.main(["--quick", "--out-dir", str(out)])

    def no_training(*_):
        raise AssertionError("a saved run was trained again")

    monkeypatch.setattr(experiments, "run_one", no_training)
    assert experiments.main(["--quick", "--resume", "--out-dir", str(out)]) == before


def test_summary_gives_mean_and_sample_std_over_seeds_and_steps_to_solve():
    curves = ([0.5, 0.995, 1.0], [0.5, 0.9, 0.99], [0.5, 0.6, 0.8])  # solved at 200, at 300, never
    runs = [
        {
            "config": {"model": "lstm", "max_length": 5, "seed": seed},
            "final_accuracy": acc[-1],
            "history": [{"step": 100 * (i + 1), "eval_accuracy": a, "eval_loss": 1.0} for i, a in enumerate(acc)],
        }
        for seed, acc in enumerate(curves)
    ]
    (row,) = experiments.summarise(runs)
    assert (row["model"], row["length"], row["seeds"]) == ("lstm", 5, [0, 1, 2])
    assert row["final_accuracy"] == pytest.approx({"mean": 0.93, "std": 0.11269428, "min": 0.8, "max": 1.0})
    assert row["solved"] == 2
    assert row["steps_to_solve"]["mean"] == 250
    assert experiments.steps_to_solve(runs[2]["history"]) is None


def test_curriculum_grows_the_longest_length_then_keeps_the_full_range():
    cfg = TrainConfig(min_length=3, max_length=53, curriculum_steps=100)
    assert length_range(cfg, 0) == (3, 3)
    assert length_range(cfg, 50) == (3, 28)
    assert length_range(cfg, 99) == (3, 52)
    assert length_range(cfg, 100) == length_range(cfg, 10_000) == (3, 53)
    assert length_range(TrainConfig(min_length=3, max_length=15), 0) == (3, 15)  # no curriculum: whole range


def test_long_memory_search_stops_at_the_first_failure(tmp_path, monkeypatch):
    accuracy_at = {20: 1.0, 30: 0.995, 50: 0.7, 100: 1.0}
    trained = []

    def fake_train_to(cfg, samples, checkpoint):
        trained.append(cfg.max_length)
        return {"config": {"max_length": cfg.max_length}, "accuracy_at_T": accuracy_at[cfg.max_length]}

    monkeypatch.setattr(long_memory, "train_to", fake_train_to)
    runs = long_memory.search(TrainConfig(), "rnn", [100, 20, 50, 30], 0.99, 10, tmp_path, tmp_path, resume=False)
    assert trained == [20, 30, 50]
    assert long_memory.t_max(runs, 0.99) == 30
    assert json.loads((tmp_path / "rnn_T50.json").read_text())["accuracy_at_T"] == 0.7
    assert long_memory.t_max(runs[2:], 0.99) is None


def test_speed_benchmark_times_both_variants_for_the_requested_steps(monkeypatch):
    calls = {v: [] for v in train_speed.VARIANTS}  # per variant: (T, logits) of every training forward

    def counted(variant, forward):
        def run(net, digits):
            logits = forward(net, digits)
            calls[variant].append((digits.shape[1], logits.detach().clone()))
            return logits

        return run

    monkeypatch.setattr(train_speed, "VARIANTS", {v: counted(v, f) for v, f in train_speed.VARIANTS.items()})
    medians = train_speed.main(["--lengths", "4", "6", "--steps", "3", "--warmup", "1", "--repeats", "2"])
    assert list(medians) == [4, 6] and all(list(m) == list(calls) for m in medians.values())
    assert all(math.isfinite(s) and s > 0 for m in medians.values() for s in m.values())
    for variant, seen in calls.items():  # repeats x (warmup + steps) training steps per length, in order
        assert [t for t, _ in seen] == [4] * 8 + [6] * 8, variant
    fused, loop = calls.values()  # same weights and batch: the two forwards agree at every step
    for (_, a), (_, b) in zip(fused, loop):
        assert torch.allclose(a, b, atol=1e-4)


def test_long_memory_scores_every_kth_length_and_always_t_max():
    assert long_memory.scored_lengths(3, 200, 10) == [*range(3, 200, 10), 200]
    assert long_memory.scored_lengths(3, 6, 1) == [3, 4, 5, 6]


def test_long_memory_resume_keeps_other_models_and_recorded_scores(tmp_path, monkeypatch):
    scored = []  # checkpoints whose per-length accuracy was computed
    monkeypatch.setattr(
        long_memory,
        "train_to",
        lambda cfg, samples, checkpoint: {
            "config": {"max_length": cfg.max_length},
            "accuracy_at_T": 1.0,
            "history": [],
        },
    )
    monkeypatch.setattr(long_memory, "load_model", lambda path: path)
    monkeypatch.setattr(
        long_memory,
        "accuracy_per_length",
        lambda net, lengths, samples, seed: scored.append(net.name) or {t: 1.0 for t in lengths},
    )
    monkeypatch.setattr(long_memory, "plot_long_memory", lambda *args: None)
    common = ["--out-dir", str(tmp_path), "--checkpoints", str(tmp_path / "none"), "--per-length-every", "10"]
    first = long_memory.main([*common, "--lengths", "20"])
    assert scored == ["lstm_T20.pt", "rnn_T20.pt"]
    again = long_memory.main([*common, "--models", "rnn", "--lengths", "20", "40", "--resume"])
    assert list(again) == ["lstm", "rnn"] and again["lstm"]["t_max"] == first["lstm"]["t_max"] == 20
    assert again["rnn"]["t_max"] == 40 and list(again["rnn"]["per_length"]) == [3, 13, 23, 33, 40]
    assert scored[2:] == ["rnn_T40.pt"]  # LSTM kept from the first run, not retrained or rescored
    long_memory.main([*common, "--models", "rnn", "--lengths", "20", "40", "--resume"])
    assert scored[3:] == []  # no checkpoint, same T_max: the recorded per-length scores are kept


def test_long_memory_adopts_a_longer_training_of_the_recipe(tmp_path, monkeypatch):
    trained = tmp_path / "lstm.pt"
    palindrome.main(
        [
            "--model",
            "lstm",
            "--max-length",
            "5",
            "--encoding",
            "onehot",
            "--hidden-dim",
            "8",
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--final-samples",
            "20",
            "--out",
            str(trained),
        ]
    )
    monkeypatch.setattr(long_memory, "train_to", lambda *args: pytest.fail("an adopted run is not trained again"))
    monkeypatch.setattr(long_memory, "plot_long_memory", lambda *args: None)
    results = long_memory.main(
        [
            "--adopt",
            str(trained),
            "--models",
            "lstm",
            "--lengths",
            "5",
            "--target",
            "0",
            "--samples",
            "20",
            "--out-dir",
            str(tmp_path),
            "--checkpoints",
            str(tmp_path / "ckpt"),
        ]
    )
    meta = read_checkpoint(trained)["meta"]
    (run,) = results["lstm"]["runs"]
    assert run["accuracy_at_T"] == meta["accuracy"]["5"] and run["config"]["steps"] == 4
    assert results["lstm"]["t_max"] == 5 and (tmp_path / "ckpt" / "lstm_T5.pt").exists()
    assert results["lstm"]["per_length"][5] == meta["accuracy"]["5"]  # same seeds as the training's own report
