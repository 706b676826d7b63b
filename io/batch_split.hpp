// Mixed GPUs: a per-node split of the global batch that balances the nodes' compute.
//
// Every node's ranks take micro_batch x grad_accum samples per step; a step lasts as long as the
// slowest node's compute. From each node's measured compute seconds per sample (the trainer's
// first steps), balanced_micro_batches finds micro-batches that keep the samples per step (the
// sum of devices x micro_batch x grad_accum) and make the slowest node as fast as it can be,
// grad_accum kept as it is. Header-only: no torch (tests/samples_test.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace xy {

struct NodeSplit {
  int devices = 1;
  int64_t micro_batch = 1, grad_accum = 1;
  double seconds_per_sample = 0;  // one rank's compute per sample, measured
};

// A node's predicted compute per step with `micro_batch`.
inline double node_step_compute(const NodeSplit& n, int64_t micro_batch) {
  return n.seconds_per_sample * static_cast<double>(micro_batch * n.grad_accum);
}

// The slowest node's predicted compute per step with micro-batches `mb` (one per node).
inline double step_compute(const std::vector<NodeSplit>& nodes, const std::vector<int64_t>& mb) {
  double worst = 0;
  for (size_t i = 0; i < nodes.size(); ++i) worst = std::max(worst, node_step_compute(nodes[i], mb[i]));
  return worst;
}

// Per-node micro-batches (each >= 1) with the same samples per step as the nodes' current ones
// whose slowest node's compute is the least (exact: a dynamic program over the samples per
// step). Empty when a time is not positive and finite, or the samples per step pass 2^16.
inline std::vector<int64_t> balanced_micro_batches(const std::vector<NodeSplit>& nodes) {
  int64_t samples = 0;
  for (const NodeSplit& n : nodes) {
    if (!(n.seconds_per_sample > 0) || !std::isfinite(n.seconds_per_sample) || n.devices < 1 ||
        n.micro_batch < 1 || n.grad_accum < 1)
      return {};
    samples += n.devices * n.micro_batch * n.grad_accum;
  }
  if (nodes.empty() || samples > (int64_t{1} << 16)) return {};
  // best[k][g]: the least slowest-node compute of nodes 0..k-1 taking g samples per step.
  const size_t count = nodes.size(), width = static_cast<size_t>(samples) + 1;
  std::vector<std::vector<double>> best(count + 1, std::vector<double>(width, INFINITY));
  std::vector<std::vector<int64_t>> pick(count, std::vector<int64_t>(width, 0));
  best[0][0] = 0;
  for (size_t k = 0; k < count; ++k) {
    const int64_t unit = nodes[k].devices * nodes[k].grad_accum;
    for (int64_t g = 0; g <= samples; ++g)
      for (int64_t m = 1; m * unit <= g; ++m) {
        const double t = std::max(best[k][g - m * unit], node_step_compute(nodes[k], m));
        if (t < best[k + 1][g]) best[k + 1][g] = t, pick[k][g] = m;
      }
  }
  std::vector<int64_t> mb(count);
  for (int64_t g = samples, k = static_cast<int64_t>(count) - 1; k >= 0; --k) {
    mb[k] = pick[k][g];
    g -= mb[k] * nodes[k].devices * nodes[k].grad_accum;
  }
  return mb;  // the current split is one, so there is always an answer
}

// The proposal's line (without "xy: "), or "" when there is nothing to propose: one node, no
// balanced split, or none predicted faster than the current one.
inline std::string split_proposal(const std::vector<NodeSplit>& nodes) {
  if (nodes.size() < 2) return "";
  const std::vector<int64_t> mb = balanced_micro_batches(nodes);
  std::vector<int64_t> now;
  int64_t samples = 0;
  for (const NodeSplit& n : nodes) {
    now.push_back(n.micro_batch);
    samples += n.devices * n.micro_batch * n.grad_accum;
  }
  if (mb.empty() || !(step_compute(nodes, mb) < step_compute(nodes, now))) return "";
  char b[160];
  std::string out = "nodes' compute per sample:";
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::snprintf(b, sizeof b, "%s node %zu %.3g s", i ? "," : "", i, nodes[i].seconds_per_sample);
    out += b;
  }
  out += "; balanced:";
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::snprintf(b, sizeof b, "%s topology.nodes[%zu].micro_batch = %lld", i ? "," : "", i,
                  static_cast<long long>(mb[i]));
    out += b;
  }
  std::snprintf(b, sizeof b, " (same %lld samples per step; predicted step compute %.3g s instead of %.3g s)",
                static_cast<long long>(samples), step_compute(nodes, mb), step_compute(nodes, now));
  return out + b;
}

}  // namespace xy
