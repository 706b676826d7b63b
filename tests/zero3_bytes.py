"""ZeRO-3's bytes per step, the test scripts' reference for apps/doctor_links.cpp's step_traffic().

Per optimizer step, each rank sends (N ranks, W = bytes of the working precision, per micro-batch):
  all-gathers:    (N-1)/N x W x (2 x embedding + 2 x blocks + head)
                  (the forward gathers every unit; the backward every unit again except the head,
                  which is gathered once for its loss and backward: actors/trainer.cpp)
  reduce-scatter: (N-1)/N x W x every unit (the gradient travels in the working precision)
and once per step the all-reduce of the end-of-step facts, (4 + units) doubles (a few dozen bytes);
each unit's size padded to a multiple of N (model/layout.cpp). Untied Llama-shaped models without
biases (the tests' custom models).

usage: python3 zero3_bytes.py PRECISION N VOCAB HIDDEN LAYERS INTERMEDIATE [GRAD_ACCUM]
prints "gathers reduce_scatter all_reduce total" in bytes (integers).
"""
import sys


def predict(prec, N, vocab, hidden, layers, inter, grad_accum=1):
    W = {"fp32": 4, "bf16": 2, "fp16": 2}[prec]
    pad = lambda n: (n + N - 1) // N * N
    emb = pad(vocab * hidden)
    block = pad(2 * hidden + 4 * hidden * hidden + 3 * hidden * inter)  # norms, q k v o, gate up down
    head = pad(hidden + vocab * hidden)                                 # final norm, LM head
    units = 2 + layers
    gathers = (N - 1) / N * W * (2 * emb + 2 * layers * block + head) * grad_accum
    reduce_scatter = (N - 1) / N * W * (emb + layers * block + head) * grad_accum
    all_reduce = 2 * (N - 1) / N * 8 * (4 + units)
    return gathers, reduce_scatter, all_reduce, emb + layers * block + head


if __name__ == "__main__":
    a = sys.argv[1:]
    g, r, ar, _ = predict(a[0], *map(int, a[1:]))
    print(round(g), round(r), round(ar), round(g + r + ar))
