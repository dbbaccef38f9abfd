"""Palindrome semantics and batched prediction: pure functions, no server."""

import torch

from digitlab.networks import PalindromeConfig, PalindromeNet
from digitlab.palindrome import (
    expected_digit,
    is_palindrome_prefix,
    pad_batch,
    palindrome_batch,
    predict_probabilities,
    random_palindromes,
)


def test_random_palindromes_read_the_same_backwards():
    for length in (1, 2, 3, 4, 7, 16):
        batch = random_palindromes(64, length, torch.Generator().manual_seed(length))
        assert batch.shape == (64, length)
        assert torch.equal(batch, batch.flip(1))
        assert batch.min() >= 0 and batch.max() <= 9


def test_batches_are_prefixes_whose_missing_digit_mirrors_the_first():
    inputs, targets = palindrome_batch(256, 9, torch.Generator().manual_seed(0))
    assert inputs.shape == (256, 9) and targets.shape == (256,)
    assert torch.equal(targets, inputs[:, 0])
    assert all(is_palindrome_prefix(row.tolist()) for row in inputs)


def test_batches_are_reproducible_by_seed_and_fresh_otherwise():
    a = palindrome_batch(32, 5, torch.Generator().manual_seed(1))[0]
    b = palindrome_batch(32, 5, torch.Generator().manual_seed(1))[0]
    c = palindrome_batch(32, 5, torch.Generator().manual_seed(2))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_palindrome_prefix_rules():
    assert is_palindrome_prefix([1, 2, 3, 2])  # completes to 1 2 3 2 1
    assert is_palindrome_prefix([4, 5, 5])  # 4 5 5 4
    assert is_palindrome_prefix([7])
    assert not is_palindrome_prefix([1, 2, 3])  # 2 3 is not a palindrome
    assert expected_digit([1, 2, 3, 2]) == 1


def test_pad_batch_right_pads_and_keeps_lengths():
    padded, lengths = pad_batch([[1, 2, 1], [3, 4, 5, 4, 3]])
    assert padded.tolist() == [[1, 2, 1, 0, 0], [3, 4, 5, 4, 3]]
    assert lengths.tolist() == [3, 5]


def test_mixed_length_batch_equals_one_request_at_a_time():
    torch.manual_seed(0)
    model = PalindromeNet(PalindromeConfig(hidden_dim=16)).eval()
    sequences = [[1, 2, 1], [3, 4, 5, 4], [9, 0, 0, 0, 0, 0, 0], [2, 7, 7]]
    together = predict_probabilities(model, sequences)
    alone = torch.cat([predict_probabilities(model, [s]) for s in sequences])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(together.sum(1), torch.ones(4))
