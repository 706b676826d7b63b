// topology.shard: the per-step traffic of each sharding and the choice between them
// (optim/sharding.hpp).
#include "optim/sharding.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace xy {
namespace {

// "29 MB", "5.38 GB": three significant digits.
std::string mb(double bytes) {
  char b[64];
  if (bytes >= 1e9) std::snprintf(b, sizeof b, "%.3g GB", bytes / 1e9);
  else std::snprintf(b, sizeof b, "%.3g MB", bytes / 1e6);
  return b;
}

// The facts' all-reduce at the end of every step: [|g|^2, loss, samples, checkpoint, overflowed
// per unit, and with several nodes each node's compute per sample] in fp64, over every rank.
double facts_bytes(const ModelLayout& layout, int world, int nodes) {
  const double slots = 4 + static_cast<double>(layout.units.size()) + (nodes > 1 ? nodes : 0);
  return world <= 1 ? 0 : 2.0 * (world - 1) / world * 8 * slots;
}

// Per micro-batch (actors/trainer.cpp): the forward gathers every unit, the head's loss and
// backward use its one gather, the backward gathers every block and the embedding again (tied: the
// embedding stays gathered from the forward, no second gather). Every unit's gradient is
// reduce-scattered once, in the working precision (comm/gloo_reduce_scatter.hpp).
void shard_group_traffic(StepTraffic& t, const ModelLayout& layout, int group, int working_bytes,
                         int64_t micro_batches) {
  if (group <= 1) return;
  const double share = static_cast<double>(group - 1) / group * working_bytes;
  double gathered = 0, reduced = 0;
  const size_t head = layout.units.size() - 1;
  for (size_t u = 0; u < layout.units.size(); ++u) {
    const double n = static_cast<double>(layout.units[u].padded_numel);
    gathered += (u == head || (u == 0 && layout.tied) ? 1 : 2) * n;
    reduced += n;
  }
  t.gathers = share * gathered * micro_batches;
  t.reduce_scatter = share * reduced * micro_batches;
}

}  // namespace

double StepTraffic::across(int a_devices, int b_devices) const {
  if (world <= 1) return 0;
  const double facts = all_reduce * a_devices * b_devices / (world - 1);
  if (!node) return (gathers + reduce_scatter) * a_devices * b_devices / (world - 1) + facts;
  return nodes <= 1 ? facts : replica * a_devices / (nodes - 1) + facts;
}

StepTraffic step_traffic(const ModelLayout& layout, int world, int working_bytes, int64_t micro_batches,
                         int nodes) {
  StepTraffic t;
  t.world = world;
  t.nodes = nodes;
  if (world <= 1 || layout.units.empty()) return t;
  shard_group_traffic(t, layout, world, working_bytes, micro_batches);
  t.all_reduce = facts_bytes(layout, world, nodes);
  return t;
}

StepTraffic node_step_traffic(const ModelLayout& node_layout, int local, int nodes, int world,
                              int working_bytes, int64_t micro_batches, int replica_bytes) {
  StepTraffic t;
  t.node = true;
  t.world = world;
  t.nodes = nodes;
  if (node_layout.units.empty()) return t;
  shard_group_traffic(t, node_layout, local, working_bytes, micro_batches);
  t.all_reduce = facts_bytes(node_layout, world, nodes);
  if (nodes > 1) {
    double shard = 0;
    for (const auto& u : node_layout.units) shard += static_cast<double>(u.shard_numel);
    // A ring all-reduce: each rank sends 2 (nodes-1)/nodes of the buffer (Gloo's and NCCL's).
    t.replica = 2.0 * (nodes - 1) / nodes * shard * replica_bytes;
  }
  return t;
}

bool same_devices(const TopologyConfig& topo) {
  for (const NodeSpec& n : topo.nodes)
    if (n.devices != topo.nodes[0].devices) return false;
  return true;
}

int replica_grad_bytes(const Config& cfg) {
  const bool cuda = cfg.topology.device == "cuda";
  // Any node accumulating makes every node's gradients fp32 (max_grad_accum, io/config.hpp).
  if (cuda && max_grad_accum(cfg) == 1 && cfg.train.precision != "fp32") return 2;
  return 4;
}

ShardChoice choose_sharding(const Config& cfg, const ModelConfig& m, const DeviceFacts& facts) {
  const auto& topo = cfg.topology;
  const int nodes = static_cast<int>(topo.nodes.size());
  ShardChoice c;
  if (nodes <= 1) {
    c.why = "global (one node: node and global sharding are the same)";
    return c;
  }
  const bool uniform = same_devices(topo);
  bool same_accum = true;
  for (int i = 1; i < nodes; ++i) same_accum = same_accum && node_grad_accum(cfg, i) == node_grad_accum(cfg, 0);
  if (!same_accum && !uniform)
    throw std::invalid_argument(
        "the nodes run different grad_accum (topology.nodes[i].grad_accum), which only node sharding "
        "allows, but their devices differ, which node sharding does not: give every node the same "
        "grad_accum or the same devices");
  if (topo.shard == "global") {
    c.why = "global (topology.shard = \"global\")";
    return c;
  }
  if (topo.shard == "node") {
    c.node = true;
    c.why = "node (topology.shard = \"node\")";
    return c;
  }
  // auto
  if (!uniform) {
    c.why = "global (topology.shard = \"auto\": the nodes drive different numbers of devices, and node "
            "sharding needs the same on every node)";
    return c;
  }
  const int local = topo.nodes[0].devices, world = topo.world_size();
  const int wbytes = cfg.train.precision == "fp32" ? 4 : 2;
  const ModelLayout node_layout = build_layout(m, local, cfg.optimizer.no_decay);
  const ModelLayout global_layout = build_layout(m, world, cfg.optimizer.no_decay);
  const int64_t accum = node_grad_accum(cfg, 0);
  const StepTraffic g = step_traffic(global_layout, world, wbytes, accum, nodes);
  const StepTraffic n = node_step_traffic(node_layout, local, nodes, world, wbytes, accum,
                                          replica_grad_bytes(cfg));
  const double g_across = g.across(local, local), n_across = n.across(local, local);
  const std::string bytes = "between two nodes per step node sharding moves " + mb(n_across) +
                            " each way, global " + mb(g_across);
  const PlacementPlan plan = plan_placement(cfg, node_layout, local, local, facts);
  if (!plan.refusal().empty()) {
    if (!same_accum)
      throw std::invalid_argument("the nodes run different grad_accum, which needs node sharding, but "
                                  "node sharding does not fit here: " + plan.refusal());
    c.why = "global (topology.shard = \"auto\": node sharding holds 1/" + std::to_string(local) +
            " of the state per rank instead of 1/" + std::to_string(world) + ", which does not fit: " +
            plan.refusal() + ")";
    return c;
  }
  if (!same_accum || n_across < g_across) {
    c.node = true;
    c.why = "node (topology.shard = \"auto\": " + bytes +
            (same_accum ? "" : "; the nodes' grad_accum differ, which only node sharding allows") + ")";
  } else {
    c.why = "global (topology.shard = \"auto\": " + bytes + ")";
  }
  return c;
}

}  // namespace xy
