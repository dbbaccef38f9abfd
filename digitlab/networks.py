"""The product's networks: each defined once, imported by training, handlers, evaluation and tests.

Every network is built from a frozen dataclass config, so a checkpoint can carry
`asdict(config)` and be rebuilt without pickling code (see `digitlab.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from digitlab.constants import DIGIT_CENTRE, IMAGE_PIXELS, IMAGE_SIZE, LATENT_DIM, NUM_CLASSES, NUM_DIGITS

# --------------------------------------------------------------------------- palindrome


@dataclass(frozen=True)
class PalindromeConfig:
    """An LSTM or RNN reading one digit per step and classifying the missing last digit."""

    cell: str = "lstm"  # "lstm" | "rnn"
    hidden_dim: int = 128
    encoding: str = "scalar"  # "scalar": one normalised float per digit (the report); "onehot": 10 floats
    num_classes: int = NUM_CLASSES

    @property
    def input_dim(self) -> int:
        return 1 if self.encoding == "scalar" else NUM_DIGITS

    def __post_init__(self) -> None:
        if self.cell not in ("lstm", "rnn"):
            raise ValueError(f"cell must be 'lstm' or 'rnn', got {self.cell!r}")
        if self.encoding not in ("scalar", "onehot"):
            raise ValueError(f"encoding must be 'scalar' or 'onehot', got {self.encoding!r}")


def encode_digits(digits: torch.Tensor, encoding: str) -> torch.Tensor:
    """Digits (B, T) int64 in 0..9 -> network input (B, T, input_dim) float32.

    "scalar" centres the digit on 0 with unit range ((d - 4.5) / 4.5 in [-1, 1]): the report fed
    raw 0..9, which saturates tanh gates at initialisation and slows learning for long T.
    """
    if encoding == "onehot":
        return nn.functional.one_hot(digits, NUM_DIGITS).float()
    return ((digits.float() - DIGIT_CENTRE) / DIGIT_CENTRE).unsqueeze(-1)


class PalindromeNet(nn.Module):
    """Fused `nn.LSTM` / `nn.RNN` over the digits, logits from the hidden state after the last digit.

    Equal (within float error) to the report's per-step equations; `tests/unit/test_networks.py` proves it
    against `reference_forward`.
    """

    def __init__(self, config: PalindromeConfig) -> None:
        super().__init__()
        self.config = config
        recurrent = nn.LSTM if config.cell == "lstm" else nn.RNN
        self.recurrent = recurrent(config.input_dim, config.hidden_dim, batch_first=True)
        self.head = nn.Linear(config.hidden_dim, config.num_classes)  # p = W_ph h + b_p

    def forward(self, digits: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """digits (B, T) int64, right-padded when `lengths` (B,) is given -> logits (B, 10).

        With `lengths`, sequences are packed so each row's state is taken after its own last
        digit: one forward serves a batch of mixed lengths.
        """
        x = encode_digits(digits, self.config.encoding)  # (B, T, input_dim)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.recurrent(x)
        h_last = state[0] if isinstance(state, tuple) else state  # (1, B, H): LSTM returns (h, c)
        return self.head(h_last[-1])


def reference_forward(net: PalindromeNet, digits: torch.Tensor) -> torch.Tensor:
    """The report's equations, one step at a time, with `net`'s weights. digits (B, T) -> logits (B, 10).

    Used only to prove the fused network computes the report's model. nn.LSTM stacks its gate
    weights as (i, f, g, o) and keeps two biases per gate; the report's single b_* is their sum.
    """
    rec = net.recurrent
    x = encode_digits(digits, net.config.encoding)  # (B, T, D)
    batch, hidden = digits.shape[0], net.config.hidden_dim
    h = x.new_zeros(batch, hidden)
    c = x.new_zeros(batch, hidden)
    bias = rec.bias_ih_l0 + rec.bias_hh_l0
    for t in range(x.shape[1]):
        pre = x[:, t] @ rec.weight_ih_l0.T + h @ rec.weight_hh_l0.T + bias  # (B, 4H) or (B, H)
        if net.config.cell == "rnn":
            h = torch.tanh(pre)  # h = tanh(W_hx x + W_hh h + b)
            continue
        i, f, g, o = pre.split(hidden, dim=1)
        g, i, f, o = torch.tanh(g), torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
        c = g * i + c * f
        h = torch.tanh(c) * o
    return net.head(h)


# --------------------------------------------------------------------------- GAN


@dataclass(frozen=True)
class GeneratorConfig:
    latent_dim: int = LATENT_DIM
    hidden: tuple[int, ...] = (128, 256, 512, 1024)
    # 0: the report's generator, z alone. 10: class-conditional, the requested digit enters as a one-hot
    # vector beside z (input 110), so the same MLP draws the digit it is asked for without a search.
    classes: int = 0


class Generator(nn.Module):
    """z (B, 100) [, digit weights (B, classes)] -> images (B, 1, 28, 28) in [-1, 1].

    Linear layers 100->128->256->512->1024->784 (110->128 when conditional); BatchNorm on every hidden
    layer but the first; LeakyReLU(0.2); tanh output. Use `.eval()` when serving so BatchNorm uses its
    running stats and a sample does not depend on the rest of its batch.
    """

    def __init__(self, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        widths = (config.latent_dim + config.classes, *config.hidden)
        for k, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if k > 0:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(nn.LeakyReLU(0.2))
        layers += [nn.Linear(widths[-1], IMAGE_PIXELS), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    @property
    def conditional(self) -> bool:
        return self.config.classes > 0

    def forward(self, z: torch.Tensor, digits: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, 100); `digits` for a conditional generator: labels (B,) int64, or per-class weights
        (B, classes) float (a one-hot row is a digit; a blend of two rows is a point between two digits)."""
        if self.conditional:
            if digits is None:
                raise ValueError("a conditional generator needs the digits to draw")
            if digits.dim() == 1:
                digits = nn.functional.one_hot(digits, self.config.classes).to(z.dtype)  # (B, classes)
            z = torch.cat([z, digits.to(z.dtype)], dim=1)  # (B, 100 + classes)
        return self.net(z).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


@dataclass(frozen=True)
class DiscriminatorConfig:
    hidden: tuple[int, ...] = (512, 256)
    # Divide every weight matrix by its largest singular value (one power iteration per training
    # forward): D becomes 1-Lipschitz per layer, so it cannot win by sharpening its logits.
    spectral_norm: bool = False
    # 0: the report's discriminator. 10: an AC-GAN head beside the real/fake logit, 10 class logits from the
    # same 256 features, which teaches a conditional generator to draw the digit it is given.
    classes: int = 0


class Discriminator(nn.Module):
    """images (B, 1, 28, 28) in [-1, 1] -> logits (B,).

    784->512->256->1 with LeakyReLU(0.2). The report's sigmoid output is applied inside the loss
    (`BCEWithLogitsLoss`), which is the same model but numerically stable; `probability` gives it.
    With `spectral_norm`, each Linear's weight is spectrally normalised (same layers, same shapes).
    """

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.config = config
        norm = nn.utils.parametrizations.spectral_norm if config.spectral_norm else (lambda layer: layer)
        layers: list[nn.Module] = [nn.Flatten()]
        widths = (IMAGE_PIXELS, *config.hidden)
        for n_in, n_out in zip(widths, widths[1:]):
            layers += [norm(nn.Linear(n_in, n_out)), nn.LeakyReLU(0.2)]
        layers.append(norm(nn.Linear(widths[-1], 1 + config.classes)))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, 28, 28) -> real/fake logits (B,)."""
        return self.net(images)[:, 0]

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images -> (real/fake logits (B,), class logits (B, classes)) from one forward (AC-GAN)."""
        out = self.net(images)  # (B, 1 + classes)
        return out[:, 0], out[:, 1:]

    def probability(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(images))


@dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, int] = (32, 64)
    feature_dim: int = 128


class MnistClassifier(nn.Module):
    """A small CNN: images (B, 1, 28, 28) in [-1, 1] -> logits (B, 10).

    The instrument that scores generators (classifier-space FID, IS, class histogram) and finds
    latents for a requested digit. `features` exposes the penultimate layer (B, feature_dim).
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        # BatchNorm after each convolution: without it this net stalled at 98.9 % test accuracy in 4 epochs.
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c1, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c2, 7, 7)
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, config.feature_dim),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Linear(config.feature_dim, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


@dataclass(frozen=True)
class JudgeConfig:
    channels: tuple[int, int] = (20, 50)
    hidden: int = 500


class JudgeNet(nn.Module):
    """An independent reader of MNIST digits: images (B, 1, 28, 28) in [-1, 1] -> logits (B, 10).

    A measuring instrument only, never served and never packed into an archive: it judges whether digit
    requests are answered with the digit asked for, so it must share nothing with `MnistClassifier`, the
    classifier the serving path uses. A different architecture (LeNet-5's shape: 5x5 convolutions without
    padding or BatchNorm, a 500-wide dense layer, dropout 0.5) and a different recipe (`training.judge`:
    SGD with momentum on randomly shifted and rotated digits).
    """

    def __init__(self, config: JudgeConfig = JudgeConfig()) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 5),  # (B, c1, 24, 24)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c1, 12, 12)
            nn.Conv2d(c1, c2, 5),  # (B, c2, 8, 8)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c2, 4, 4)
            nn.Flatten(),
            nn.Linear(c2 * 4 * 4, config.hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(config.hidden, NUM_CLASSES),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
