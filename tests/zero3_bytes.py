"""ZeRO-3's bytes per step, the test scripts' reference for apps/doctor_links.cpp's step_traffic().

Per optimizer step, each rank sends (N ranks, W = bytes of the working precision, per micro-batch):
  all-gathers:    (N-1)/N x W x (2 x embedding + 2 x blocks + head)
                  (the forward gathers every unit; the backward every unit again except the head,
                  which is gathered once for its loss and backward: actors/trainer.cpp)
  reduce-scatter: (N-1)/N x W x every unit (the gradient travels in the working precision)
and once per step the all-reduce of the end-of-step facts, (4 + units + nodes) doubles (a few
dozen bytes; the node slots only with several nodes); each unit's size padded to a multiple of N
(model/layout.cpp). Untied Llama-shaped models without biases (the tests' custom models).
Node sharding (topology.shard = "node", optim/sharding.cpp): the same within each node's L ranks,
plus once per step the ring all-reduce of each rank's gradient shard between the nodes,
2 (nodes-1)/nodes x its shard (units padded to a multiple of L) x the gradient's element size.

usage: python3 zero3_bytes.py PRECISION N VOCAB HIDDEN LAYERS INTERMEDIATE [GRAD_ACCUM [NODES]]
  prints "gathers reduce_scatter all_reduce total" in bytes (integers), global sharding over N
  ranks on NODES nodes (default 1);
       python3 zero3_bytes.py --node PRECISION L NODES VOCAB HIDDEN LAYERS INTERMEDIATE GRAD_ACCUM GRAD_BYTES
  prints "gathers reduce_scatter all_reduce replica total" per rank under node sharding.
"""
import sys


def predict(prec, N, vocab, hidden, layers, inter, grad_accum=1, nodes=1):
    W = {"fp32": 4, "bf16": 2, "fp16": 2}[prec]
    pad = lambda n: (n + N - 1) // N * N
    emb = pad(vocab * hidden)
    block = pad(2 * hidden + 4 * hidden * hidden + 3 * hidden * inter)  # norms, q k v o, gate up down
    head = pad(hidden + vocab * hidden)                                 # final norm, LM head
    units = 2 + layers
    gathers = (N - 1) / N * W * (2 * emb + 2 * layers * block + head) * grad_accum
    reduce_scatter = (N - 1) / N * W * (emb + layers * block + head) * grad_accum
    all_reduce = 2 * (N - 1) / N * 8 * (4 + units + (nodes if nodes > 1 else 0))
    return gathers, reduce_scatter, all_reduce, emb + layers * block + head


def predict_node(prec, L, nodes, vocab, hidden, layers, inter, grad_accum, grad_bytes):
    """Node sharding: per rank, the node's gathers and reduce-scatters over its L ranks, the facts
    over all L x nodes ranks, and the all-reduce of its gradient shard between the nodes."""
    g, r, _, shard_elems = predict(prec, L, vocab, hidden, layers, inter, grad_accum)
    world = L * nodes
    units = 2 + layers
    all_reduce = 2 * (world - 1) / world * 8 * (4 + units + (nodes if nodes > 1 else 0))
    replica = 2 * (nodes - 1) / nodes * shard_elems / L * grad_bytes
    return g, r, all_reduce, replica


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "--node":
        g, r, ar, rep = predict_node(a[1], *map(int, a[2:]))
        print(round(g), round(r), round(ar), round(rep), round(g + r + ar + rep))
    else:
        g, r, ar, _ = predict(a[0], *map(int, a[1:]))
        print(round(g), round(r), round(ar), round(g + r + ar))
