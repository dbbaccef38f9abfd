"""Smoke runs of the training, scoring and figure CLIs on tiny fake MNIST (no real data, a few seconds each)."""

import pytest
import torch

from digitlab.checkpoint import load_model, read_checkpoint
from digitlab.mnist import load_mnist, write_fake_mnist
from training import classifier as classifier_cli
from training import gan as gan_cli
from training import gan_figures, score_gan

TINY_GAN = ["--batch-size", "16", "--score-n", "64", "--sample-every", "2", "--score-every", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(write_fake_mnist(tmp_path_factory.mktemp("data"), n_train=128, n_test=64))


@pytest.fixture(scope="module")
def classifier_path(data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "classifier.pt"
    classifier_cli.main(["--data-dir", data_dir, "--epochs", "2", "--batch-size", "16", "--out", str(path)])
    return path


def test_fake_mnist_is_read_by_torchvision_in_the_tanh_range(data_dir):
    images, labels = load_mnist(data_dir, train=True).tensors
    assert images.shape == (128, 1, 28, 28) and labels.shape == (128,)
    assert images.min() == -1 and images.max() == 1


def test_classifier_checkpoint_is_self_describing(classifier_path):
    payload = read_checkpoint(classifier_path)  # weights_only=True
    assert payload["kind"] == "classifier" and payload["meta"]["test_accuracy"] > 0.5  # fake digits are easy
    assert not load_model(classifier_path, expect="classifier").training


def test_classifier_dry_run_writes_nothing(data_dir, tmp_path):
    classifier_cli.main(["--data-dir", data_dir, "--dry-run", "--out", str(tmp_path / "c.pt")])
    assert not list(tmp_path.iterdir())


def test_gan_dry_run_writes_nothing(data_dir, classifier_path, tmp_path):
    gan_cli.main(
        ["--dry-run", "--data-dir", data_dir, "--classifier", str(classifier_path), "--out-dir", str(tmp_path / "run")]
    )
    assert not (tmp_path / "run").exists()


def test_gan_run_logs_and_resumes_exactly(data_dir, classifier_path, tmp_path):
    common = [
        "--data-dir",
        data_dir,
        "--classifier",
        str(classifier_path),
        "--schedule",
        "5:2",
        "--ema",
        "0.9",
        *TINY_GAN,
    ]
    whole = gan_cli.main([*common, "--steps", "6", "--out-dir", str(tmp_path / "whole")])
    gan_cli.main([*common, "--steps", "4", "--out-dir", str(tmp_path / "split")])
    split = gan_cli.main([*common, "--steps", "6", "--resume", "--out-dir", str(tmp_path / "split")])

    run = tmp_path / "split"
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"iter_{i:06d}.png" for i in (0, 2, 4, 6)]
    assert (run / "losses.png").exists() and len((run / "losses.csv").read_text().splitlines()) == 1 + 6
    assert len((run / "scores.csv").read_text().splitlines()) == 1 + 3
    meta = read_checkpoint(split)["meta"]
    assert meta["iteration"] == 6 and meta["batches"] == 15 and {"fid", "inception_score", "kl_uniform"} <= set(meta)
    assert meta["ema"] == 0.9 and meta["ema_from"] == 0  # generator.pt holds the weight average
    a, b = load_model(whole, expect="generator"), load_model(split, expect="generator")
    for key, value in a.state_dict().items():  # same data order, same noise: resuming changes nothing
        assert torch.allclose(value.float(), b.state_dict()[key].float()), key


def test_learning_rate_is_constant_then_falls_linearly_to_zero():
    assert [gan_cli.learning_rate(1.0, i, 100, 0.5) for i in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert gan_cli.learning_rate(1.0, 99, 100, 0.0) == 1.0  # no decay: constant to the end


def select(scores: list[dict]) -> dict:
    best = None
    for score in scores:
        if gan_cli.is_better(score, best, max_kl=0.008):
            best = score
    return best


def test_selection_takes_the_lowest_fid_among_balanced_scores():
    assert select(
        [
            {"fid": 10, "kl_uniform": 0.03},
            {"fid": 30, "kl_uniform": 0.005},
            {"fid": 10, "kl_uniform": 0.02},
            {"fid": 20, "kl_uniform": 0.008},
            {"fid": 25, "kl_uniform": 0.001},
        ]
    ) == {"fid": 20, "kl_uniform": 0.008}
    # FID 10 is lower, but its classes are lopsided; with no balanced score at all, the most balanced one
    assert select(
        [{"fid": 10, "kl_uniform": 0.03}, {"fid": 30, "kl_uniform": 0.01}, {"fid": 5, "kl_uniform": 0.02}]
    ) == {"fid": 30, "kl_uniform": 0.01}


def test_spectral_norm_and_lr_decay_runs_select_a_best_checkpoint(data_dir, classifier_path, tmp_path):
    gan_cli.main(
        [
            "--data-dir",
            data_dir,
            "--classifier",
            str(classifier_path),
            "--schedule",
            "1:1",
            "--steps",
            "4",
            "--spectral-norm",
            "--lr-decay",
            "0.5",
            "--select-max-kl",
            "10",
            *TINY_GAN,
            "--out-dir",
            str(tmp_path),
        ]
    )
    scores = [line.split(",") for line in (tmp_path / "scores.csv").read_text().splitlines()[1:]]
    best = read_checkpoint(tmp_path / "best.pt")["meta"]
    assert best["fid"] == min(float(row[3]) for row in scores) and best["spectral_norm"] and best["lr_decay"] == 0.5
    assert len(best["histogram"]) == 10
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["best"]["iteration"] == best["iteration"]
    assert any("parametrizations" in key for key in state["discriminator"])  # the spectrally normalised D was trained


def test_gan_average_can_start_at_resume(data_dir, tmp_path):
    common = ["--data-dir", data_dir, "--classifier", "", *TINY_GAN, "--out-dir", str(tmp_path)]
    gan_cli.main([*common, "--steps", "2"])
    gan_cli.main([*common, "--steps", "4", "--resume", "--ema", "0.5"])
    meta = read_checkpoint(tmp_path / "generator.pt")["meta"]
    assert (meta["iteration"], meta["ema"], meta["ema_from"]) == (4, 0.5, 2)
    assert "average" in torch.load(tmp_path / "state.pt", weights_only=True)


def test_gan_resume_refuses_another_schedule(data_dir, tmp_path):
    common = ["--data-dir", data_dir, "--classifier", "", *TINY_GAN, "--out-dir", str(tmp_path)]
    gan_cli.main([*common, "--schedule", "1:1", "--steps", "2"])
    with pytest.raises(ValueError, match="schedule"):
        gan_cli.main([*common, "--schedule", "5:2", "--steps", "4", "--resume"])


def test_score_and_figures_from_tiny_runs(data_dir, classifier_path, tmp_path):
    runs = []
    for schedule in ("1:1", "5:2"):
        runs.append(tmp_path / schedule.replace(":", "-"))
        gan_cli.main(
            [
                "--data-dir",
                data_dir,
                "--classifier",
                str(classifier_path),
                "--schedule",
                schedule,
                "--steps",
                "4",
                *TINY_GAN,
                "--out-dir",
                str(runs[-1]),
            ]
        )
    scores = score_gan.main(
        [
            str(runs[-1] / "generator.pt"),
            "--classifier",
            str(classifier_path),
            "--data-dir",
            data_dir,
            "--n",
            "64",
            "--record",
        ]
    )
    assert set(scores) == {"generator", "real_train_images"} and scores["generator"]["n"] == 64
    meta = read_checkpoint(runs[-1] / "generator.pt")["meta"]
    assert meta["scores"]["fid"] == scores["generator"]["fid"] and meta["iteration"] == 4

    out = tmp_path / "docs"
    gan_figures.main(
        [
            "--runs",
            *map(str, runs),
            "--generator",
            str(runs[-1] / "generator.pt"),
            "--classifier",
            str(classifier_path),
            "--min-confidence",
            "0",
            "--budget",
            "16",
            "--frames",
            "4",
            "--out-dir",
            str(out),
        ]
    )
    expected = {
        "samples_over_training.png",
        "losses.png",
        "scores.png",
        "generator_samples.png",
        "interpolation.png",
        "interpolation_lerp.png",
        "interpolation_slerp.png",
        "interpolation_lerp.gif",
        "interpolation_slerp.gif",
    }
    assert expected <= {p.name for p in out.iterdir()}


def test_a_conditional_run_draws_the_digits_it_is_asked_for_and_resumes_exactly(data_dir, classifier_path, tmp_path):
    """--conditional: an AC-GAN whose checkpoint is a class-conditional generator, scored for fidelity too."""
    common = ["--data-dir", data_dir, "--classifier", str(classifier_path), "--conditional", "--r1", "1", *TINY_GAN]
    whole = gan_cli.main([*common, "--ema", "0.9", "--steps", "4", "--out-dir", str(tmp_path / "whole")])
    gan_cli.main([*common, "--ema", "0.9", "--steps", "2", "--out-dir", str(tmp_path / "split")])
    split = gan_cli.main([*common, "--ema", "0.9", "--steps", "4", "--resume", "--out-dir", str(tmp_path / "split")])
    payload = read_checkpoint(split)
    assert payload["config"]["classes"] == 10 and 0 <= payload["meta"]["fidelity"] <= 1
    assert payload["meta"]["aux_weight"] == 1.0
    generator = load_model(split, expect="generator")
    with torch.no_grad():
        images = generator(torch.randn(3, 100), torch.tensor([0, 5, 9]))
    assert images.shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="needs the digits"):
        generator(torch.randn(1, 100))
    a = load_model(whole, expect="generator")
    for key, value in a.state_dict().items():
        assert torch.allclose(value.float(), generator.state_dict()[key].float()), key


def test_the_judge_trains_on_jittered_digits_and_records_its_own_ceiling(data_dir, tmp_path):
    from training import judge

    out = tmp_path / "judge.pt"
    scores = judge.main(["--data-dir", data_dir, "--epochs", "2", "--batch-size", "16", "--out", str(out)])
    meta = read_checkpoint(out)["meta"]
    assert meta["test_accuracy"] == scores["test_accuracy"] and 0 <= meta["confident_share"] <= 1
    assert load_model(out, expect="judge").config.channels == (20, 50)
    images = torch.full((4, 1, 28, 28), -1.0)
    images[:, :, 10:18, 10:18] = 1.0
    moved = judge.jitter(images, shift=2, rotate=0, generator=torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and not torch.equal(moved, images)  # shifted, background stays -1
    assert moved.min() >= -1 - 1e-6 and (moved == -1).float().mean() > 0.8


def test_a_checkpoint_ships_only_when_it_meets_every_target():
    from training.select_gan import Targets, qualifies

    targets = Targets(max_fid=14.2, max_kl=0.008, min_share=0.085, max_share=0.115)
    good = {"fid": 7.0, "kl_uniform": 0.004, "histogram": [0.1] * 10}
    assert qualifies(good, targets)
    assert not qualifies({**good, "fid": 15.0}, targets)
    assert not qualifies({**good, "histogram": [0.08] + [0.1022] * 9}, targets)  # one digit too rare
