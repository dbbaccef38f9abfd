"""The networks: fused modules equal the report's equations; checkpoints rebuild themselves."""

import pytest
import torch

from digitlab.checkpoint import load_model, load_model_and_meta, read_checkpoint, save_checkpoint
from digitlab.networks import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    MnistClassifier,
    PalindromeConfig,
    PalindromeNet,
    reference_forward,
)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
@pytest.mark.parametrize("encoding", ["scalar", "onehot"])
def test_fused_network_equals_the_reports_per_step_equations(cell, encoding):
    torch.manual_seed(0)
    net = PalindromeNet(PalindromeConfig(cell=cell, encoding=encoding))  # hidden 128, as served
    digits = torch.randint(0, 10, (32, 15))
    with torch.no_grad():
        diff = (net(digits) - reference_forward(net, digits)).abs().max().item()
    assert diff <= 1e-5


def test_packed_forward_takes_each_rows_own_last_step():
    torch.manual_seed(0)
    net = PalindromeNet(PalindromeConfig(hidden_dim=32)).eval()
    padded = torch.tensor([[1, 2, 1, 0, 0], [3, 4, 5, 4, 3]])
    with torch.no_grad():
        packed = net(padded, torch.tensor([3, 5]))
        torch.testing.assert_close(packed[0], net(padded[:1, :3])[0])
        torch.testing.assert_close(packed[1], net(padded[1:])[0])


def test_gan_shapes_follow_the_report():
    generator, discriminator = Generator(), Discriminator()
    linear_widths = [m.out_features for m in generator.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_widths == [128, 256, 512, 1024, 784]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in generator.modules()) == 3
    images = generator.eval()(torch.randn(5, 100))
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
    assert discriminator(images).shape == (5,)
    assert MnistClassifier()(images).shape == (5, 10)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_spectral_norm_bounds_each_discriminator_layer(spectral_norm):
    torch.manual_seed(0)
    discriminator = Discriminator(DiscriminatorConfig(hidden=(32, 16), spectral_norm=spectral_norm))
    with torch.no_grad():  # as if training had grown the weights: sigma of every raw matrix ~5x its init
        for param in discriminator.parameters():
            param.mul_(5)
    for _ in range(30):  # training-mode forwards run the power iteration that estimates each sigma
        discriminator(torch.randn(8, 1, 28, 28))
    sigmas = [
        torch.linalg.matrix_norm(m.weight.detach(), ord=2).item()
        for m in discriminator.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    assert len(sigmas) == 3
    if spectral_norm:
        assert sigmas == pytest.approx([1.0] * 3, abs=0.02)
    else:
        assert min(sigmas) > 2.5


@pytest.mark.parametrize(
    "model",
    [
        PalindromeNet(PalindromeConfig(cell="rnn", hidden_dim=8)),
        Generator(GeneratorConfig(hidden=(8, 16))),
        Discriminator(DiscriminatorConfig(hidden=(8, 4), spectral_norm=True)),
    ],
)
def test_checkpoints_describe_themselves_and_load_weights_only(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model, meta={"step": 3})
    payload = torch.load(path, weights_only=True)  # no pickled classes: loads under the safe loader
    assert set(payload) == {"kind", "config", "state_dict", "meta"}
    rebuilt, meta = load_model_and_meta(path)
    assert rebuilt.config == model.config and meta == {"step": 3}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value)


def test_loading_the_wrong_kind_says_what_it_found(tmp_path):
    path = save_checkpoint(tmp_path / "g.pt", Generator(GeneratorConfig(hidden=(8, 16))))
    with pytest.raises(ValueError, match="'generator' checkpoint, expected 'palindrome'"):
        load_model(path, expect="palindrome")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a digitlab checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
