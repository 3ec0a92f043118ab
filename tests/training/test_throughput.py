"""msaf_hf.training.throughput: the training-throughput benchmark behind `scripts/benchmark.py training`."""

from __future__ import annotations

import math

import pytest

from msaf_hf.training.throughput import TrainingCase, benchmark_training_cases, random_labels


def test_training_throughput_runs_full_steps_with_the_published_loss():
    (result,) = benchmark_training_cases([TrainingCase("dsnet-head64")], height=32, width=32, batch_size=2, warmup=0,
                                         repeats=1, num_labels=5)
    assert (result["mode"], result["model"], result["batch_size"]) == ("training", "dsnet-head64", 2)
    assert math.isfinite(result["first_loss"]) and result["first_loss"] > 0 and result["images_per_s"] > 0


def test_training_throughput_refuses_what_cannot_train():
    with pytest.raises(ValueError, match="at least 2 images"):
        benchmark_training_cases([TrainingCase("dsnet-head64")], height=32, width=32, batch_size=1, repeats=1)
    with pytest.raises(ValueError, match="Unknown model"):
        TrainingCase("dsnet-huge")
    labels = random_labels(2, 16, 16, num_labels=5)
    assert labels.shape == (2, 16, 16) and set(labels.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    assert (labels == 255).any()
