// Where each piece of a rank's state lives, and what it costs: one plan, computed once per node from
// the configuration, the layout and the devices' memory, and read by every place that used to decide
// it for itself: the allocation (actors/context.cpp), the optimizer actor's uploads
// (actors/optimizer_offload.cpp), the start-up refusal and line, and the doctor's host-memory row
// (apps/doctor_checks.cpp). Pure and LibTorch-free, so that the doctor, the runtime and the tests
// run the same memory model. The design, and what is still to build on it (device-resident
// optimizer state, a device AdamW, modes, balancing): docs/PLACEMENT.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/config.hpp"
#include "model/layout.hpp"

namespace xy {

// A piece of memory: on the rank's GPU, in page-locked host memory (what the GPU copies to and from
// asynchronously), or in ordinary host memory.
enum class Where { kDevice, kPinnedHost, kHost };
const char* where_name(Where w);  // "GPU", "pinned host", "host"

// What the node's devices offer. The runtime measures it (actors/context.cpp); the doctor and the
// tests make it up. 0 = unknown: nothing is checked against it.
struct DeviceFacts {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int64_t free_bytes = 0;   // the least free memory over this node's GPUs, now
  int64_t total_bytes = 0;  // the least total memory of them
  int64_t host_bytes = 0;   // host memory this node's state may take
  std::string host_what = "of memory and swap";  // says what host_bytes is, in the refusal
};

// One unit's pieces on one rank (every local rank has the same: shards are equal).
struct UnitPlacement {
  int64_t shard_numel = 0;        // the layout's: elements of the unit per rank
  Where working = Where::kHost;   // the working copy (the model's parameters in the working precision)
  bool double_buffered = false;   // optimizer.delayed_update: a second working copy, where the first is
  // The delayed update with the working copy on the GPU: one copy. The optimizer leaves the new
  // version's host part in pinned memory (RankShards::next_host) and its GPU part in the fp32
  // master; the parameter-shard writes both in once the next step's backward has read the old
  // version (when that step's gradient of the unit lands). Saves the second copy's GPU memory.
  bool deferred_write = false;
  Where grad_landing = Where::kHost;  // where the reduce-scattered gradient lands for the optimizer
  int grad_landing_bytes = 4;     // its element size: 2 (the 16-bit working precision) or 4 (fp32)
  bool grad_on_device = false;    // an fp32 accumulator on the GPU over micro-batches (grad_accum > 1)
  // The optimizer state (fp32 master, m, v, and the gradient they read, in grad_landing_bytes) of
  // elements [0, device_elems) of the shard lives on the GPU, stepped there by the device AdamW;
  // the rest, [device_elems, shard_numel), on the host, stepped by the CPU AdamW, with its gradient
  // landing as above. optimizer.placement decides it (a multiple of kDeviceAlign, or the whole shard).
  int64_t device_elems = 0;
};

// Device copies of units made for one use (gathered buffers, parameter offload's uploads): a new
// one waits until at most this many released ones are still read by the compute stream
// (actors/param_shard.cpp, limit_copies); transient_device_bytes() prices them.
constexpr int kCopiesAhead = 2;

// device_elems is a multiple of this (16-byte vector loads stay aligned on both sides of the
// split) unless it is the whole shard.
constexpr int64_t kDeviceAlign = 64;

struct PlacementPlan {
  std::vector<UnitPlacement> units;  // per unit, in layout order
  // optimizer.placement as planned: "cpu", "gpu", a fraction, or "auto"; the share of the state
  // on the GPU (device elements over shard elements); whether auto moved the working copies to
  // pinned host memory (parameter offload) because they did not fit beside the rest.
  std::string mode = "cpu";
  double device_share = 0;
  bool auto_offload = false;
  // What a step needs on the GPU beyond the persistent state (per rank; an estimate: gathered
  // units and their gradients, saved activations, one block's backward, the logits), and the
  // margin auto leaves free (10% of the usable memory). device_bytes + transient_bytes is the
  // predicted peak (reported against the measured one at the end of a run).
  int64_t transient_bytes = 0, margin_bytes = 0;
  int64_t predicted_peak() const { return device_bytes + transient_bytes; }
  bool device_state() const {
    for (const UnitPlacement& u : units)
      if (u.device_elems > 0) return true;
    return false;
  }
  int working_elem_bytes = 4;        // 4 (fp32) or 2 (bf16, fp16)
  // Two pinned buffers of this many elements (working precision) per rank, into which the CPU
  // optimizer writes the new working copy of a unit whose copy lives on the GPU before uploading it.
  int64_t staging_elems = 0;
  int local_ranks = 1;
  int64_t params = 0;                // parameters of the model (without padding)
  int world = 1;

  // Per local rank, from the one memory model. pinned_bytes is the page-locked part of host_bytes.
  int64_t device_bytes = 0, host_bytes = 0, pinned_bytes = 0;
  // Parts of those (per local rank): the optimizer state on the host (fp32 master, m, v and the
  // gradient landing buffer: docs/ARCHITECTURE.md's host state) and the working copies, wherever
  // they live.
  int64_t state_host_bytes = 0, working_bytes = 0;
  int64_t usable_device_bytes = 0;   // what device_bytes was checked against: min(free, cap); 0 = not checked

  std::string why;  // one line: why each piece is where it is
  // Empty where the plan fits; else one line with the numbers: the node's host memory, the GPU's.
  std::string refused_host, refused_device;
  std::string refusal() const;  // both, one line; empty if the plan fits

  // The CPU AdamW writes a new working copy that must be uploaded: part of the unit's state is on
  // the host and its working copy on the GPU.
  // (With deferred_write the parameter-shard uploads it instead.)
  bool uploads(size_t unit) const {
    return units[unit].working == Where::kDevice && !units[unit].deferred_write &&
           units[unit].device_elems < units[unit].shard_numel;
  }
  // "per rank: GPU 1.3 GiB, host 12.0 GiB (0.4 GiB pinned)": the bytes, one line.
  std::string bytes_text() const;
  // bytes_text() and why, one line (xy-node train prints it at start-up).
  std::string summary() const;
};

// The plan of one node: `local_ranks` of the `world` ranks, the layout built for that world.
// Never throws for a configuration that does not fit: refused_* say why (the runtime throws it,
// the doctor shows it). On CPU ranks the optimizer state is on the host whatever
// optimizer.placement says; on GPU ranks it decides device_elems (docs/PLACEMENT.md).
PlacementPlan plan_placement(const Config& cfg, const ModelLayout& layout, int world, int local_ranks,
                             const DeviceFacts& facts);

// The estimate of a step's transient device memory per rank (PlacementPlan::transient_bytes): the
// gathered units (actors.prefetch_layers ahead of the one in use, within actors.gather_budget_mb)
// and up to three units' gradients in flight, the saved block inputs of activation checkpointing,
// one block's recomputed forward and backward, the head's logits in the working precision and in
// fp32 with their gradients, for this node's micro-batch.
int64_t transient_device_bytes(const Config& cfg, const ModelLayout& layout);

// topology.gpu_memory_gb in bytes (0 = no cap).
int64_t gpu_cap_bytes(const Config& cfg);

// "1.3 GiB", "12.0 MiB", "0 B".
std::string bytes_text(double bytes);

}  // namespace xy
