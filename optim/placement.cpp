// The placement plan (optim/placement.hpp): the decision per unit, then one memory model that
// prices it, then the checks against the host's and the GPU's memory.
#include "optim/placement.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace xy {

const char* where_name(Where w) {
  switch (w) {
    case Where::kDevice: return "GPU";
    case Where::kPinnedHost: return "pinned host";
    case Where::kHost: return "host";
  }
  return "?";
}

std::string bytes_text(double bytes) {
  char buf[64];
  if (bytes >= 1073741824.0) std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / 1073741824.0);
  else if (bytes >= 1048576.0) std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / 1048576.0);
  else if (bytes >= 1024.0) std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024.0);
  else std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  return buf;
}

int64_t transient_device_bytes(const Config& cfg, const ModelLayout& layout) {
  const ModelConfig& m = cfg.model;
  const int64_t wb = cfg.train.precision == "fp32" ? 4 : 2;
  const int64_t tokens = node_micro_batch(cfg, cfg.topology.node_index) * cfg.data.seq_len;
  int64_t unit = 0;  // the largest gathered unit, working precision
  for (const UnitLayout& u : layout.units) unit = std::max(unit, u.padded_numel * wb);
  // Gathered units: the one in use and those prefetched, within the budget; gradients: the
  // backward's full unit gradient and up to two reductions in flight.
  // (A job of one GPU computes on its working copies: nothing is gathered, unless they live in
  // host memory and each is copied up for its use.)
  // Gathered buffers are reserved per unit (prefetch_layers ahead of the one in use, within the
  // budget); copies up from host memory are made per use and freed as the compute stream passes
  // them, and a new one waits until at most kCopiesAhead released ones are still in use
  // (param_shard.cpp, limit_copies).
  const int64_t budget = cfg.actors.gather_budget_mb << 20;
  const int64_t held = std::min<int64_t>(budget, (cfg.actors.prefetch_layers + 1) * unit);
  const int64_t gathered = cfg.actors.offload_params ? held + int64_t{kCopiesAhead} * unit
                           : cfg.topology.world_size() > 1 ? held + unit
                                                           : 0;
  const int64_t grads = 3 * unit;
  // Activation checkpointing keeps each block's input (and the head's).
  const int64_t saved = (m.layers + 1) * tokens * m.hidden * wb;
  // One block recomputed with autograd, and its backward: the normed inputs, q, k, v (and their
  // rotated and repeated copies), the attention output, the residual, the MLP's gate, up, their
  // product and activation, and the gradients of as many.
  const int64_t qkv = (m.heads + 2 * kv_heads_of(m)) * head_dim_of(m);
  const int64_t block = 2 * tokens * (5 * m.hidden + 2 * qkv + 4 * m.intermediate) * wb;
  // The head: logits in the working precision and in fp32, the softmax's gradient in fp32 and the
  // logits' gradient in the working precision.
  const int64_t head = tokens * m.vocab_size * (2 * wb + 8);
  return gathered + grads + saved + block + head;
}

int64_t gpu_cap_bytes(const Config& cfg) {
  return static_cast<int64_t>(std::llround(cfg.topology.gpu_memory_gb * 1073741824.0));
}

std::string PlacementPlan::bytes_text() const {
  std::string s = local_ranks > 1 ? "per rank (" + std::to_string(local_ranks) + " on this node): "
                                  : std::string("per rank: ");
  return s + "GPU " + xy::bytes_text(static_cast<double>(device_bytes)) + ", host " +
         xy::bytes_text(static_cast<double>(host_bytes)) + " (" +
         xy::bytes_text(static_cast<double>(pinned_bytes)) + " pinned)";
}

std::string PlacementPlan::summary() const { return bytes_text() + "; " + why; }

std::string PlacementPlan::refusal() const {
  if (refused_host.empty() || refused_device.empty()) return refused_host + refused_device;
  return refused_host + "; and " + refused_device;
}

namespace {

// Where the working copy lives, and how the delayed update keeps the version being read while the
// optimizer makes the next: on the GPU one copy (deferred_write), elsewhere two.
void set_working(UnitPlacement& up, Where w, bool delayed) {
  up.working = w;
  up.deferred_write = delayed && w == Where::kDevice;
  up.double_buffered = delayed && !up.deferred_write;
}

// The decision: where each unit's pieces go, with the optimizer state on the host
// (device_elems = 0); set_device_share() then moves a share of it to the GPU.
void decide(PlacementPlan& p, const Config& cfg, const ModelLayout& layout, bool cuda) {
  const int wb = p.working_elem_bytes;
  for (const UnitLayout& u : layout.units) {
    UnitPlacement up;
    up.shard_numel = u.shard_numel;
    if (cuda) {
      // The working copy on the GPU, or in pinned host memory with parameter offload (copied up
      // before each use); gradients land in pinned host memory in the working precision, after
      // accumulating over micro-batches on the GPU in fp32.
      set_working(up, cfg.actors.offload_params ? Where::kPinnedHost : Where::kDevice, cfg.optimizer.delayed_update);
      up.grad_landing = Where::kPinnedHost;
      up.grad_landing_bytes = wb;
      up.grad_on_device = max_grad_accum(cfg) > 1;  // any node's (io/config.hpp)
    } else {
      // CPU ranks: everything in host memory; gradients land in 2 bytes when they need no
      // accumulation over micro-batches in a 16-bit run (as on a GPU), else in fp32.
      set_working(up, Where::kHost, cfg.optimizer.delayed_update);
      up.grad_landing = Where::kHost;
      up.grad_landing_bytes = wb == 2 && max_grad_accum(cfg) == 1 ? 2 : 4;
    }
    up.device_elems = 0;
    p.units.push_back(up);
  }
}

// Share f of every unit's shard on the GPU: the first round_down(f x n, kDeviceAlign) elements, or
// the whole shard at f = 1. The staging buffers then serve the host parts that upload.
void set_device_share(PlacementPlan& p, double f) {
  int64_t dev = 0, all = 0;
  for (UnitPlacement& u : p.units) {
    u.device_elems = f >= 1 ? u.shard_numel
                            : std::min(u.shard_numel, static_cast<int64_t>(f * static_cast<double>(u.shard_numel)) /
                                                          kDeviceAlign * kDeviceAlign);
    dev += u.device_elems;
    all += u.shard_numel;
  }
  p.device_share = all > 0 ? static_cast<double>(dev) / static_cast<double>(all) : 0;
  p.staging_elems = 0;
  for (size_t u = 0; u < p.units.size(); ++u)
    if (p.uploads(u)) p.staging_elems = std::max(p.staging_elems, p.units[u].shard_numel - p.units[u].device_elems);
}

// The memory model: bytes of every piece, where it lives. The allocation (actors/context.cpp)
// makes exactly these pieces, and checks at start-up that it did.
void price(PlacementPlan& p) {
  const int64_t wb = p.working_elem_bytes;
  p.device_bytes = p.host_bytes = p.pinned_bytes = p.state_host_bytes = p.working_bytes = 0;
  auto add = [&p](Where w, int64_t b) {
    if (w == Where::kDevice) p.device_bytes += b;
    else p.host_bytes += b;
    if (w == Where::kPinnedHost) p.pinned_bytes += b;
  };
  for (const UnitPlacement& u : p.units) {
    const int64_t n = u.shard_numel, d = u.device_elems, h = n - d;
    const int64_t working = wb * n * (u.double_buffered ? 2 : 1);
    add(u.working, working);
    p.working_bytes += working;
    if (u.grad_on_device) add(Where::kDevice, 4 * n);
    // The device part: fp32 master, m, v, and the gradient the device AdamW reads (landed in the
    // same precision as the host part's).
    add(Where::kDevice, (12 + u.grad_landing_bytes) * d);
    // The host part: fp32 master, m, v (ordinary memory) and the gradient landing buffer.
    add(Where::kHost, 12 * h);
    add(u.grad_landing, u.grad_landing_bytes * h);
    if (u.deferred_write) add(Where::kPinnedHost, wb * h);  // the next version's host part
    p.state_host_bytes += 12 * h + (u.grad_landing == Where::kDevice ? 0 : u.grad_landing_bytes * h);
  }
  add(Where::kPinnedHost, 2 * p.staging_elems * wb);
}

// optimizer.placement = "auto": the largest share of the state that fits beside everything else
// with the margin; parameter offload first if the working copies themselves leave no room.
void plan_auto(PlacementPlan& p, const Config& cfg, const ModelLayout& layout) {
  auto room = [&p] { return p.usable_device_bytes - p.margin_bytes - p.transient_bytes - p.device_bytes; };
  set_device_share(p, 0);
  price(p);
  if (room() < 0 && !cfg.actors.offload_params && p.units.front().working == Where::kDevice) {
    for (UnitPlacement& u : p.units) set_working(u, Where::kPinnedHost, cfg.optimizer.delayed_update);
    p.auto_offload = true;
    Config offloaded = cfg;  // the step then holds device copies of the units it uses
    offloaded.actors.offload_params = true;
    p.transient_bytes = transient_device_bytes(offloaded, layout);
    set_device_share(p, 0);
    price(p);
  }
  int64_t elem_bytes = 0;  // bytes of state a share of 1 puts on the GPU
  for (const UnitPlacement& u : p.units) elem_bytes += (12 + u.grad_landing_bytes) * u.shard_numel;
  const double f = std::clamp(static_cast<double>(room()) / static_cast<double>(std::max<int64_t>(1, elem_bytes)), 0.0, 1.0);
  set_device_share(p, f);
  price(p);
}

std::string g3(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string why_text(const PlacementPlan& p, const Config& cfg, bool cuda, const DeviceFacts& facts,
                     int64_t cap) {
  const std::string wp = p.working_elem_bytes == 4 ? "fp32" : "16-bit";
  const UnitPlacement& u = p.units.front();
  const std::string db = u.double_buffered ? ", double-buffered for the delayed update"
                         : u.deferred_write ? ", one copy with the delayed update (each unit's new version is "
                                              "written in once the next step's backward has read the old one)"
                                            : "";
  if (!cuda)
    return "CPU ranks: the working copies (" + wp + db + "), the gradients (" +
           (u.grad_landing_bytes == 2 ? "16-bit" : "fp32") +
           ") and the optimizer state (fp32 master, m, v) in host memory";
  std::string s = u.working == Where::kDevice ? "working copies (" + wp + ") on the GPU" + db
                   : p.auto_offload
                       ? "working copies (" + wp + ") in pinned host memory (parameter offload, chosen by "
                         "optimizer.placement = \"auto\": they do not fit the GPU beside a step)" + db
                       : "working copies (" + wp + ") in pinned host memory (actors.offload_params)" + db;
  s += "; gradients land in pinned host memory in " + wp;
  if (u.grad_on_device)
    s += " after fp32 accumulation on the GPU (" +
         std::string(max_grad_accum(cfg) == cfg.train.grad_accum ? "train.grad_accum" : "a node's grad_accum") +
         " = " + std::to_string(max_grad_accum(cfg)) + ")";
  const std::string mode = "optimizer.placement = \"" + cfg.optimizer.placement + "\"";
  char share[32];
  std::snprintf(share, sizeof share, "%.1f%%", 100 * p.device_share);
  if (!p.device_state())
    s += "; optimizer state (fp32 master, m, v) on the host, stepped by the CPU AdamW (" + mode;
  else if (p.device_share >= 1)
    s += "; optimizer state (fp32 master, m, v) on the GPU, stepped by the device AdamW (" + mode;
  else
    s += "; optimizer state (fp32 master, m, v): " + std::string(share) +
         " of every shard on the GPU (device AdamW), the rest on the host (CPU AdamW), updated at once (" + mode;
  if (p.mode == "auto")
    s += p.usable_device_bytes <= 0 ? ": the GPU's memory is unknown"
         : ": the largest share that fits " + bytes_text(static_cast<double>(p.usable_device_bytes)) +
               " usable less the step's " + bytes_text(static_cast<double>(p.transient_bytes)) +
               " (estimate) and a margin of " + bytes_text(static_cast<double>(p.margin_bytes));
  s += ")";
  if (p.usable_device_bytes > 0) {
    s += "; GPU: " + bytes_text(static_cast<double>(p.usable_device_bytes)) + " usable";
    if (cap > 0)
      s += " (topology.gpu_memory_gb = " + g3(cfg.topology.gpu_memory_gb) +
           (facts.free_bytes > 0 ? ", " + bytes_text(static_cast<double>(facts.free_bytes)) + " free" : "") + ")";
  }
  return s;
}

}  // namespace

PlacementPlan plan_placement(const Config& cfg, const ModelLayout& layout, int world, int local_ranks,
                             const DeviceFacts& facts) {
  if (layout.world_size != world || layout.units.empty() || local_ranks < 1 || local_ranks > world)
    throw std::logic_error("plan_placement: a layout for world " + std::to_string(layout.world_size) +
                           " (" + std::to_string(layout.units.size()) + " units) planned for world " +
                           std::to_string(world) + ", " + std::to_string(local_ranks) + " local ranks");
  const bool cuda = facts.kind == DeviceFacts::Kind::kCuda;
  PlacementPlan p;
  p.working_elem_bytes = cfg.train.precision == "fp32" ? 4 : 2;
  p.local_ranks = local_ranks;
  p.world = world;
  p.params = layout.total_numel();
  decide(p, cfg, layout, cuda);

  // What the GPU offers: its free memory, no more than topology.gpu_memory_gb.
  const int64_t cap = cuda ? gpu_cap_bytes(cfg) : 0;
  if (cuda) p.usable_device_bytes = facts.free_bytes > 0 && cap > 0 ? std::min(facts.free_bytes, cap)
                                    : facts.free_bytes > 0          ? facts.free_bytes
                                                                    : cap;
  // Where the optimizer state goes (GPU ranks only).
  const double f = cuda ? placement_fraction(cfg.optimizer.placement) : 0;
  p.mode = cuda ? cfg.optimizer.placement : "cpu";
  if (cuda) {
    p.transient_bytes = transient_device_bytes(cfg, layout);
    p.margin_bytes = p.usable_device_bytes / 10;
  }
  if (f < 0 && p.usable_device_bytes > 0) {
    plan_auto(p, cfg, layout);
  } else {
    set_device_share(p, std::max(0.0, f));
    price(p);
  }
  p.why = why_text(p, cfg, cuda, facts, cap);

  const double node_host = static_cast<double>(p.host_bytes) * local_ranks;
  if (facts.host_bytes > 0 && node_host > static_cast<double>(facts.host_bytes)) {
    int64_t shard = 0;
    for (const UnitPlacement& u : p.units) shard += u.shard_numel;
    p.refused_host = ("the model is too large for this machine: " + g3(static_cast<double>(p.params)) +
                 " parameters; node " + std::to_string(cfg.topology.node_index) + "'s share of its state (" +
                 std::to_string(local_ranks) + " of " + std::to_string(world) + " ranks, " +
                 g3(static_cast<double>(p.host_bytes) / static_cast<double>(shard)) +
                 " bytes a parameter) needs " + bytes_text(node_host) + " of host memory, but this machine has " +
                 bytes_text(static_cast<double>(facts.host_bytes)) + " " + facts.host_what +
                 "; choose a smaller model (model.*), or add nodes or ranks");
  }
  // The state alone must fit; with optimizer state asked onto the GPU, the step's estimate too.
  const int64_t need = p.device_state() ? p.predicted_peak() : p.device_bytes;
  if (cuda && p.usable_device_bytes > 0 && need > p.usable_device_bytes) {
    int64_t accum = 0, working = 0;
    for (const UnitPlacement& u : p.units) {
      accum += u.grad_on_device ? 4 * u.shard_numel : 0;
      if (u.working == Where::kDevice)
        working += int64_t{p.working_elem_bytes} * u.shard_numel * (u.double_buffered ? 2 : 1);
    }
    const int64_t state = p.device_bytes - working - accum;
    std::string offer = bytes_text(static_cast<double>(p.usable_device_bytes)) + " usable (";
    offer += facts.free_bytes > 0 ? bytes_text(static_cast<double>(facts.free_bytes)) + " free" : "free unknown";
    if (facts.total_bytes > 0) offer += " of " + bytes_text(static_cast<double>(facts.total_bytes));
    if (cap > 0) offer += "; topology.gpu_memory_gb = " + g3(cfg.topology.gpu_memory_gb);
    offer += ")";
    const std::string node = "node " + std::to_string(cfg.topology.node_index) + "'s ";
    p.refused_device = ("the model's state does not fit its GPUs: " +
                 (local_ranks == 1 ? node + "rank keeps "
                                   : "each of " + node + std::to_string(local_ranks) + " ranks keeps ") +
                 bytes_text(static_cast<double>(p.device_bytes)) +
                 " on its GPU" +
                 (need > p.device_bytes ? " and needs " + bytes_text(static_cast<double>(p.transient_bytes)) +
                                              " more during a step (estimate)"
                                        : std::string(" before any activation")) +
                 " (working copies " +
                 bytes_text(static_cast<double>(working)) +
                 (accum > 0 ? ", fp32 gradient accumulator " + bytes_text(static_cast<double>(accum)) : "") +
                 (state > 0 ? ", optimizer state " + bytes_text(static_cast<double>(state)) +
                                  " (optimizer.placement = \"" + cfg.optimizer.placement + "\")"
                            : "") +
                 "), but a GPU here has " + offer +
                 (state > 0 ? "; set optimizer.placement = \"auto\" (or a smaller share), "
                            : "; ") +
                 (working > 0 ? "set actors.offload_params = true (working copies in pinned host memory), "
                                "add GPUs, or choose a smaller model"
                              : "add GPUs, or choose a smaller model"));
  }
  return p;
}

}  // namespace xy
