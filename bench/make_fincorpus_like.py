#!/usr/bin/env python3
"""Builds a FinCorpus-shaped corpus from the npm package chinese-poetry (MIT): gzipped JSONL
{"text": ..., "meta": {"source": ...}}, documents of 3-12 poems (~0.3-3 KB, like FinCorpus's
short financial texts), repeated in fresh shuffles until the JSONL reaches --mb megabytes (10^6).
Also writes the documents' text, one document after another, for spm_encode (--text-out).
Deterministic (seeded).

POEMS is either the package's dist/ directory or a dump of its poems written by --dump-poems
(one JSON string per line, in the order read; .xz, .gz or plain, told by the magic bytes): the
dump is ~25 MB instead of the package's 350 MB, and gives byte-identical corpora.

Usage: make_fincorpus_like.py POEMS OUT_DIR --mb 520 --files 8 [--text-out FILE]
       make_fincorpus_like.py POETRY_DIR --dump-poems poems.txt.xz   (only writes the dump)"""
import argparse, glob, gzip, io, json, os, random, subprocess, sys

try:
    import lzma
except ImportError:  # a Python built without liblzma: read .xz through the xz tool
    lzma = None

ap = argparse.ArgumentParser()
ap.add_argument("poetry", help="chinese-poetry's dist/ directory, or a --dump-poems file")
ap.add_argument("out", nargs="?", default="", help="output directory of the corpus")
ap.add_argument("--mb", type=float, default=520)
ap.add_argument("--files", type=int, default=8)
ap.add_argument("--text-out", default="")
ap.add_argument("--dump-poems", default="", help="write the poems to this file (.xz, .gz or plain)")
a = ap.parse_args()


def open_text(path, mode, name=""):
    """Opens a dump for text I/O: xz or gzip by magic bytes when reading, by `name` (default the
    path) when writing."""
    if "r" in mode:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic.startswith(b"\xfd7zXZ\x00"):
            if lzma:
                return lzma.open(path, "rt", encoding="utf-8")
            xz = subprocess.Popen(["xz", "-dc", path], stdout=subprocess.PIPE)
            return io.TextIOWrapper(xz.stdout, encoding="utf-8")
        if magic.startswith(b"\x1f\x8b"):
            return gzip.open(path, "rt", encoding="utf-8")
        return open(path, "r", encoding="utf-8")
    name = name or path
    if name.endswith(".xz"):
        if not lzma:
            sys.exit("this Python has no lzma module: dump to .gz or plain text")
        return lzma.open(path, "wt", encoding="utf-8", preset=9)
    if name.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=9)
    return open(path, "w", encoding="utf-8")


def read_package(root):
    poems = []
    for f in sorted(glob.glob(os.path.join(root, "**", "*.json"), recursive=True)):
        try:
            d = json.load(open(f, encoding="utf-8"))
        except Exception:
            continue
        for o in d if isinstance(d, list) else []:
            if isinstance(o, dict) and isinstance(o.get("paragraphs"), list):
                lines = [p for p in o["paragraphs"] if isinstance(p, str) and p]
                if lines:
                    head = "".join(x for x in (o.get("title") or o.get("rhythmic") or "", "\n",
                                                o.get("author") or "", "\n") if isinstance(x, str))
                    poems.append(head + "\n".join(lines))
    return poems


if os.path.isdir(a.poetry):
    poems = read_package(a.poetry)
else:
    with open_text(a.poetry, "r") as f:
        poems = [json.loads(line) for line in f if line.strip()]
print(f"{len(poems)} poems")
if not poems:
    sys.exit(f"no poems in {a.poetry}")
if a.dump_poems:
    tmp = a.dump_poems + ".tmp"
    with open_text(tmp, "w", a.dump_poems) as f:
        for p in poems:  # every poem in order, repeats included: the corpus depends on the order
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    os.replace(tmp, a.dump_poems)
    print(f"dumped to {a.dump_poems}: {os.path.getsize(a.dump_poems) / 2**20:.1f} MiB")
if not a.out:
    sys.exit(0)

sources = ["fin_news", "fin_report", "fin_exam", "fin_wiki"]
os.makedirs(a.out, exist_ok=True)
target = int(a.mb * 1e6)
per_file = target // a.files + 1
rng = random.Random(2026)
outs = [gzip.open(os.path.join(a.out, f"fincorpus_like_{i:02d}.jsonl.gz"), "wt", encoding="utf-8",
                  compresslevel=1) for i in range(a.files)]
text = open(a.text_out, "w", encoding="utf-8") if a.text_out else None
written, docs, fi, in_file = 0, 0, 0, 0
while written < target:
    order = list(range(len(poems)))
    rng.shuffle(order)
    i = 0
    while i < len(order) and written < target:
        k = rng.randint(3, 12)
        doc = "\n\n".join(poems[j] for j in order[i:i + k])
        i += k
        line = json.dumps({"text": doc, "meta": {"source": sources[docs % 4]}}, ensure_ascii=False) + "\n"
        outs[fi].write(line)
        if text:
            text.write(doc + "\n")
        n = len(line.encode("utf-8"))
        written += n
        in_file += n
        docs += 1
        if in_file >= per_file and fi + 1 < a.files:
            fi, in_file = fi + 1, 0
for o in outs:
    o.close()
if text:
    text.close()
print(f"{docs} documents, {written / 1e6:.1f} MB of JSONL in {a.files} files under {a.out}")
