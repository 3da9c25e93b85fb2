"""The machinery both recipes share: the optimizer and schedule (`optim`), checkpoints (`checkpoint`,
`sharding`), the runtime (`runtime`: torchrun, device, precision, compile) and the train step (`loop`)."""
