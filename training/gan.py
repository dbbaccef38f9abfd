"""Train the report's MLP GAN on MNIST under a D:G schedule, logging samples, losses and scores.

    python -m training.gan --schedule 5:2 --steps 20000 --data-dir ../shared/data --threads 1 --out-dir runs/gan-5-2

Vocabulary (docs/GAN.md): an *iteration* is one generator update. A *round* of schedule D:G takes D
discriminator steps, each on a fresh real batch, then G generator steps; so 5:2 runs 2.5 discriminator
steps and 2.5 real batches per iteration, 1:1 runs one. An *epoch* is 60,000 / batch real batches.

Output in --out-dir: samples/iter_NNNNNN.png (a fixed latent batch), losses.csv + losses.png,
scores.csv (classifier FID / IS / KL to uniform over training), generator.pt (self-describing,
loadable with weights_only=True) and state.pt (optimisers and counters, for --resume).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from digitlab.checkpoint import load_model, save_checkpoint  # noqa: E402
from digitlab.device import pick_device  # noqa: E402
from digitlab.imaging import grid_png, write_bytes  # noqa: E402
from digitlab.latent import sample_latents  # noqa: E402
from digitlab.mnist import DEFAULT_DATA_DIR, load_mnist  # noqa: E402
from digitlab.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig  # noqa: E402
from digitlab.scores import real_stats, score_generator  # noqa: E402

SCORE_FIELDS = ("iteration", "epoch", "wall_s", "fid", "inception_score", "kl_uniform")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--schedule", default="5:2", help="D:G = discriminator steps, then generator steps, per round")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="total iterations (generator updates)")
    length.add_argument("--epochs", type=float, default=200, help="passes over the training images (report: 200)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="torchvision MNIST root (downloaded when missing)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.999),
                   help="Adam betas; torch's default (0.9, 0.999) collapsed here within 5 epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help='"auto" picks CUDA, then MPS, then CPU')
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--out-dir", default="runs/gan-5-2")
    p.add_argument("--resume", action="store_true", help="continue from out-dir/state.pt up to --steps/--epochs")
    p.add_argument("--sample-every", type=int, default=1000, help="iterations between sample grids")
    p.add_argument("--score-every", type=int, default=2000, help="iterations between scores and checkpoints")
    p.add_argument("--score-n", type=int, default=2000, help="samples per periodic score")
    p.add_argument("--classifier", default="weights/classifier.pt", help="scoring classifier; '' disables scores")
    p.add_argument("--dry-run", action="store_true", help="two rounds on 2 batches of data, scored; writes nothing")
    return p.parse_args(argv)


def parse_schedule(text: str) -> tuple[int, int]:
    d, g = (int(x) for x in text.split(":"))
    if d < 1 or g < 1:
        raise ValueError(f"schedule needs at least one step of each network, got {text!r}")
    return d, g


class RealBatches:
    """Real images (N, 1, 28, 28) served as (batch, 1, 28, 28) batches in a reproducible order.

    Epoch e's order is a permutation seeded by (seed, e) and the incomplete last batch is dropped,
    so the k-th batch is a function of k alone and a resumed run sees the same data as an unbroken one.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.per_epoch = len(images) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"{len(images)} images are fewer than one batch of {batch_size}")
        self.epoch, self.order = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, k: int) -> torch.Tensor:
        epoch, offset = divmod(k, self.per_epoch)
        if epoch != self.epoch:  # one permutation per epoch, drawn from its own generator
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self.epoch, self.order = epoch, torch.randperm(len(self.images), generator=g)
        return self.images[self.order[offset * self.batch_size:(offset + 1) * self.batch_size]]


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    d_steps, g_steps = parse_schedule(args.schedule)
    device = pick_device(args.device)
    out = Path(args.out_dir)

    images = load_mnist(args.data_dir, train=True, limit=2 * args.batch_size if args.dry_run else args.limit).tensors[0]
    batches = RealBatches(images, args.batch_size, args.seed)
    total = 2 * g_steps if args.dry_run else args.steps or math.ceil(args.epochs * batches.per_epoch * g_steps / d_steps)

    # Before seeding: building the classifier draws initial weights from the global RNG.
    classifier, real = None, None
    if args.classifier:
        classifier = load_model(args.classifier, device, expect="classifier")
        real = real_stats(classifier, load_mnist(args.data_dir, train=False, limit=args.limit).tensors[0])
    torch.manual_seed(args.seed)
    generator, discriminator = Generator(GeneratorConfig()).to(device), Discriminator(DiscriminatorConfig()).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=tuple(args.betas))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.lr, betas=tuple(args.betas))
    # History: per iteration (G loss, mean D loss of the round); per score: SCORE_FIELDS.
    state = {"schedule": args.schedule, "iteration": 0, "batches": 0, "wall_s": 0.0, "losses": [], "scores": []}
    if args.resume:
        saved = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
        if saved["schedule"] != args.schedule:
            raise ValueError(f"{out} was trained with schedule {saved['schedule']}, not {args.schedule}")
        generator.load_state_dict(saved.pop("generator"))
        discriminator.load_state_dict(saved.pop("discriminator"))
        opt_g.load_state_dict(saved.pop("opt_g"))
        opt_d.load_state_dict(saved.pop("opt_d"))
        torch.set_rng_state(saved.pop("rng"))
        state = saved

    fixed_z = sample_latents(args.seed, 64).to(device)  # (64, 100): the same digits in every grid
    bce = nn.BCEWithLogitsLoss()
    ones = torch.ones(args.batch_size, device=device)
    zeros = torch.zeros(args.batch_size, device=device)

    def noise() -> torch.Tensor:
        return torch.randn(args.batch_size, generator.config.latent_dim, device=device)  # (B, 100)

    def checkpoint() -> None:
        it = state["iteration"]
        meta = {"iteration": it, "schedule": args.schedule, "batches": state["batches"],
                "epochs": state["batches"] / batches.per_epoch, "wall_s": state["wall_s"], "seed": args.seed,
                "lr": args.lr, "betas": list(args.betas), "batch_size": args.batch_size}
        if classifier is not None:
            scores = score_generator(generator, classifier, real, n=args.score_n, seed=args.seed + 1)
            state["scores"].append([it, meta["epochs"], state["wall_s"], scores["fid"], scores["inception_score"],
                                    scores["kl_uniform"]])
            meta.update({k: scores[k] for k in ("fid", "inception_score", "kl_uniform")}, score_n=args.score_n)
            tqdm.write(f"iteration {it}: FID {scores['fid']:.2f}  IS {scores['inception_score']:.3f}  "
                       f"KL {scores['kl_uniform']:.4f}")
        if args.dry_run:
            return
        save_checkpoint(out / "generator.pt", generator, meta)
        torch.save({**state, "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": torch.get_rng_state()},
                   out / "state.pt")
        write_logs(out, state)

    def sample_grid() -> None:
        if args.dry_run:
            return
        generator.eval()  # BatchNorm running statistics: what the served generator draws
        with torch.no_grad():
            write_bytes(out / "samples" / f"iter_{state['iteration']:06d}.png", grid_png(generator(fixed_z), nrow=8))
        generator.train()

    if state["iteration"] == 0:
        sample_grid()
    generator.train()
    bar = tqdm(total=total, initial=state["iteration"], desc=f"GAN {args.schedule}", unit="it")
    while state["iteration"] < total:
        started = time.perf_counter()
        d_losses = []
        for _ in range(d_steps):
            real_images = batches(state["batches"]).to(device)
            state["batches"] += 1
            with torch.no_grad():
                fake = generator(noise())  # (B, 1, 28, 28); train-mode BatchNorm, as in the G step
            loss_d = bce(discriminator(real_images), ones) + bce(discriminator(fake), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            d_losses.append(loss_d.item())
        for _ in range(g_steps):
            if state["iteration"] >= total:
                break
            loss_g = bce(discriminator(generator(noise())), ones)  # non-saturating: maximise log D(G(z))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            state["iteration"] += 1
            state["losses"].append([loss_g.item(), sum(d_losses) / len(d_losses)])
            bar.update(1)
            it = state["iteration"]
            state["wall_s"] += time.perf_counter() - started  # training time only: sampling/scoring excluded
            if it % args.sample_every == 0:
                sample_grid()
            if it % args.score_every == 0:
                checkpoint()
            started = time.perf_counter()
        bar.set_postfix(g=f"{loss_g.item():.3f}", d=f"{d_losses[-1]:.3f}")
    bar.close()
    if state["iteration"] % args.sample_every:
        sample_grid()
    if not state["scores"] or state["scores"][-1][0] != state["iteration"]:
        checkpoint()
    print(f"{state['iteration']} iterations, {state['batches']} batches, {state['wall_s']:.0f} s training "
          f"({state['iteration'] / max(state['wall_s'], 1e-9):.1f} it/s)" + ("" if args.dry_run else f"; wrote {out}"))
    return out / "generator.pt"


def write_logs(out: Path, state: dict) -> None:
    """Rewrite losses.csv, losses.png and scores.csv from the history kept in the training state."""
    with open(out / "losses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["iteration", "loss_g", "loss_d"])
        writer.writerows([i + 1, f"{g:.5f}", f"{d:.5f}"] for i, (g, d) in enumerate(state["losses"]))
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SCORE_FIELDS)
        writer.writerows(state["scores"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    plot_losses(ax, torch.tensor(state["losses"]))
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=100)
    plt.close(fig)


def plot_losses(ax: plt.Axes, losses: torch.Tensor, title: str = "") -> None:
    """Draw losses (iterations, 2) = (G, D) per iteration on `ax`, averaged over ~200 windows."""
    window = max(1, len(losses) // 200)
    smooth = losses[: len(losses) // window * window].view(-1, window, 2).mean(dim=1)  # (points, 2)
    x = torch.arange(len(smooth)) * window + window
    ax.plot(x, smooth[:, 0], label="generator")
    ax.plot(x, smooth[:, 1], label="discriminator (real + fake)")
    ax.set(xlabel="iteration (generator updates)", ylabel=f"BCE loss, mean of {window}", title=title)
    ax.legend()


if __name__ == "__main__":
    main()
