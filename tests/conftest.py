"""Shared fixtures: a tiny demo dataset built once per session, and quiet, offline W&B."""
import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A small demo dataset (Kaggle layout) in a temporary folder."""
    from aidetect.data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", n_pairs=32, n_test_pairs=4, size=32)
