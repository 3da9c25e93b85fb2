"""Text in, token ids out: readers (`textfiles`), tokenizers (`tokenizer`, `vocab`), corpus preparation
(`corpus`) and the packed shards pre-training reads (`dataset`)."""
