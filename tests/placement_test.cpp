// The placement plan (optim/placement.*): its bytes equal an arithmetic written out here for every
// preset, precision, parameter offload, delayed update, gradient accumulation and world size, on a
// GPU (made-up DeviceFacts) and on CPU ranks; a plan that does not fit the host or the GPU is
// refused with the numbers; topology.gpu_memory_gb caps what the GPU offers; and what a real CPU
// context allocates (build_context, 1 and 2 ranks) is, tensor by tensor, what its plan priced.
#include <gtest/gtest.h>

#include <cstdio>
#include <regex>
#include <string>

#include "actors/context.hpp"
#include "optim/placement.hpp"
#include "test_util.hpp"

using namespace xy;

namespace {

constexpr double kGiB = 1073741824.0;

// Per-rank bytes by hand: each piece's bytes per element times the shard sizes.
struct Expected {
  int64_t device = 0, host = 0, pinned = 0, state_host = 0, working = 0;
};

// The device share of one unit's shard under a fraction f (optimizer.placement): the whole shard at
// f = 1, else f x n rounded down to 64 elements.
int64_t device_part(int64_t n, double f) {
  return f >= 1 ? n : static_cast<int64_t>(f * static_cast<double>(n)) / 64 * 64;
}

Expected by_hand(const ModelLayout& layout, const std::string& precision, bool offload, bool delayed,
                 int64_t grad_accum, bool cuda, double f = 0) {
  int64_t shard = 0, dev = 0, largest_up = 0;  // elements of one rank; on the GPU; largest host part uploaded
  for (const UnitLayout& u : layout.units) {
    shard += u.shard_numel;
    const int64_t d = cuda ? device_part(u.shard_numel, f) : 0;
    dev += d;
    if (d < u.shard_numel) largest_up = std::max(largest_up, u.shard_numel - d);
  }
  const int64_t host = shard - dev;                 // elements whose optimizer state is on the host
  const int64_t w = precision == "fp32" ? 4 : 2;    // working precision
  // The delayed update: a second working copy, except on the GPU, where the next version's host
  // part waits in pinned memory (as many elements as the host part of the state) instead.
  const bool deferred = cuda && delayed && !offload;
  const int64_t copies = delayed && !deferred ? 2 : 1;
  Expected e;
  e.working = w * shard * copies;
  const int64_t adam = (4 + 4 + 4) * host;          // fp32 master, m, v: ordinary host memory
  if (cuda) {
    const int64_t landing = w * host;               // pinned, in the working precision
    const int64_t accum = grad_accum > 1 ? 4 * shard : 0;  // fp32 on the GPU
    const int64_t staging = offload ? 0 : deferred ? w * host : 2 * largest_up * w;  // pinned
    const int64_t dev_state = (4 + 4 + 4 + w) * dev;  // master, m, v and the landed gradient on the GPU
    e.device = (offload ? 0 : e.working) + accum + dev_state;
    e.pinned = (offload ? e.working : 0) + landing + staging;
    e.host = e.pinned + adam;
    e.state_host = adam + landing;
  } else {
    const int64_t landing = (w == 2 && grad_accum == 1 ? 2 : 4) * shard;
    e.host = e.working + adam + landing;
    e.state_host = adam + landing;
  }
  return e;
}

Config config_for(const std::string& preset, const std::string& precision, bool offload, bool delayed,
                  int64_t grad_accum, int world) {
  Config cfg;
  cfg.model = model_preset(preset);
  cfg.train.precision = precision;
  cfg.train.grad_accum = grad_accum;
  cfg.actors.offload_params = offload;
  cfg.optimizer.delayed_update = delayed;
  cfg.optimizer.placement = "cpu";  // the memory model's tests; the modes have their own below
  cfg.topology.nodes = {NodeSpec{"127.0.0.1", 0, world}};
  return cfg;
}

DeviceFacts gpu(double free_gib, double total_gib) {
  DeviceFacts f;
  f.kind = DeviceFacts::Kind::kCuda;
  f.free_bytes = static_cast<int64_t>(free_gib * kGiB);
  f.total_bytes = static_cast<int64_t>(total_gib * kGiB);
  return f;
}

// The number after `label` in `text` ("needs 12.3 GiB" -> 12.3), in GiB; -1 if absent.
double gib_after(const std::string& text, const std::string& label) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(label + " ([0-9.]+) (GiB|MiB)"))) return -1;
  return std::stod(m[1]) / (m[2] == "MiB" ? 1024.0 : 1.0);
}

}  // namespace

TEST(Placement, BytesEqualTheArithmeticForEveryPresetAndSetting) {
  int plans = 0, mismatches = 0;
  for (const char* preset : {"tiny", "1b", "3b", "7b", "xuanyuan-6b", "llama3.1-8b", "llama3.2-1b",
                             "llama3.2-3b", "qwen3-1.7b", "qwen3-8b"})
    for (int world : {1, 2, 4}) {
      const ModelLayout layout = build_layout(model_preset(preset), world, {});
      for (const char* precision : {"fp32", "bf16", "fp16"})
        for (bool offload : {false, true})
          for (bool delayed : {false, true})
            for (int64_t accum : {1, 2})
              for (const char* placement : {"cpu", "0.3", "gpu"})
              for (bool cuda : {false, true}) {
                Config cfg = config_for(preset, precision, offload, delayed, accum, world);
                cfg.optimizer.placement = placement;
                DeviceFacts facts = cuda ? gpu(0, 0) : DeviceFacts{};  // memory unknown: not checked
                const PlacementPlan p = plan_placement(cfg, layout, world, world, facts);
                const Expected e = by_hand(layout, precision, offload, delayed, accum, cuda,
                                           placement_fraction(placement));
                ++plans;
                const bool same = p.device_bytes == e.device && p.host_bytes == e.host &&
                                  p.pinned_bytes == e.pinned && p.state_host_bytes == e.state_host &&
                                  p.working_bytes == e.working && p.refusal().empty() &&
                                  p.units.size() == layout.units.size();
                if (!same && ++mismatches <= 5)
                  ADD_FAILURE() << preset << " world " << world << " " << precision << " placement " << placement << " offload "
                                << offload << " delayed " << delayed << " grad_accum " << accum
                                << (cuda ? " GPU" : " CPU") << ": plan device/host/pinned/state/working "
                                << p.device_bytes << "/" << p.host_bytes << "/" << p.pinned_bytes << "/"
                                << p.state_host_bytes << "/" << p.working_bytes << ", by hand "
                                << e.device << "/" << e.host << "/" << e.pinned << "/" << e.state_host
                                << "/" << e.working;
                for (size_t u = 0; u < p.units.size(); ++u)
                  EXPECT_EQ(p.units[u].device_elems,
                            cuda ? device_part(layout.units[u].shard_numel, placement_fraction(placement)) : 0);
              }
    }
  std::printf("%d plans, %d differ from the arithmetic\n", plans, mismatches);
  EXPECT_EQ(plans, 10 * 3 * 3 * 2 * 2 * 2 * 3 * 2);
  EXPECT_EQ(mismatches, 0);
}

// What the plan decides per unit, as the allocation and the optimizer read it.
TEST(Placement, WhereEachPieceGoes) {
  const ModelLayout layout = build_layout(model_preset("tiny"), 2, {});
  {
    const PlacementPlan p = plan_placement(config_for("tiny", "bf16", false, true, 2, 2), layout, 2, 1, gpu(0, 0));
    EXPECT_EQ(p.units[0].working, Where::kDevice);
    // The delayed update on the GPU: one working copy; the parameter-shard writes the new version.
    EXPECT_FALSE(p.uploads(0));
    EXPECT_FALSE(p.units[0].double_buffered);
    EXPECT_TRUE(p.units[0].deferred_write);
    EXPECT_EQ(p.units[0].grad_landing, Where::kPinnedHost);
    EXPECT_EQ(p.units[0].grad_landing_bytes, 2);
    EXPECT_TRUE(p.units[0].grad_on_device);
    EXPECT_EQ(p.staging_elems, 0);
    std::printf("GPU: %s\n", p.summary().c_str());
    EXPECT_NE(p.summary().find("per rank: GPU "), std::string::npos);
    EXPECT_NE(p.why.find("one copy with the delayed update"), std::string::npos);
  }
  {  // the exact update: the optimizer uploads through its staging buffers
    const PlacementPlan p = plan_placement(config_for("tiny", "bf16", false, false, 1, 2), layout, 2, 1, gpu(0, 0));
    EXPECT_TRUE(p.uploads(0));
    EXPECT_FALSE(p.units[0].deferred_write);
    EXPECT_GT(p.staging_elems, 0);
  }
  {  // parameter offload with the delayed update: two copies in pinned host memory
    const PlacementPlan p = plan_placement(config_for("tiny", "bf16", true, true, 1, 2), layout, 2, 1, gpu(0, 0));
    EXPECT_TRUE(p.units[0].double_buffered);
    EXPECT_FALSE(p.units[0].deferred_write);
    EXPECT_NE(p.why.find("double-buffered"), std::string::npos);
  }
  {
    const PlacementPlan p = plan_placement(config_for("tiny", "fp32", true, false, 1, 2), layout, 2, 2, gpu(0, 0));
    EXPECT_EQ(p.units[0].working, Where::kPinnedHost);
    EXPECT_FALSE(p.uploads(0));
    EXPECT_EQ(p.staging_elems, 0);
    EXPECT_EQ(p.units[0].grad_landing_bytes, 4);
    EXPECT_FALSE(p.units[0].grad_on_device);
    EXPECT_EQ(p.device_bytes, 0);
    std::printf("GPU, parameter offload: %s\n", p.summary().c_str());
    EXPECT_NE(p.summary().find("per rank (2 on this node)"), std::string::npos);
  }
  {
    const PlacementPlan p = plan_placement(config_for("tiny", "bf16", false, false, 1, 2), layout, 2, 2, DeviceFacts{});
    EXPECT_EQ(p.units[0].working, Where::kHost);
    EXPECT_EQ(p.units[0].grad_landing, Where::kHost);
    EXPECT_EQ(p.units[0].grad_landing_bytes, 2);
    EXPECT_EQ(p.device_bytes + p.pinned_bytes, 0);
    std::printf("CPU: %s\n", p.summary().c_str());
  }
}

// A node whose host memory cannot hold its ranks' state is refused, naming what it needs and has;
// one byte more and it fits.
TEST(Placement, HostTooSmallIsRefusedWithTheNumbers) {
  for (bool cuda : {false, true}) {
    const Config cfg = config_for("7b", "bf16", true, true, 2, 4);
    const ModelLayout layout = build_layout(cfg.model, 4, {});
    const Expected e = by_hand(layout, "bf16", true, true, 2, cuda);
    const int64_t node = 2 * e.host;  // 2 of the 4 ranks on this node
    DeviceFacts facts = cuda ? gpu(0, 0) : DeviceFacts{};
    facts.host_bytes = node - 1;
    const PlacementPlan p = plan_placement(cfg, layout, 4, 2, facts);
    std::printf("%s: %s\n", cuda ? "GPU" : "CPU", p.refusal().c_str());
    EXPECT_TRUE(p.refused_device.empty());
    EXPECT_NE(p.refused_host.find("the model is too large for this machine: 6.74e+09 parameters"), std::string::npos);
    EXPECT_NE(p.refused_host.find("(2 of 4 ranks"), std::string::npos);
    EXPECT_NEAR(gib_after(p.refused_host, "needs"), node / kGiB, 0.05);
    EXPECT_NEAR(gib_after(p.refused_host, "this machine has"), (node - 1) / kGiB, 0.05);
    facts.host_bytes = node;
    EXPECT_EQ(plan_placement(cfg, layout, 4, 2, facts).refusal(), "");
  }
}

// A GPU that cannot hold a rank's device state is refused, naming it; the cap lowers what the GPU
// offers to min(free, cap).
TEST(Placement, GpuTooSmallIsRefusedWithTheNumbers) {
  // Llama-2-7B in bf16 with the delayed update and grad_accum 2 on one GPU: the working copy 12.6
  // GiB (one: the delayed update's next version waits in host memory) and the fp32 accumulator
  // 25.1 GiB: 37.7 GiB, more than a V100-32G, less than an A100-40G.
  Config cfg = config_for("7b", "bf16", false, true, 2, 1);
  const ModelLayout layout = build_layout(cfg.model, 1, {});
  const Expected e = by_hand(layout, "bf16", false, true, 2, true);
  std::printf("7b per GPU: %.2f GiB\n", e.device / kGiB);
  EXPECT_EQ(plan_placement(cfg, layout, 1, 1, gpu(139, 140)).refusal(), "");
  {
    const PlacementPlan p = plan_placement(cfg, layout, 1, 1, gpu(31.7, 32));
    std::printf("V100-32G: %s\n", p.refusal().c_str());
    EXPECT_TRUE(p.refused_host.empty());
    EXPECT_NEAR(gib_after(p.refused_device, "keeps"), e.device / kGiB, 0.05);
    EXPECT_NEAR(gib_after(p.refused_device, "working copies"), 2.0 * layout.total_numel() / kGiB, 0.05);
    EXPECT_NEAR(gib_after(p.refused_device, "fp32 gradient accumulator"), 4.0 * layout.total_numel() / kGiB, 0.05);
    EXPECT_NEAR(gib_after(p.refused_device, "a GPU here has"), 31.7, 0.05);
    EXPECT_NE(p.refused_device.find("actors.offload_params = true"), std::string::npos);
  }
  EXPECT_EQ(plan_placement(cfg, layout, 1, 1, gpu(39.4, 39.5)).refusal(), "");  // an A100-40G
  // The same H200 capped at 32 GiB plays the V100: refused, the cap named.
  cfg.topology.gpu_memory_gb = 32;
  {
    const PlacementPlan p = plan_placement(cfg, layout, 1, 1, gpu(139, 140));
    std::printf("H200 capped: %s\n", p.refusal().c_str());
    EXPECT_EQ(p.usable_device_bytes, static_cast<int64_t>(32 * kGiB));
    EXPECT_NEAR(gib_after(p.refused_device, "a GPU here has"), 32, 0.05);
    EXPECT_NE(p.refused_device.find("topology.gpu_memory_gb = 32"), std::string::npos);
  }
  // The least of free and cap: a GPU with less free than the cap offers its free memory.
  cfg.topology.gpu_memory_gb = 80;
  EXPECT_EQ(plan_placement(cfg, layout, 1, 1, gpu(30, 140)).usable_device_bytes, static_cast<int64_t>(30 * kGiB));
  EXPECT_NE(plan_placement(cfg, layout, 1, 1, gpu(30, 140)).refused_device, "");
  EXPECT_EQ(plan_placement(cfg, layout, 1, 1, gpu(139, 140)).refusal(), "");
  // Exactly enough fits; a byte less does not.
  cfg.topology.gpu_memory_gb = 0;
  DeviceFacts exact = gpu(0, 140);
  exact.free_bytes = e.device;
  EXPECT_EQ(plan_placement(cfg, layout, 1, 1, exact).refusal(), "");
  exact.free_bytes = e.device - 1;
  EXPECT_NE(plan_placement(cfg, layout, 1, 1, exact).refused_device, "");
  // Parameter offload leaves only the accumulator on the GPU; on 2 ranks each holds half.
  cfg.actors.offload_params = true;
  EXPECT_EQ(plan_placement(cfg, layout, 1, 1, gpu(39.4, 39.5)).refusal(), "");
  cfg.actors.offload_params = false;
  const ModelLayout two = build_layout(cfg.model, 2, {});
  cfg.topology.nodes = {NodeSpec{"127.0.0.1", 0, 2}};
  EXPECT_EQ(plan_placement(cfg, two, 2, 2, gpu(39.4, 39.5)).refusal(), "");
  // CPU ranks ignore GPU facts and the cap.
  cfg.topology.gpu_memory_gb = 1;
  EXPECT_EQ(plan_placement(cfg, two, 2, 2, DeviceFacts{}).refusal(), "");
}

TEST(Placement, GpuMemoryCapInTheConfig) {
  const Config c = parse_config("[topology]\ndevice = \"cuda\"\ngpu_memory_gb = 39.5\n");
  EXPECT_EQ(c.topology.gpu_memory_gb, 39.5);
  EXPECT_EQ(gpu_cap_bytes(c), static_cast<int64_t>(39.5 * kGiB));
  EXPECT_EQ(gpu_cap_bytes(parse_config("")), 0);
  for (const char* bad : {"[topology]\ndevice = \"cuda\"\ngpu_memory_gb = -1\n",
                          "[topology]\ngpu_memory_gb = 40\n"}) {
    try {
      parse_config(bad);
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const ConfigError& e) {
      std::printf("refused: %s\n", e.what());
      EXPECT_NE(std::string(e.what()).find("topology.gpu_memory_gb"), std::string::npos);
    }
  }
}

// Predicted == allocated: a real CPU context's tensors, counted here one by one, are the plan's
// bytes (build_context also checks it, and fails with both numbers where they differ).
TEST(Placement, CpuContextAllocatesWhatThePlanPriced) {
  struct Case {
    int world;
    const char* precision;
    int64_t grad_accum;
    bool delayed;
  };
  for (const Case& c : {Case{1, "fp32", 1, false}, Case{1, "bf16", 1, true}, Case{2, "bf16", 2, false},
                        Case{2, "fp32", 2, true}, Case{2, "bf16", 1, false}}) {
    Config cfg = test::tiny_config(c.world, 2, c.grad_accum);
    cfg.train.precision = c.precision;
    cfg.optimizer.delayed_update = c.delayed;
    RunOptions ro;
    ro.data = test::random_samples(2000, cfg.data.seq_len, cfg.model.vocab_size);
    ro.quiet = true;
    NodeContext ctx;
    build_context(ctx, cfg, ro);
    const PlacementPlan& p = ctx.plan;
    const Expected e = by_hand(ctx.layout, c.precision, false, c.delayed, c.grad_accum, false);
    ASSERT_EQ(ctx.shards.size(), static_cast<size_t>(c.world));
    for (const auto& sh : ctx.shards) {
      int64_t host = 0, device = 0, state = 0;
      auto count = [&](const std::vector<at::Tensor>& list, bool is_state) {
        for (const at::Tensor& t : list) {
          (t.is_cpu() ? host : device) += t.numel() * t.element_size();
          if (is_state) state += t.numel() * t.element_size();
        }
      };
      count(sh->working, false);
      count(sh->working_alt, false);
      count(sh->grad_dev, true);
      count(sh->grad, true);
      count(sh->master, true);
      count(sh->m, true);
      count(sh->v, true);
      EXPECT_FALSE(sh->staging[0].defined());
      std::printf("world %d %s grad_accum %lld delayed %d rank %d: allocated host %lld, plan %lld, "
                  "by hand %lld\n", c.world, c.precision, static_cast<long long>(c.grad_accum), c.delayed,
                  sh->rank, static_cast<long long>(host), static_cast<long long>(p.host_bytes),
                  static_cast<long long>(e.host));
      EXPECT_EQ(host, p.host_bytes);
      EXPECT_EQ(host, e.host);
      EXPECT_EQ(device, 0);
      EXPECT_EQ(p.device_bytes, 0);
      EXPECT_EQ(state, p.state_host_bytes);
      EXPECT_EQ(sh->working_bytes(), p.working_bytes);
      EXPECT_EQ(sh->host_bytes(), host);
      EXPECT_EQ(sh->pinned_bytes(), 0);
    }
  }
}

// optimizer.placement on a GPU: what each mode puts where, auto's choice against the memory it is
// given, and a mode that cannot fit refused with the numbers.
TEST(Placement, ModesDecideTheDeviceShare) {
  Config cfg = config_for("7b", "bf16", false, false, 1, 1);
  cfg.data.seq_len = 4096;  // as in bench/configs/7b-h100-dpu.toml
  cfg.train.micro_batch = 1;
  const ModelLayout layout = build_layout(cfg.model, 1, {});
  const int64_t shard = layout.total_numel();  // world 1: one shard of everything (no padding)
  const DeviceFacts h200 = gpu(139.3, 140);
  // gpu: every element's state on the GPU, nothing on the host but what uploads nothing.
  cfg.optimizer.placement = "gpu";
  PlacementPlan p = plan_placement(cfg, layout, 1, 1, h200);
  EXPECT_EQ(p.refusal(), "");
  EXPECT_EQ(p.device_share, 1.0);
  EXPECT_EQ(p.host_bytes, 0);
  EXPECT_EQ(p.staging_elems, 0);
  EXPECT_EQ(p.device_bytes, (2 + 12 + 2) * shard);  // working copy, master/m/v, landed gradient
  for (size_t u = 0; u < p.units.size(); ++u) EXPECT_FALSE(p.uploads(u));
  std::printf("gpu: %s\n", p.summary().c_str());
  // a fraction: that share of every unit, rounded down to 64 elements; the host parts upload.
  cfg.optimizer.placement = "0.25";
  p = plan_placement(cfg, layout, 1, 1, h200);
  for (size_t u = 0; u < p.units.size(); ++u) {
    EXPECT_EQ(p.units[u].device_elems % 64, 0);
    EXPECT_LE(p.units[u].device_elems, layout.units[u].shard_numel / 4);
    EXPECT_GT(p.units[u].device_elems, layout.units[u].shard_numel / 4 - 64);
    EXPECT_TRUE(p.uploads(u));
  }
  EXPECT_NEAR(p.device_share, 0.25, 1e-4);
  // auto on an H200: all of 7b's state fits beside the working copies and the step.
  cfg.optimizer.placement = "auto";
  p = plan_placement(cfg, layout, 1, 1, h200);
  std::printf("auto, 7b on 139.3 GiB: %s\n", p.summary().c_str());
  EXPECT_EQ(p.device_share, 1.0);
  EXPECT_EQ(p.margin_bytes, h200.free_bytes / 10);
  EXPECT_EQ(p.transient_bytes, transient_device_bytes(cfg, layout));
  EXPECT_LE(p.predicted_peak() + p.margin_bytes, p.usable_device_bytes);
  // auto on 40 GiB: the largest share that fits, to within one 64-element step per unit.
  for (double cap : {40.0, 48.0, 80.0}) {
    cfg.topology.gpu_memory_gb = cap;
    p = plan_placement(cfg, layout, 1, 1, h200);
    const int64_t room = p.usable_device_bytes - p.margin_bytes - p.predicted_peak();
    std::printf("auto, 7b capped at %.0f GiB: share %.4f, %.2f GiB left over; %s\n", cap, p.device_share,
                room / kGiB, p.why.c_str());
    EXPECT_EQ(p.refusal(), "");
    EXPECT_GT(p.device_share, 0.0);
    EXPECT_LT(p.device_share, 1.0);
    EXPECT_GE(room, 0);
    EXPECT_LT(room, static_cast<int64_t>(p.units.size()) * 64 * 14 + 14 * shard / 10000);
    EXPECT_FALSE(p.auto_offload);
    EXPECT_NE(p.why.find("the largest share that fits"), std::string::npos);
  }
  // The delayed update keeps one working copy on the GPU: at 32 GiB (a V100) it still fits, with
  // a share of the state.
  cfg.topology.gpu_memory_gb = 32;
  cfg.optimizer.delayed_update = true;
  p = plan_placement(cfg, layout, 1, 1, h200);
  std::printf("auto, 7b with the delayed update capped at 32 GiB: %s\n", p.summary().c_str());
  EXPECT_FALSE(p.auto_offload);
  EXPECT_TRUE(p.units.front().deferred_write);
  EXPECT_GT(p.device_share, 0.0);
  EXPECT_LE(p.predicted_peak() + p.margin_bytes, p.usable_device_bytes);
  // auto where the working copy leaves no room (16 GiB): parameter offload, chosen and said, then
  // the share that fits.
  cfg.topology.gpu_memory_gb = 16;
  p = plan_placement(cfg, layout, 1, 1, h200);
  std::printf("auto, 7b with the delayed update capped at 16 GiB: %s\n", p.summary().c_str());
  EXPECT_TRUE(p.auto_offload);
  EXPECT_EQ(p.units.front().working, Where::kPinnedHost);
  EXPECT_NE(p.why.find("parameter offload, chosen by optimizer.placement = \"auto\""), std::string::npos);
  EXPECT_GT(p.device_share, 0.0);
  EXPECT_LE(p.predicted_peak() + p.margin_bytes, p.usable_device_bytes);
  // gpu where it cannot fit: refused with the numbers and the way out.
  cfg.optimizer.delayed_update = false;
  cfg.topology.gpu_memory_gb = 40;
  cfg.optimizer.placement = "gpu";
  p = plan_placement(cfg, layout, 1, 1, h200);
  std::printf("gpu, 7b capped at 40 GiB: %s\n", p.refusal().c_str());
  EXPECT_NEAR(gib_after(p.refused_device, "optimizer state"), 14.0 * shard / kGiB, 0.05);
  EXPECT_NEAR(gib_after(p.refused_device, "a GPU here has"), 40.0, 0.05);
  EXPECT_NE(p.refused_device.find("optimizer.placement = \"gpu\""), std::string::npos);
  EXPECT_NE(p.refused_device.find("set optimizer.placement = \"auto\""), std::string::npos);
  // auto with the GPU's memory unknown, and any mode on CPU ranks: the state on the host.
  cfg.optimizer.placement = "auto";
  cfg.topology.gpu_memory_gb = 0;
  EXPECT_EQ(plan_placement(cfg, layout, 1, 1, gpu(0, 0)).device_share, 0.0);
  cfg.optimizer.placement = "gpu";
  p = plan_placement(cfg, layout, 1, 1, DeviceFacts{});
  EXPECT_EQ(p.device_share, 0.0);
  EXPECT_EQ(p.device_bytes, 0);
}

TEST(Placement, PlacementKeyInTheConfig) {
  EXPECT_EQ(parse_config("").optimizer.placement, "auto");
  for (const char* good : {"cpu", "gpu", "auto", "0", "1", "0.25", "1.0", ".5"}) {
    const Config c = parse_config(std::string("[optimizer]\nplacement = \"") + good + "\"\n");
    EXPECT_EQ(c.optimizer.placement, good);
  }
  EXPECT_EQ(placement_fraction("0.25"), 0.25);
  EXPECT_EQ(placement_fraction("gpu"), 1.0);
  EXPECT_EQ(placement_fraction("auto"), -1.0);
  for (const char* bad : {"1.5", "-0.1", "GPU", "half", "1e-1", "", ".", "0.5.1", "nan"}) {
    try {
      parse_config(std::string("[optimizer]\nplacement = \"") + bad + "\"\n");
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const ConfigError& e) {
      std::printf("refused: %s\n", e.what());
      EXPECT_NE(std::string(e.what()).find("optimizer.placement"), std::string::npos);
      EXPECT_NE(std::string(e.what()).find(":2:"), std::string::npos) << e.what();
    }
  }
}

// A GPU that runs out of memory during training: the error names what the plan kept there and
// what to change; other errors are left as they are.
TEST(Placement, OutOfMemoryNamesThePlanAndTheWayOut) {
  NodeContext ctx;
  ctx.cfg = config_for("7b", "bf16", false, false, 1, 1);
  ctx.cfg.data.seq_len = 4096;
  ctx.cfg.train.micro_batch = 1;
  ctx.cfg.optimizer.placement = "auto";
  ctx.cfg.topology.gpu_memory_gb = 40;
  ctx.on_device = true;
  ctx.layout = build_layout(ctx.cfg.model, 1, {});
  ctx.plan = plan_placement(ctx.cfg, ctx.layout, 1, 1, gpu(139.3, 140));
  ctx.fail("rank 0: CUDA out of memory. Tried to allocate 388.00 MiB.");
  std::printf("%s\n", ctx.result.error.c_str());
  EXPECT_NE(ctx.result.error.find("CUDA out of memory. Tried to allocate 388.00 MiB."), std::string::npos);
  EXPECT_NEAR(gib_after(ctx.result.error, "the placement plan kept"), ctx.plan.device_bytes / kGiB, 0.05);
  EXPECT_NEAR(gib_after(ctx.result.error, "estimated a step at"), ctx.plan.transient_bytes / kGiB, 0.05);
  EXPECT_NE(ctx.result.error.find("optimizer.placement = \"auto\": 0.21 of the optimizer state on the GPU"),
            std::string::npos);
  EXPECT_NE(ctx.result.error.find("set optimizer.placement to a smaller share than 0.21"), std::string::npos);
  EXPECT_NE(ctx.result.error.find("set actors.offload_params = true"), std::string::npos);
  NodeContext other;
  other.cfg = ctx.cfg;
  other.on_device = true;
  other.plan = ctx.plan;
  other.fail("rank 0: a collective timed out");
  EXPECT_EQ(other.result.error, "rank 0: a collective timed out");
}
