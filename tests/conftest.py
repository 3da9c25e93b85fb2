"""Shared test fixtures."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data folder: $ELECTROLITE_DATA, else ../shared/data next to the repository."""
    root = Path(os.environ.get("ELECTROLITE_DATA", REPO.parent / "shared" / "data")).resolve()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is missing (set ELECTROLITE_DATA to its location)")
    return root
