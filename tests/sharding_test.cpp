// topology.shard (optim/sharding.*): what `auto` chooses and why, for configurations whose answer
// follows from the bytes each sharding moves between two nodes per step (written out here by hand
// for the 1b preset) and from memory; the explicit modes; the configurations no sharding runs.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "io/config.hpp"
#include "optim/sharding.hpp"

using namespace xy;

namespace {

// Two nodes of `devices` CPU or CUDA ranks each, the 1b preset (vocab 32000).
Config two_nodes(const std::string& shard, int devices, const std::string& precision, int64_t accum,
                 const std::string& device = "cpu") {
  Config cfg;
  cfg.topology.device = device;
  cfg.topology.shard = shard;
  for (int i = 0; i < 2; ++i) {
    NodeSpec n;
    n.host = "10.0.0." + std::to_string(i + 1);
    n.port = 29500;
    n.devices = devices;
    cfg.topology.nodes.push_back(n);
  }
  cfg.model = model_preset("1b");
  cfg.model.vocab_size = 32000;
  cfg.train.precision = precision;
  cfg.train.grad_accum = accum;
  return cfg;
}

DeviceFacts host_memory(double gib) {
  DeviceFacts f;
  f.host_bytes = static_cast<int64_t>(gib * 1073741824.0);
  return f;
}

ShardChoice choose(const Config& cfg, double host_gib = 0) {
  const ShardChoice c = choose_sharding(cfg, cfg.model, host_memory(host_gib));
  std::printf("  %s\n", c.why.c_str());
  return c;
}

}  // namespace

// The bytes between two nodes, by hand: global, each rank sends (W-1)/W of the working-precision
// model per gather (two per micro-batch, the head's one) and per reduce-scatter, to all W-1 others
// equally; node, each rank all-reduces its 1/L shard with its replica, a ring of two: the shard
// once, in fp32 on CPU ranks.
TEST(Sharding, AcrossTwoNodesByHand) {
  for (int devices : {1, 2}) {
    for (int64_t accum : {1, 8}) {
      const Config cfg = two_nodes("auto", devices, "bf16", accum);
      const int world = 2 * devices;
      const ModelLayout g = build_layout(cfg.model, world, {}), n = build_layout(cfg.model, devices, {});
      double gathered = 0, reduced = 0, shard = 0;
      for (size_t u = 0; u < g.units.size(); ++u) {
        gathered += (u + 1 == g.units.size() ? 1 : 2) * static_cast<double>(g.units[u].padded_numel);
        reduced += static_cast<double>(g.units[u].padded_numel);
      }
      for (const auto& u : n.units) shard += static_cast<double>(u.shard_numel);
      const double facts = 2.0 * (world - 1) / world * 8 * (4 + g.units.size() + 2);
      const double per_rank = (world - 1.0) / world * 2 * (gathered + reduced) * accum;
      const double want_global = (per_rank + facts) * devices * devices / (world - 1);
      const double want_node = 2.0 * (2 - 1) / 2 * shard * 4 * devices + facts * devices * devices / (world - 1);
      const StepTraffic tg = step_traffic(g, world, 2, accum, 2);
      const StepTraffic tn = node_step_traffic(n, devices, 2, world, 2, accum, 4);
      std::printf("%d device(s) a node, grad_accum %lld: global %.0f B (by hand %.0f), node %.0f B (by hand %.0f)\n",
                  devices, static_cast<long long>(accum), tg.across(devices, devices), want_global,
                  tn.across(devices, devices), want_node);
      EXPECT_NEAR(tg.across(devices, devices), want_global, 1e-9 * want_global);
      EXPECT_NEAR(tn.across(devices, devices), want_node, 1e-9 * want_node);
      // auto takes the smaller (memory unchecked here).
      EXPECT_EQ(choose(cfg).node, want_node < want_global);
    }
  }
}

// bf16 on CPU ranks, one rank a node, no accumulation: the fp32 gradient all-reduce (4 bytes of
// the model) outweighs global's 16-bit gathers and reduce-scatter (3 x 2 bytes, half of it from
// the other node): global. With accumulation 8, node sharding moves the same and global 8 times
// more: node.
TEST(Sharding, AutoFollowsTheBytes) {
  const ShardChoice a = choose(two_nodes("auto", 1, "bf16", 1));
  EXPECT_FALSE(a.node);
  EXPECT_NE(a.why.find("global (topology.shard = \"auto\": between two nodes per step node sharding moves"),
            std::string::npos);
  EXPECT_TRUE(choose(two_nodes("auto", 1, "bf16", 8)).node);
  EXPECT_TRUE(choose(two_nodes("auto", 2, "fp32", 1)).node);
  // On GPUs without accumulation the gradient all-reduce between nodes is 16-bit: node.
  EXPECT_TRUE(choose(two_nodes("auto", 1, "bf16", 1, "cuda")).node);
}

TEST(Sharding, AutoNeedsTheMemory) {
  // 1b (1.35e9 parameters) on CPU ranks in bf16 with accumulation: 18 bytes a parameter (working
  // copy 2, fp32 gradient 4, master, m, v 12). Node sharding holds the whole model's state on each
  // node (22.6 GiB), global half of it (11.3 GiB). 15 GiB of host memory: global, with the numbers.
  const Config cfg = two_nodes("auto", 2, "bf16", 8);
  const ShardChoice tight = choose(cfg, 15);
  EXPECT_FALSE(tight.node);
  EXPECT_NE(tight.why.find("does not fit"), std::string::npos);
  EXPECT_NE(tight.why.find("GiB"), std::string::npos);
  EXPECT_TRUE(choose(cfg, 64).node);
  // Explicit node sharding is not second-guessed here (the plan refuses it at start-up).
  EXPECT_TRUE(choose(two_nodes("node", 2, "bf16", 8), 15).node);
}

TEST(Sharding, ExplicitModesAndOneNode) {
  EXPECT_FALSE(choose(two_nodes("global", 2, "bf16", 8)).node);
  EXPECT_TRUE(choose(two_nodes("node", 1, "bf16", 1)).node);
  Config one = two_nodes("node", 2, "bf16", 8);
  one.topology.nodes.pop_back();
  const ShardChoice c = choose(one);
  EXPECT_FALSE(c.node);
  EXPECT_NE(c.why.find("one node"), std::string::npos);
}

TEST(Sharding, DifferentNodes) {
  // Different devices: auto takes global (node sharding needs the same on every node).
  Config cfg = two_nodes("auto", 2, "bf16", 8);
  cfg.topology.nodes[1].devices = 1;
  const ShardChoice c = choose(cfg);
  EXPECT_FALSE(c.node);
  EXPECT_NE(c.why.find("different numbers of devices"), std::string::npos);
  // ... and with different grad_accum too, nothing can run it: refused, naming both.
  cfg.topology.nodes[1].grad_accum = 2;
  try {
    choose(cfg);
    ADD_FAILURE() << "different devices and grad_accum were accepted";
  } catch (const std::invalid_argument& e) {
    std::printf("  refused: %s\n", e.what());
    EXPECT_NE(std::string(e.what()).find("grad_accum"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("devices"), std::string::npos);
  }
  // Same devices, different grad_accum: only node sharding allows it, auto takes it.
  Config same = two_nodes("auto", 1, "bf16", 1);
  same.topology.nodes[1].grad_accum = 2;
  const ShardChoice n = choose(same);
  EXPECT_TRUE(n.node);
  EXPECT_NE(n.why.find("only node sharding allows"), std::string::npos);
}
