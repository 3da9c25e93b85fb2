"""The one door for directories: what each kind is recognised by, and the one message for the wrong kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from electrolite.artifacts import ExportedElectra, HFDir, OnnxDir, RunDir, SeedsParent, TaskDir, expect, open_dir
from electrolite.errors import UserError


def make(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


TASK = yaml.safe_dump({"finetune": {"task": "sst2"}, "encoder": {}, "task_model": {}})
RUN = yaml.safe_dump({"size": "tiny", "model": {}, "objective": {}, "train": {}})
KINDS = {
    "run": ({"config.yaml": RUN, "model.safetensors": ""}, RunDir),
    "run-before-its-first-checkpoint": ({"config.yaml": RUN}, RunDir),
    "task": ({"config.yaml": TASK, "model.safetensors": ""}, TaskDir),
    "onnx": ({"config.yaml": TASK, "model.onnx": "", "tokenizer.json": "{}"}, OnnxDir),
    "hf": ({"config.json": "{}", "model.safetensors": ""}, HFDir),
    "seeds": ({"seed-0/config.yaml": TASK, "seed-1/config.yaml": TASK, "results.json": "{}"}, SeedsParent),
    "exported-electra": ({"discriminator/config.json": "{}", "generator/config.json": "{}"}, ExportedElectra),
}


@pytest.mark.parametrize("name", KINDS)
def test_open_dir_recognises_each_kind(tmp_path, name):
    files, kind = KINDS[name]
    art = open_dir(make(tmp_path, files))
    assert type(art) is kind and art.root == tmp_path
    if kind is SeedsParent:
        assert art.seeds == ("seed-0", "seed-1")
    if kind in (RunDir, TaskDir):
        assert art.data == yaml.safe_load(files["config.yaml"])


def test_no_directory_and_no_kind_are_one_line(tmp_path):
    with pytest.raises(UserError, match=f"^{tmp_path / 'nowhere'}: no such model directory$"):
        open_dir(tmp_path / "nowhere")
    make(tmp_path, {"notes.txt": "mine"})
    with pytest.raises(UserError) as err:
        open_dir(tmp_path)
    assert str(err.value) == (f"{tmp_path} is not a model directory: an electrolite run or task dir has "
                              "config.yaml, a Hugging Face checkpoint config.json")


@pytest.mark.parametrize("name,message", [
    ("seeds", "{root} is a multi-seed fine-tuning dir; export needs a task dir; pass one of its seeds, e.g. {root}/seed-0"),
    ("exported-electra", "{root} is an exported ELECTRA run; export needs a task dir; pass {root}/discriminator "
                         "(ElectraForPreTraining) or {root}/generator (ElectraForMaskedLM)"),
    ("onnx", "{root} is an ONNX export (model.onnx); export needs a task dir; only `predict --runtime onnx` runs it"),
    ("run", "{root} is a pre-training run; export needs a task dir"),
])
def test_expect_names_what_it_is_what_is_needed_and_the_way_out(tmp_path, name, message):
    art = open_dir(make(tmp_path, KINDS[name][0]))
    with pytest.raises(UserError) as err:
        expect(art, (TaskDir,), "export needs a task dir")
    assert str(err.value) == message.format(root=tmp_path)
    assert expect(open_dir(make(tmp_path / "t", KINDS["task"][0])), (TaskDir,), "x").root == tmp_path / "t"


def test_a_malformed_run_config_names_the_file(tmp_path):
    art = open_dir(make(tmp_path, {"config.yaml": yaml.safe_dump({"model": {"hidden_size": "wide"}})}))
    with pytest.raises(UserError) as err:
        art.config()
    assert str(err.value) == f"{tmp_path / 'config.yaml'}: config model.hidden_size must be int, got 'wide'"
