"""Train the report's MLP GAN on MNIST under a D:G schedule, logging samples, losses and scores.

    python -m training.gan --schedule 5:2 --steps 20000 --data-dir ../shared/data --threads 1 --out-dir runs/gan-5-2

Vocabulary (docs/GAN.md): an *iteration* is one generator update. A *round* of schedule D:G takes D
discriminator steps, each on a fresh real batch, then G generator steps; so 5:2 runs 2.5 discriminator
steps and 2.5 real batches per iteration, 1:1 runs one. An *epoch* is 60,000 / batch real batches.

Output in --out-dir: samples/iter_NNNNNN.png (a fixed latent batch), losses.csv + losses.png,
scores.csv (classifier FID / IS / KL to uniform over training), generator.pt (self-describing,
loadable with weights_only=True), best.pt (the scored checkpoint with the lowest FID among those
whose class histogram is within --select-max-kl of uniform), state.pt (optimisers and counters,
for --resume) and, with --keep-scored, checkpoints/iter_NNNNNN.pt for every score.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from digitlab.checkpoint import load_model, save_checkpoint
from digitlab.constants import NUM_CLASSES
from digitlab.device import pick_device
from digitlab.imaging import grid_png, write_bytes
from digitlab.latent import sample_latents
from digitlab.mnist import DEFAULT_DATA_DIR, load_mnist
from digitlab.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from digitlab.scores import real_stats, score_generator
from training.gan_data import RealBatches
from training.gan_logs import SCORE_FIELDS, write_logs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--schedule", default="5:2", help="D:G = discriminator steps, then generator steps, per round")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="total iterations (generator updates)")
    length.add_argument("--epochs", type=float, default=200, help="passes over the training images (report: 200)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="torchvision MNIST root (downloaded when missing)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate of the generator (and of D unless --lr-d)")
    p.add_argument("--lr-d", type=float, default=None, help="discriminator learning rate (TTUR; default: --lr)")
    p.add_argument(
        "--r1",
        type=float,
        default=0.0,
        help="weight gamma of the R1 penalty gamma/2 * E||grad_x D(x)||^2 on real images (0: off)",
    )
    p.add_argument(
        "--betas",
        type=float,
        nargs=2,
        default=(0.5, 0.999),
        help="Adam betas; torch's default (0.9, 0.999) collapsed here within 5 epochs",
    )
    p.add_argument(
        "--lr-decay",
        type=float,
        default=0.0,
        help="fraction of the run, at its end, over which both learning rates fall linearly to 0 (0: constant)",
    )
    p.add_argument("--spectral-norm", action="store_true", help="spectrally normalise the discriminator's weights")
    p.add_argument(
        "--conditional",
        action="store_true",
        help="AC-GAN: the generator is given the digit to draw (one-hot beside z), the discriminator also "
        "classifies real images, and the generator is also trained to make its digits classified as asked",
    )
    p.add_argument(
        "--aux-weight", type=float, default=1.0, help="--conditional: weight of the class cross-entropy terms"
    )
    p.add_argument(
        "--select-max-kl",
        type=float,
        default=0.008,
        help="best.pt: lowest periodic FID among scores with KL(class histogram || uniform) at most this "
        "(while none is, the lowest KL)",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="decay of a moving average of the generator's weights; when > 0 the average is what is "
        "sampled, scored and saved (0: off). Turning it on at --resume starts it from the current weights",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help='"auto" picks CUDA, then MPS, then CPU')
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--out-dir", default="runs/gan-5-2")
    p.add_argument("--resume", action="store_true", help="continue from out-dir/state.pt up to --steps/--epochs")
    p.add_argument("--sample-every", type=int, default=1000, help="iterations between sample grids")
    p.add_argument("--score-every", type=int, default=2000, help="iterations between scores and checkpoints")
    p.add_argument("--score-n", type=int, default=2000, help="samples per periodic score")
    p.add_argument(
        "--keep-scored",
        action="store_true",
        help="also keep every scored generator as checkpoints/iter_NNNNNN.pt (for selection after the run)",
    )
    p.add_argument("--classifier", default="weights/classifier.pt", help="scoring classifier; '' disables scores")
    p.add_argument("--dry-run", action="store_true", help="two rounds on 2 batches of data, scored; writes nothing")
    return p.parse_args(argv)


@dataclass(frozen=True)
class GanConfig:
    """One run's recipe, as `parse_args` reads it (see there for each field); what `GanRun` is built from."""

    schedule: str = "5:2"
    steps: int | None = None
    epochs: float = 200
    data_dir: str = DEFAULT_DATA_DIR
    limit: int | None = None
    batch_size: int = 64
    lr: float = 2e-4
    lr_d: float | None = None
    r1: float = 0.0
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay: float = 0.0
    spectral_norm: bool = False
    conditional: bool = False
    aux_weight: float = 1.0
    select_max_kl: float = 0.008
    ema: float = 0.0
    seed: int = 0
    out_dir: str = "runs/gan-5-2"
    sample_every: int = 1000
    score_every: int = 2000
    score_n: int = 2000
    keep_scored: bool = False
    classifier: str = "weights/classifier.pt"
    dry_run: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GanConfig:
        """The recipe among the command's options (the rest, --device, --threads, --resume, say how to run it)."""
        given = vars(args)
        return cls(**{f.name: tuple(given[f.name]) if f.name == "betas" else given[f.name] for f in fields(cls)})


def learning_rate(base: float, iteration: int, total: int, decay: float) -> float:
    """Constant `base` until the last `decay` fraction of `total` iterations, then linear to 0 at `total`."""
    start = total * (1 - decay)
    if decay <= 0 or iteration < start:
        return base
    return base * max(total - iteration, 0) / (total - start)


def is_better(score: dict, best: dict | None, max_kl: float) -> bool:
    """Checkpoint selection: a score qualifies when its class histogram is near uniform (KL <= max_kl).
    A qualifying score beats any other; among qualifying ones the lowest FID wins, among the rest the lowest KL."""
    if best is None:
        return True
    qualifies, best_qualifies = score["kl_uniform"] <= max_kl, best["kl_uniform"] <= max_kl
    if qualifies != best_qualifies:
        return qualifies
    return score["fid"] < best["fid"] if qualifies else score["kl_uniform"] < best["kl_uniform"]


def parse_schedule(text: str) -> tuple[int, int]:
    d, g = (int(x) for x in text.split(":"))
    if d < 1 or g < 1:
        raise ValueError(f"schedule needs at least one step of each network, got {text!r}")
    return d, g


class GanRun:
    """One training run: networks, optimisers, real batches, and the history that --resume restores.

    `state` holds plain data only (counters, loss and score history), so state.pt loads with
    weights_only=True. Per iteration it logs (G loss, mean D loss of the round); per score, SCORE_FIELDS.
    """

    def __init__(self, config: GanConfig, device: torch.device) -> None:

        self.config, self.device, self.out = config, device, Path(config.out_dir)
        self.d_steps, self.g_steps = parse_schedule(config.schedule)
        limit = 2 * config.batch_size if config.dry_run else config.limit
        self.batches = RealBatches(
            *load_mnist(config.data_dir, train=True, limit=limit).tensors, config.batch_size, config.seed
        )
        # Before seeding: building the classifier draws initial weights from the global RNG.
        self.classifier, self.real = None, None
        if config.classifier:
            self.classifier = load_model(config.classifier, device, expect="classifier")
            self.real = real_stats(
                self.classifier, load_mnist(config.data_dir, train=False, limit=config.limit).tensors[0]
            )
        torch.manual_seed(config.seed)
        self.classes = NUM_CLASSES if config.conditional else 0
        self.generator = Generator(GeneratorConfig(classes=self.classes)).to(device)
        self.discriminator = Discriminator(
            DiscriminatorConfig(spectral_norm=config.spectral_norm, classes=self.classes)
        ).to(device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=tuple(config.betas))
        self.lr_d = config.lr if config.lr_d is None else config.lr_d
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr_d, betas=tuple(config.betas))
        self.state = {
            "schedule": config.schedule,
            "iteration": 0,
            "batches": 0,
            "wall_s": 0.0,
            "losses": [],
            "scores": [],
            "best": {},
        }  # best: {"iteration", "fid", "kl_uniform"} of best.pt, empty until the first score
        self.fixed_z = sample_latents(config.seed, 64).to(device)  # (64, 100): the same digits in every grid
        self.fixed_digits = self.balanced_digits(64)  # (64,) or None: 0..9 in turn when conditional
        self.average = copy.deepcopy(self.generator).requires_grad_(False) if config.ema else None
        self.calibration_z = sample_latents(config.seed + 2, 4096).to(device) if config.ema else None  # (4096, 100)
        self.calibration_digits = self.balanced_digits(4096)
        self.bce = nn.BCEWithLogitsLoss()

    def total_iterations(self) -> int:
        if self.config.dry_run:
            return 2 * self.g_steps
        epochs_as_iterations = self.config.epochs * self.batches.per_epoch * self.g_steps / self.d_steps
        return self.config.steps or math.ceil(epochs_as_iterations)

    def resume(self) -> None:
        saved = torch.load(self.out / "state.pt", map_location="cpu", weights_only=True)
        if saved["schedule"] != self.config.schedule:
            raise ValueError(f"{self.out} was trained with schedule {saved['schedule']}, not {self.config.schedule}")
        self.generator.load_state_dict(saved.pop("generator"))
        self.discriminator.load_state_dict(saved.pop("discriminator"))
        self.opt_g.load_state_dict(saved.pop("opt_g"))
        self.opt_d.load_state_dict(saved.pop("opt_d"))
        torch.set_rng_state(saved.pop("rng"))
        average = saved.pop("average", None)
        if self.average is not None:  # continue the saved average, or start one from the resumed weights
            self.average.load_state_dict(average or self.generator.state_dict())
            saved.setdefault("ema_from", saved["iteration"])
        self.state = saved

    def noise(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A fresh batch of latents (B, 100) and, when conditional, the digits (B,) to draw from them."""
        z = torch.randn(self.config.batch_size, self.generator.config.latent_dim, device=self.device)
        digits = torch.randint(self.classes, (len(z),), device=self.device) if self.classes else None
        return z, digits

    def balanced_digits(self, n: int) -> torch.Tensor | None:
        return torch.arange(n, device=self.device) % self.classes if self.classes else None

    def aux_loss(self, class_logits: torch.Tensor, digits: torch.Tensor | None) -> torch.Tensor | float:
        """AC-GAN's class term: cross-entropy of the discriminator's class logits (B, 10) against digits (B,)."""
        if digits is None:
            return 0.0
        return self.config.aux_weight * nn.functional.cross_entropy(class_logits, digits)

    def discriminator_step(self) -> float:
        """One D update on the next real batch and as many fresh fakes: BCE(D(x), 1) + BCE(D(G(z)), 0),
        plus with --r1 the penalty gamma/2 * mean ||dD(x)/dx||^2 on the real batch (Mescheder et al. 2018)."""
        real, labels = (t.to(self.device) for t in self.batches(self.state["batches"]))  # (B, 1, 28, 28), (B,)
        self.state["batches"] += 1
        with torch.no_grad():
            fake = self.generator(*self.noise())  # train-mode BatchNorm, as in the G step
        ones, zeros = torch.ones(len(real), device=self.device), torch.zeros(len(fake), device=self.device)
        real.requires_grad_(self.config.r1 > 0)
        real_logits, class_logits = self.discriminator.logits(real)  # (B,), (B, classes)
        # Conditional: the class head learns from real digits only, so the generator is pushed toward
        # what real digits of its class look like, never toward what D learnt of its own fakes.
        loss = (
            self.bce(real_logits, ones)
            + self.bce(self.discriminator(fake), zeros)
            + self.aux_loss(class_logits, labels if self.classes else None)
        )
        if self.config.r1 > 0:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)  # (B, 1, 28, 28)
            loss = loss + self.config.r1 / 2 * grad.pow(2).flatten(1).sum(1).mean()
        self.opt_d.zero_grad()
        loss.backward()
        self.opt_d.step()
        return loss.item()

    def generator_step(self) -> float:
        """One G update, non-saturating: maximise log D(G(z)), i.e. BCE(D(G(z)), 1); conditional, plus the
        cross-entropy of D's class head against the digits asked for."""
        z, digits = self.noise()
        logits, class_logits = self.discriminator.logits(self.generator(z, digits))  # (B,), (B, classes)
        loss = self.bce(logits, torch.ones_like(logits)) + self.aux_loss(class_logits, digits)
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()
        if self.average is not None:
            with torch.no_grad():
                for avg, live in zip(self.average.parameters(), self.generator.parameters()):
                    avg.lerp_(live, 1 - self.config.ema)  # avg = ema * avg + (1 - ema) * live
        return loss.item()

    @torch.no_grad()
    def served_generator(self) -> Generator:
        """What is sampled, scored and saved, in eval mode: the live generator, or its weight average.

        The average's BatchNorm statistics are re-estimated for the averaged weights by one train-mode
        pass over fixed latents (momentum None: the pass sets them exactly, and no global RNG is drawn).
        """
        if self.average is None:
            return self.generator.eval()
        for module in self.average.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.reset_running_stats()
                module.momentum = None
        self.average.train()(self.calibration_z, self.calibration_digits)
        return self.average.eval()

    def train(self, total: int) -> None:
        """Rounds of D steps then G steps until `total` iterations, sampling and scoring on the way."""
        config, state = self.config, self.state
        if self.average is not None:
            state.setdefault("ema_from", state["iteration"])
        if state["iteration"] == 0:
            self.sample_grid()
        self.generator.train()
        bar = tqdm(total=total, initial=state["iteration"], desc=f"GAN {config.schedule}", unit="it")
        while state["iteration"] < total:
            started = time.perf_counter()
            for opt, base in ((self.opt_g, config.lr), (self.opt_d, self.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = learning_rate(base, state["iteration"], total, config.lr_decay)
            loss_d = sum(self.discriminator_step() for _ in range(self.d_steps)) / self.d_steps
            for _ in range(min(self.g_steps, total - state["iteration"])):
                loss_g = self.generator_step()
                state["iteration"] += 1
                state["losses"].append([loss_g, loss_d])
                state["wall_s"] += time.perf_counter() - started  # training time only: sampling/scoring excluded
                bar.update(1)
                if state["iteration"] % config.sample_every == 0:
                    self.sample_grid()
                if state["iteration"] % config.score_every == 0:
                    self.checkpoint()
                self.generator.train()  # sampling and scoring switch it to eval mode
                started = time.perf_counter()
            bar.set_postfix(g=f"{loss_g:.3f}", d=f"{loss_d:.3f}")
        bar.close()
        if state["iteration"] % config.sample_every:
            self.sample_grid()
        if not state["scores"] or state["scores"][-1][0] != state["iteration"]:
            self.checkpoint()

    def sample_grid(self) -> None:
        """The fixed latent batch through the served generator (eval-mode BatchNorm, as served)."""
        if self.config.dry_run:
            return
        with torch.no_grad():
            grid = grid_png(self.served_generator()(self.fixed_z, self.fixed_digits), nrow=10 if self.classes else 8)
        write_bytes(self.out / "samples" / f"iter_{self.state['iteration']:06d}.png", grid)

    def checkpoint(self) -> None:
        """Score (when a classifier is given), then save generator.pt, state.pt and the logs."""
        config, state = self.config, self.state
        meta = {
            "iteration": state["iteration"],
            "schedule": config.schedule,
            "batches": state["batches"],
            "epochs": state["batches"] / self.batches.per_epoch,
            "wall_s": state["wall_s"],
            "seed": config.seed,
            "lr": config.lr,
            "lr_d": self.lr_d,
            "r1": config.r1,
            "betas": list(config.betas),
            "batch_size": config.batch_size,
            "ema": config.ema,
            "ema_from": state.get("ema_from"),
            "lr_decay": config.lr_decay,
            "spectral_norm": config.spectral_norm,
            "aux_weight": config.aux_weight if self.classes else 0.0,
        }
        served = self.served_generator()
        if self.classifier is not None:
            scores = score_generator(served, self.classifier, self.real, n=config.score_n, seed=config.seed + 1)
            meta.update(
                {k: scores[k] for k in (*SCORE_FIELDS[3:], "histogram", "fidelity") if k in scores},
                score_n=config.score_n,
            )
            state["scores"].append([meta[k] for k in ("iteration", "epochs", "wall_s", *SCORE_FIELDS[3:])])
            fidelity = f"  read as asked {scores['fidelity']:.2%}" if "fidelity" in scores else ""
            tqdm.write(
                f"iteration {state['iteration']}: FID {scores['fid']:.2f}  IS {scores['inception_score']:.3f}  "
                f"KL {scores['kl_uniform']:.4f}{fidelity}"
            )
        if config.dry_run:
            return
        save_checkpoint(self.out / "generator.pt", served, meta)
        if config.keep_scored:
            save_checkpoint(self.out / "checkpoints" / f"iter_{state['iteration']:06d}.pt", served, meta)
        if self.classifier is not None and is_better(meta, state.get("best") or None, config.select_max_kl):
            state["best"] = {"iteration": state["iteration"], "fid": meta["fid"], "kl_uniform": meta["kl_uniform"]}
            save_checkpoint(self.out / "best.pt", served, meta)
        average = {} if self.average is None else {"average": self.average.state_dict()}
        torch.save(
            {
                **state,
                **average,
                "generator": self.generator.state_dict(),
                "opt_g": self.opt_g.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "opt_d": self.opt_d.state_dict(),
                "rng": torch.get_rng_state(),
            },
            self.out / "state.pt",
        )
        write_logs(self.out, state)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = GanRun(GanConfig.from_args(args), pick_device(args.device))
    if args.resume:
        run.resume()
    run.train(run.total_iterations())
    state = run.state
    print(
        f"{state['iteration']} iterations, {state['batches']} batches, {state['wall_s']:.0f} s training "
        f"({state['iteration'] / max(state['wall_s'], 1e-9):.1f} it/s)" + ("" if args.dry_run else f"; wrote {run.out}")
    )
    return run.out / "generator.pt"


if __name__ == "__main__":
    main()
