"""Docs generated from the code are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_config_reference_is_current():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_config_reference_lists_every_field_with_its_default():
    from electrolite import config as cfgmod
    text = (REPO / "docs" / "config-reference.md").read_text(encoding="utf-8")
    for cls in (cfgmod.PretrainConfig, cfgmod.FinetuneConfig):
        for name, _tp, default, _doc in cfgmod.iter_fields(cls):
            assert f"| `{name}` |" in text and f"`{default!r}`" in text, name
