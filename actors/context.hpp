// The node's context (actors/engine.hpp's NodeContext), built before any actor starts: see
// context.cpp. run_training (node.cpp) calls build_context, then spawns the actors over it.
#pragma once

#include <stdexcept>

#include "actors/engine.hpp"

namespace xy {

// What was allocated differs from what the placement plan priced: a bug (exit code 1).
struct PlacementMismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Fills `ctx` for this node: identity, communicators, agreed precision, model, every local rank's
// shards (fresh, from model.init_from, or from opts.resume), placed as ctx.plan says. Throws
// std::invalid_argument for a set-up that cannot run (the plan's refusal among them),
// CheckpointError for a bad checkpoint, ThreadStartError, PlacementMismatch.
void build_context(NodeContext& ctx, const Config& cfg, const RunOptions& opts);

// This process's resident memory, GiB.
double rss_gib();

// Memory the caching allocator holds on `device` now, GiB (0 on the CPU).
double device_reserved_gib(const c10::Device& device);

// The most the caching allocator has had allocated (`reserved` = false) or reserved (true) on
// `device` since the start, bytes (0 on the CPU).
int64_t device_peak_bytes(const c10::Device& device, bool reserved);

// Dense 16-bit tensor-core peak FLOP/s of local GPU `index` from its name (H100/H200 989e12,
// A100 312e12, V100 125e12 (fp16), L40S 362e12, A10 125e12, L4 121e12); 0 when unknown or the
// working precision is fp32 (MFU is then not reported).
double device_peak_flops(int index, const std::string& precision);

}  // namespace xy
