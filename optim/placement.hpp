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
  Where grad_landing = Where::kHost;  // where the reduce-scattered gradient lands for the optimizer
  int grad_landing_bytes = 4;     // its element size: 2 (the 16-bit working precision) or 4 (fp32)
  bool grad_on_device = false;    // an fp32 accumulator on the GPU over micro-batches (grad_accum > 1)
  // The optimizer state (fp32 master, m, v, and the gradient in fp32) of elements
  // [0, device_elems) of the shard lives on the GPU, stepped there; the rest on the host, stepped by
  // the CPU AdamW, with its gradient landing as above. Always 0 today (docs/PLACEMENT.md).
  int64_t device_elems = 0;
};

struct PlacementPlan {
  std::vector<UnitPlacement> units;  // per unit, in layout order
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

  bool uploads(size_t unit) const { return units[unit].working == Where::kDevice; }
  // "per rank: GPU 1.3 GiB, host 12.0 GiB (0.4 GiB pinned)": the bytes, one line.
  std::string bytes_text() const;
  // bytes_text() and why, one line (xy-node train prints it at start-up).
  std::string summary() const;
};

// The plan of one node: `local_ranks` of the `world` ranks, the layout built for that world.
// Never throws for a configuration that does not fit: refused_* say why (the runtime throws it,
// the doctor shows it). Today every unit's optimizer state is on the host (device_elems = 0); a
// placement mode enters as one more input here and changes only the device_elems it decides.
PlacementPlan plan_placement(const Config& cfg, const ModelLayout& layout, int world, int local_ranks,
                             const DeviceFacts& facts);

// topology.gpu_memory_gb in bytes (0 = no cap).
int64_t gpu_cap_bytes(const Config& cfg);

// "1.3 GiB", "12.0 MiB", "0 B".
std::string bytes_text(double bytes);

}  // namespace xy
