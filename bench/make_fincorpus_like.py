#!/usr/bin/env python3
"""Builds a FinCorpus-shaped corpus from the npm package chinese-poetry (MIT): gzipped JSONL
{"text": ..., "meta": {"source": ...}}, documents of 3-12 poems (~0.3-3 KB, like FinCorpus's
short financial texts), repeated in fresh shuffles until the JSONL reaches --mb megabytes (10^6).
Also writes the documents' text, one document after another, for spm_encode (--text-out).
Deterministic (seeded). Usage: make_fincorpus_like.py POETRY_DIR OUT_DIR --mb 520 --files 8"""
import argparse, glob, gzip, json, os, random

ap = argparse.ArgumentParser()
ap.add_argument("poetry")
ap.add_argument("out")
ap.add_argument("--mb", type=float, default=520)
ap.add_argument("--files", type=int, default=8)
ap.add_argument("--text-out", default="")
a = ap.parse_args()

poems = []
for f in sorted(glob.glob(os.path.join(a.poetry, "**", "*.json"), recursive=True)):
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
print(f"{len(poems)} poems")
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
