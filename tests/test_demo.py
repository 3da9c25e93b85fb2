"""The demo's detect view: paragraphs of the corpus text with their middle word swapped."""

from __future__ import annotations

from pathlib import Path

from electrolite.demo import swapped_paragraphs


def test_swapped_paragraphs_change_exactly_the_middle_word(tmp_path: Path):
    words = [f"word{i}" if i % 3 else "alpha" for i in range(80)]
    paragraphs = [" ".join(w.replace("word", "w") for w in words), " ".join(words[:30]),  # the second: too short
                  " ".join(["beta"] * 40 + ["middle"] + ["gamma"] * 40)]
    text = tmp_path / "docs.txt"
    text.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    out = swapped_paragraphs(text, n=2, seed=1)
    assert len(out) == 1  # the first paragraph's middle word "w40" is not alphabetic; the short one is skipped
    changed, original, start, swap = out[0]
    assert original == "middle" and swap in ("beta", "gamma")
    assert changed[start:start + len(swap)] == swap
    assert changed.split(" ")[40] == swap and changed.split(" ")[:40] == ["beta"] * 40
    assert swapped_paragraphs(text, n=2, seed=1) == out  # seeded
