"""Throughput of `prepare` against the tokenizer alone (not run by the test suite).

    python bench/prepare_throughput.py [TEXT_FILE] [--vocab 30000] [--seq-len 128]

Trains (or reuses) a WordPiece tokenizer on the file, times `encode_batch` on every sentence of
it (sentences split beforehand, untimed), then times `prepare` with and without pack_documents.
"""

import argparse
import os
import shutil
import tempfile
import time

from electrolite.data.corpus import iter_documents, prepare, split_sentences
from electrolite.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

DATA = os.environ.get("ELECTROLITE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

parser = argparse.ArgumentParser()
parser.add_argument("file", nargs="?", default=os.path.join(DATA, "gutenberg-en", "train.txt.gz"))
parser.add_argument("--vocab", type=int, default=30000)
parser.add_argument("--seq-len", type=int, default=128)
parser.add_argument("--tokenizer", default=os.path.join(tempfile.gettempdir(), "electrolite-bench-tokenizer"))
args = parser.parse_args()

if not os.path.isfile(os.path.join(args.tokenizer, "tokenizer.json")):
    t = time.perf_counter()
    save_tokenizer(train_tokenizer([args.file], args.vocab), args.tokenizer)
    print(f"trained a {args.vocab} WordPiece tokenizer in {time.perf_counter() - t:.1f} s")
tok = load_tokenizer(args.tokenizer)

sentences = [s for doc in iter_documents(args.file) for s in split_sentences(doc)]
mb = sum(len(s.encode("utf-8")) for s in sentences) / 1e6
for name in ("encode_batch", "encode_batch_fast"):
    encode = getattr(tok, name)
    t, cpu = time.perf_counter(), time.process_time()
    tokens = 0
    for i in range(0, len(sentences), 8192):
        tokens += sum(len(e.ids) for e in encode(sentences[i : i + 8192], add_special_tokens=False))
    dt, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"tokenizer alone ({name}): {dt:.1f} s ({cpu:.1f} CPU s), {mb / dt:.2f} MB/s, "
          f"{tokens / dt / 1e6:.3f} M tokens/s ({len(sentences):,} sentences, {mb:.1f} MB of sentence text, "
          f"{tokens:,} tokens)")
del sentences

for pack in (False, True):
    out = tempfile.mkdtemp(prefix="electrolite-bench-corpus-")
    t, cpu = time.perf_counter(), time.process_time()
    meta = prepare([args.file], args.tokenizer, args.seq_len, out, pack_documents=pack, progress=False,
                   overwrite=True)
    dt, cpu = time.perf_counter() - t, time.process_time() - cpu
    tokens = sum(s["text_tokens"] for s in meta["splits"].values())
    pad = meta["splits"]["train"]["padding_fraction"]
    print(f"prepare pack_documents={pack}: {dt:.1f} s ({cpu:.1f} CPU s), {mb / dt:.2f} MB/s, "
          f"{tokens / dt / 1e6:.3f} M tokens/s, "
          f"{meta['num_train']:,} train / {meta['num_valid']:,} valid examples, train padding {100 * pad:.1f}%, "
          f"single-segment {100 * meta['splits']['train']['single_segment_fraction']:.1f}%")
    shutil.rmtree(out)
