#!/usr/bin/env python3
"""xy's byte-level BPE against Hugging Face `tokenizers` on a whole corpus, token for token.

  # On a machine with `tokenizers` (the GPU machine): the reference token stream of each
  # tokenizer.json over every document, framed as `xy-node preprocess --packing concat` frames it
  # (BOS if the tokenizer has one, the ids, EOS), as uint32 little-endian:
  python3 scripts/bpe_corpus_check.py reference CORPUS.jsonl.gz OUT_DIR FAMILY=TOKENIZER.json ...
  # Here: xy's shards of the same corpus (xy-node preprocess -o DIR -t TOKENIZER.json CORPUS)
  # against that stream; prints the count and the first mismatches, exits 1 on any:
  python3 scripts/bpe_corpus_check.py compare OUT_DIR/FAMILY.bin SHARD_DIR

FAMILY is llama3 (BOS <|begin_of_text|>, EOS <|end_of_text|>) or qwen3 (no BOS, EOS <|endoftext|>),
as xy picks them (docs/DATA.md). Only the standard library is used on the compare side.
"""
import array
import glob
import gzip
import json
import os
import struct
import sys

SEPARATORS = {"llama3": ("<|begin_of_text|>", "<|end_of_text|>"), "qwen3": (None, "<|endoftext|>")}


def reference(corpus, out, pairs):
    from tokenizers import Tokenizer
    opener = gzip.open if corpus.endswith(".gz") else open
    docs = [json.loads(line)["text"] for line in opener(corpus, "rt", encoding="utf-8")]
    os.makedirs(out, exist_ok=True)
    for pair in pairs:
        family, path = pair.split("=", 1)
        tok = Tokenizer.from_file(path)
        bos, eos = (tok.token_to_id(t) if t else None for t in SEPARATORS[family])
        stream = array.array("I")
        for enc in tok.encode_batch(docs, add_special_tokens=False):
            if bos is not None:
                stream.append(bos)
            stream.extend(enc.ids)
            stream.append(eos)
        with open(os.path.join(out, family + ".bin"), "wb") as f:
            stream.tofile(f)
        print(f"{family}: {len(docs)} documents, {len(stream)} tokens")


def compare(ref_path, shard_dir):
    ref = array.array("I")
    with open(ref_path, "rb") as f:
        ref.frombytes(f.read())
    xy = array.array("I")
    for path in sorted(glob.glob(os.path.join(shard_dir, "shard-*.bin"))):
        b = open(path, "rb").read()
        tokens, width = struct.unpack_from("<q", b, 32)[0], struct.unpack_from("<I", b, 12)[0]  # ShardHeader
        if width != 4:
            sys.exit(f"{path}: token_bytes {width}, expected 4")
        xy.frombytes(b[64:64 + tokens * 4])
    bad = [i for i in range(min(len(ref), len(xy))) if ref[i] != xy[i]]
    print(f"{ref_path} vs {shard_dir}: {len(ref)} reference tokens, {len(xy)} xy tokens, "
          f"{len(bad)} mismatches" + (f" (first at {bad[:5]})" if bad else ""))
    if bad or len(ref) != len(xy):
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "reference":
        reference(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
