"""Other formats in and out: Hugging Face (`hf_tables`, `hf`, `hf_io`, `hf_export`), ONNX (`onnx`), and
`load`, which reads the model of any directory `--model` may name."""
