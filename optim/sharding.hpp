// How ZeRO-3 shards the state across a cluster (topology.shard), and what one optimizer step moves
// between ranks and between nodes under it. Pure and LibTorch-free: the runtime (actors/context.cpp)
// decides with it, the doctor prints it, the tests check it against the bytes on the wire.
//
// global: every unit sharded over all ranks; per micro-batch two all-gathers and one
//   reduce-scatter among all ranks, so most of it crosses between nodes.
// node (HSDP): every unit sharded over each node's ranks and replicated across nodes; gathers and
//   reductions stay inside the node, and once per optimizer step (after accumulation) each rank
//   all-reduces its gradient shard with the ranks of the same local index on the other nodes.
//   The optimizer state is then held once per node (host memory, with CPU offload).
#pragma once

#include <cstdint>
#include <string>

#include "io/config.hpp"
#include "model/layout.hpp"
#include "optim/placement.hpp"

namespace xy {

// The bytes one rank sends in one optimizer step. Global sharding (step_traffic): the all-gathers
// of the forward and backward and the reduce-scatter of every unit's gradient, each (world-1)/world
// of the unit's padded size in the working precision, per micro-batch; once per step the
// all-reduce of the step's facts. Node sharding (node_step_traffic): the same within the node's
// `local` ranks, plus `replica`, the ring all-reduce of the rank's gradient shard between the
// nodes, 2 (nodes-1)/nodes of it, once per step. The one place of this arithmetic: the doctor
// prints it, `auto` compares it, tests/zero3_bytes_test.sh checks it against the wire.
struct StepTraffic {
  double gathers = 0, reduce_scatter = 0, all_reduce = 0;
  double replica = 0;  // node sharding: the gradient all-reduce between nodes
  bool node = false;
  int world = 1, nodes = 1;
  double total() const { return gathers + reduce_scatter + all_reduce + replica; }
  // Bytes node a's ranks send node b's ranks per step (a != b; a_devices, b_devices: their ranks).
  // Global: each rank sends every other rank an equal share. Node: the replica all-reduce goes
  // only to other nodes (a ring's share to each of them, on average); the facts as for global.
  double across(int a_devices, int b_devices) const;
};
// `nodes`: the job's nodes (with several, the facts carry a slot per node).
StepTraffic step_traffic(const ModelLayout& layout, int world, int working_bytes, int64_t micro_batches,
                         int nodes = 1);
// `node_layout` is built for the node's `local` ranks; `replica_bytes` is the element size of the
// gradient all-reduced between nodes (4: fp32; the working precision's where gradients land in it).
StepTraffic node_step_traffic(const ModelLayout& node_layout, int local, int nodes, int world,
                              int working_bytes, int64_t micro_batches, int replica_bytes);

// The element size of the gradient that node sharding all-reduces between nodes: fp32, except on
// GPUs where no node accumulates, where the reduced shard is all-reduced in the working precision
// before it lands in host memory.
int replica_grad_bytes(const Config& cfg);

// Every node drives as many devices (node sharding needs it: each node holds the same shards).
bool same_devices(const TopologyConfig& topo);

struct ShardChoice {
  bool node = false;  // node sharding (else global)
  std::string why;    // one line: the mode and the reason, with the bytes
};

// Resolves topology.shard on this node: `m` is the model with its vocabulary resolved, `facts` this
// node's memory (under `auto`, node sharding must fit it). Nodes' memories may differ, so the
// runtime then agrees on the store: node sharding only where every node chose it
// (actors/context.cpp). Throws std::invalid_argument for a configuration no sharding can run
// (grad_accum differing between nodes whose devices differ).
ShardChoice choose_sharding(const Config& cfg, const ModelConfig& m, const DeviceFacts& facts);

}  // namespace xy
