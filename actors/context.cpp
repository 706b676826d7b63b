// Building a node's context: everything its actors share — identity in the job, communicators
// and the agreed precision, the model, and each local rank's shards of every unit, from a fresh
// initialisation, a Hugging Face folder or a checkpoint (any saved world size). Where each piece
// of a unit's state lives (device, pinned host, host) is the node's placement plan
// (optim/placement.hpp), which place_unit() follows; run_training
// (node.cpp) then spawns and supervises the actors over it.
#include "actors/context.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>
#include <unistd.h>
#ifdef XY_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

#include <ATen/Parallel.h>

#include "ckpt/checkpoint_io.hpp"
#include "comm/netif.hpp"
#include "comm/store_auth.hpp"
#include "health/control.hpp"
#include "io/hf_config.hpp"
#include "model/hf_io.hpp"
#include "optim/sharding.hpp"

namespace xy {

template <class F>
void RankShards::for_each_tensor(F&& f) const {
  for (const auto* list : {&working, &working_alt, &grad, &grad_dev, &master, &m, &v, &master_dev, &m_dev,
                           &v_dev, &grad_gpu, &next_host})
    for (const auto& t : *list) f(t);
  for (const auto& t : staging)
    if (t.defined()) f(t);
}

int64_t RankShards::state_bytes() const {
  int64_t b = 0;
  for (const auto* list : {&grad, &master, &m, &v})
    for (const auto& t : *list) b += t.numel() * t.element_size();
  return b;
}

at::Tensor RankShards::state_on_host(int which, size_t u) const {
  const auto [host, dev] = state_parts(which);
  if (dev->empty() || (*dev)[u].numel() == 0) return (*host)[u];
  return at::cat({(*dev)[u].to(at::kCPU), (*host)[u]});
}

int64_t RankShards::working_bytes() const {
  int64_t b = 0;
  for (const auto* list : {&working, &working_alt})
    for (const auto& t : *list) b += t.numel() * t.element_size();
  return b;
}

int64_t RankShards::device_bytes() const {
  int64_t b = 0;
  for_each_tensor([&b](const at::Tensor& t) {
    if (!t.is_cpu()) b += t.numel() * t.element_size();
  });
  return b;
}

int64_t RankShards::host_bytes() const {
  int64_t b = 0;
  for_each_tensor([&b](const at::Tensor& t) {
    if (t.is_cpu()) b += t.numel() * t.element_size();
  });
  return b;
}

namespace {


// Zeroed page-locked host memory of exactly n elements, for memory the device copies into
// asynchronously. (LibTorch's pinned allocator rounds each block up to a power of two: up to 2x
// the memory for large shards.)
// Counted in `sh`'s pinned bytes (the plan's pinned_bytes is checked against them).
at::Tensor pinned_zeros(int64_t n, at::ScalarType t, RankShards& sh) {
  sh.note_pinned(n * static_cast<int64_t>(c10::elementSize(t)));
#ifdef XY_WITH_CUDA
  const size_t bytes = std::max<size_t>(1, static_cast<size_t>(n) * c10::elementSize(t));
  void* p = nullptr;
  if (posix_memalign(&p, 4096, bytes) != 0) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  if (cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) {
    std::free(p);
    throw std::runtime_error("cannot page-lock " + std::to_string(bytes) +
                             " bytes of host memory (ulimit -l?)");
  }
  return at::from_blob(p, {n}, [](void* q) { cudaHostUnregister(q); std::free(q); },
                       at::TensorOptions(t));
#else
  return at::zeros({n}, at::TensorOptions(t).pinned_memory(true));
#endif
}

// A page-locked copy of a host tensor.
at::Tensor pinned_copy(const at::Tensor& t, RankShards& sh) {
  return pinned_zeros(t.numel(), t.scalar_type(), sh).copy_(t);
}


at::ScalarType working_dtype(const std::string& precision, bool on_device) {
  if (precision == "fp32") return at::kFloat;
  if (precision == "bf16") return at::kBFloat16;
  if (precision == "fp16" && on_device) return at::kHalf;
  throw std::invalid_argument("train.precision = \"" + precision +
                              "\" needs a GPU (LibTorch's CPU kernels lack fp16 matrix products); "
                              "on CPU use fp32 or bf16 (loss_scaling = \"dynamic\" drills the "
                              "scaler in any precision)");
}

// Why this node's devices cannot compute in bf16 (empty if they can). XY_SIMULATE_NO_BF16=1 plays
// a device without bf16 (a V100) for drills and tests.
std::string local_no_bf16(const NodeContext& ctx) {
  const char* sim = std::getenv("XY_SIMULATE_NO_BF16");
  if (sim && std::string(sim) == "1") return "device 0 has no bf16 (simulated: XY_SIMULATE_NO_BF16=1)";
#ifdef XY_WITH_CUDA
  if (ctx.on_device)
    for (int l = 0; l < ctx.local_ranks; ++l) {
      cudaDeviceProp p{};
      if (cudaGetDeviceProperties(&p, l) == cudaSuccess && p.major < 8)
        return "device " + std::to_string(l) + " (" + p.name + ", compute capability " +
               std::to_string(p.major) + "." + std::to_string(p.minor) + ") has no bf16";
    }
#endif
  (void)ctx;
  return "";
}

// Finds, verifies and checks the checkpoint to resume from; with resume_fallback, a corrupt one is
// reported and the newest older good one is used instead.
CheckpointManifest open_resume_checkpoint(const Config& cfg, const RunOptions& opts) {
  const std::string first = resolve_checkpoint(opts.resume, cfg.checkpoint.dir);
  std::vector<std::string> candidates{first};
  // Older = a smaller step (by number: names do not sort by step past 8 digits).
  const int64_t first_step = parse_checkpoint_step_name(std::filesystem::path(first).filename().string());
  if (opts.resume_fallback)
    for (const auto& d : list_checkpoints(cfg.checkpoint.dir))
      if (parse_checkpoint_step_name(std::filesystem::path(d).filename().string()) < first_step)
        candidates.push_back(d);
  std::string errors;
  for (const auto& dir : candidates) {
    try {
      CheckpointManifest man = read_checkpoint(dir, opts.verify);
      check_model_matches(man, cfg.model);
      if (!errors.empty() && !opts.quiet)
        std::printf("xy: falling back to checkpoint %s\n", dir.c_str());
      return man;
    } catch (const CheckpointError& e) {
      if (!opts.resume_fallback) throw;
      std::fprintf(stderr, "xy: cannot resume from %s: %s\n", dir.c_str(), e.what());
      errors += std::string("\n  ") + e.what();
    }
  }
  throw CheckpointError("no good checkpoint to resume from:" + errors);
}

// The memory of this machine, RAM and swap (/proc/meminfo), in bytes; 0 if unknown.
double machine_memory_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char key[64];
  long long kb = 0;
  double total = 0;
  while (std::fscanf(f, "%63s %lld kB", key, &kb) == 2)
    if (std::strcmp(key, "MemTotal:") == 0 || std::strcmp(key, "SwapTotal:") == 0) total += kb * 1024.0;
  std::fclose(f);
  return total;
}

// What this node's GPUs and host offer the plan: the least free and total memory over the local
// GPUs (after the CUDA context), and the machine's memory and swap.
DeviceFacts device_facts(const NodeContext& ctx) {
  DeviceFacts f;
  f.host_bytes = static_cast<int64_t>(machine_memory_bytes());
  if (!ctx.on_device) return f;
  f.kind = DeviceFacts::Kind::kCuda;
#ifdef XY_WITH_CUDA
  int previous = 0;
  cudaGetDevice(&previous);
  for (int l = 0; l < ctx.local_ranks; ++l) {
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(l) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      f.free_bytes = f.total_bytes = 0;  // unknown: not checked
      break;
    }
    f.free_bytes = l == 0 ? static_cast<int64_t>(free_b) : std::min<int64_t>(f.free_bytes, free_b);
    f.total_bytes = l == 0 ? static_cast<int64_t>(total_b) : std::min<int64_t>(f.total_bytes, total_b);
  }
  cudaSetDevice(previous);
#endif
  return f;
}

// topology.gpu_memory_gb: LibTorch's caching allocator on each local GPU may hold no more than the
// cap (a fraction of the device's total memory).
void cap_device_memory(const NodeContext& ctx, const Config& cfg, const DeviceFacts& facts) {
  const int64_t cap = gpu_cap_bytes(cfg);
  if (!ctx.on_device || cap <= 0 || facts.total_bytes <= 0 || cap >= facts.total_bytes) return;
#ifdef XY_WITH_CUDA
  const double fraction = static_cast<double>(cap) / static_cast<double>(facts.total_bytes);
  for (int l = 0; l < ctx.local_ranks; ++l) {
    const c10::Device dev(c10::kCUDA, static_cast<c10::DeviceIndex>(l));
    // A first allocation initialises the caching allocator, which setMemoryFraction needs.
    (void)at::empty({1}, at::TensorOptions(at::kByte).device(dev));
    c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, dev.index());
  }
#endif
}

// A unit's full padded state before it is sharded: the fp32 master, the working copy, and the
// Adam moments (undefined = zeros).
struct UnitStart {
  at::Tensor master, working, m, v;
};

// Continued pretraining: the full units from a Hugging Face folder, after checking its shape.
std::vector<at::Tensor> load_init_from(NodeContext& ctx, const Config& cfg, const RunOptions& opts) {
  ModelConfig shape = cfg.model;
  apply_init_from_shape(shape);
  for (auto [name, a, b] : {std::tuple{"vocab_size", shape.vocab_size, cfg.model.vocab_size},
                            std::tuple{"hidden", shape.hidden, cfg.model.hidden},
                            std::tuple{"intermediate", shape.intermediate, cfg.model.intermediate},
                            std::tuple{"layers", shape.layers, cfg.model.layers},
                            std::tuple{"heads", shape.heads, cfg.model.heads},
                            std::tuple{"kv_heads", kv_heads_of(shape), kv_heads_of(cfg.model)},
                            std::tuple{"head_dim", head_dim_of(shape), head_dim_of(cfg.model)},
                            std::tuple{"tie_embeddings", int64_t{shape.tie_embeddings},
                                       int64_t{cfg.model.tie_embeddings}},
                            std::tuple{"qk_norm", int64_t{shape.qk_norm}, int64_t{cfg.model.qk_norm}}})
    if (a != b)
      throw std::invalid_argument(cfg.model.init_from + "/config.json has " + name + " = " +
                                  std::to_string(a) + " but model." + name + " is " +
                                  std::to_string(b));
  std::vector<at::Tensor> hf_units = load_hf_units(cfg.model.init_from, ctx.layout, at::kFloat);
  if (!opts.quiet) std::printf("xy: initialised from %s\n", cfg.model.init_from.c_str());
  return hf_units;
}

// Unit u's full state: fresh, from the Hugging Face units, or assembled from the checkpoint.
UnitStart unit_start(const NodeContext& ctx, const Config& cfg, int u,
                     const std::optional<CheckpointManifest>& ckpt,
                     std::vector<at::Tensor>* hf_units) {
  const UnitLayout& unit = ctx.layout.units[u];
  UnitStart s;
  if (ckpt) {
    UnitState st = read_unit_state(*ckpt, u);
    auto pad = [&](const at::Tensor& t) {
      return at::constant_pad_nd(t, {0, unit.padded_numel - unit.numel}, 0);
    };
    s.master = pad(st.master);
    s.m = pad(st.m);
    s.v = pad(st.v);
    // The same working precision resumes bit for bit; another one is recast from the master.
    s.working = ckpt->working_dtype == ctx.working_dtype ? pad(st.working) : s.master.to(ctx.working_dtype);
  } else if (hf_units && !hf_units->empty()) {
    s.master = std::move((*hf_units)[u]);
    s.working = s.master.to(ctx.working_dtype);
  } else {
    s.master = init_unit(unit, cfg.model.init_std, cfg.model.init_seed, at::kFloat);
    s.working = s.master.to(ctx.working_dtype);
  }
  return s;
}

// A unit's pieces on each local rank, where the plan says: its slice of the full state `s`.
void place_unit(NodeContext& ctx, const UnitLayout& unit, const UnitStart& s) {
  const UnitPlacement& p = ctx.plan.units[unit.index];
  for (size_t l = 0; l < ctx.shards.size(); ++l) {
    auto& sh = ctx.shards[l];
    const c10::Device dev = ctx.streams[l].device;
    const int64_t b = unit.shard_begin(sh->shard), n = unit.shard_numel;
    const int64_t d = p.device_elems, h = n - d;  // the optimizer state's GPU part, host part
    const at::Tensor w = s.working.narrow(0, b, n);
    sh->working.push_back(p.working == Where::kDevice       ? w.to(dev)
                          : p.working == Where::kPinnedHost ? pinned_copy(w, *sh)
                                                            : w.clone());
    const at::ScalarType g = p.grad_landing_bytes == 4 ? at::kFloat : ctx.working_dtype;
    sh->grad.push_back(p.grad_landing == Where::kPinnedHost ? pinned_zeros(h, g, *sh)
                                                            : at::zeros({h}, g));
    if (p.grad_on_device) sh->grad_dev.push_back(at::zeros({n}, at::TensorOptions(at::kFloat).device(dev)));
    // Each of master, m, v: [0, d) on the GPU, [d, n) in host memory (moments: zeros if not given).
    auto part = [&](const at::Tensor& full, int64_t from, int64_t len, bool on_gpu) {
      const auto opts = at::TensorOptions(at::kFloat).device(on_gpu ? dev : c10::Device(c10::kCPU));
      if (!full.defined()) return at::zeros({len}, opts);
      return on_gpu ? full.narrow(0, b + from, len).to(dev) : full.narrow(0, b + from, len).clone();
    };
    sh->master.push_back(part(s.master, d, h, false));
    sh->m.push_back(part(s.m, d, h, false));
    sh->v.push_back(part(s.v, d, h, false));
    // The delayed update's next version of the host part, until it is written in: this version's.
    if (p.deferred_write) sh->next_host.push_back(pinned_copy(w.narrow(0, d, h), *sh));
    if (ctx.plan.device_state()) {
      sh->master_dev.push_back(part(s.master, 0, d, true));
      sh->m_dev.push_back(part(s.m, 0, d, true));
      sh->v_dev.push_back(part(s.v, 0, d, true));
      sh->grad_gpu.push_back(at::zeros({d}, at::TensorOptions(g).device(dev)));
    }
  }
}

// What was allocated must be what the plan priced: a difference is a bug in one or the other.
void check_allocated(const NodeContext& ctx) {
  const PlacementPlan& p = ctx.plan;
  for (const auto& sh : ctx.shards)
    for (auto [what, planned, made] :
         {std::tuple{"device", p.device_bytes, sh->device_bytes()},
          std::tuple{"host", p.host_bytes, sh->host_bytes()},
          std::tuple{"pinned host", p.pinned_bytes, sh->pinned_bytes()}})
      if (planned != made)
        throw PlacementMismatch("rank " + std::to_string(sh->rank) + " allocated " +
                                std::to_string(made) + " bytes of " + what +
                                " memory, but the placement plan priced " + std::to_string(planned) +
                                " (a bug: optim/placement.cpp and actors/context.cpp disagree)");
}

// The layout, the placement plan and the model for global or node sharding (ctx.shard_world ranks
// share each unit; with node sharding a rank holds the slice of its local index).
void apply_sharding(NodeContext& ctx, const Config& cfg, const DeviceFacts& facts, bool node) {
  ctx.node_shard = node && ctx.nodes > 1;
  ctx.shard_world = ctx.node_shard ? ctx.local_ranks : ctx.world;
  ctx.layout = build_layout(cfg.model, ctx.shard_world, cfg.optimizer.no_decay);
  ctx.plan = plan_placement(cfg, ctx.layout, ctx.shard_world, ctx.local_ranks, facts);
  if (!ctx.plan.refusal().empty()) throw std::invalid_argument(ctx.plan.refusal());
  ctx.model = std::make_shared<Llama>(cfg.model, ctx.layout);
}

// Identity in the job, the layout and the model; refuses set-ups that cannot run.
void set_identity(NodeContext& ctx, const Config& cfg, const RunOptions& opts) {
  ctx.cfg = cfg;
  ctx.quiet = opts.quiet;
  const auto& topo = cfg.topology;
  ctx.on_device = topo.device == "cuda";
  check_devices(cfg);
  if (!opts.data) throw std::invalid_argument("no training data");
  if (cfg.model.vocab_size <= 0) throw std::invalid_argument("model.vocab_size is not set");
  if (opts.data->vocab() > cfg.model.vocab_size)
    throw std::invalid_argument("the tokenizer has " + std::to_string(opts.data->vocab()) +
                                " pieces but model.vocab_size is " +
                                std::to_string(cfg.model.vocab_size));
  ctx.world = topo.world_size();
  ctx.first_rank = 0;
  for (int i = 0; i < topo.node_index; ++i) ctx.first_rank += topo.nodes[i].devices;
  ctx.local_ranks = topo.nodes[topo.node_index].devices;
  ctx.working_dtype = working_dtype(cfg.train.precision, ctx.on_device);
  ctx.node_index = topo.node_index;
  ctx.nodes = static_cast<int>(topo.nodes.size());
  // How the state is sharded (this node's choice; connect() agrees on it with the other nodes),
  // then where every piece of it goes, priced by the one memory model and checked against this
  // machine's memory and its GPUs' before anything is allocated.
  const DeviceFacts facts = device_facts(ctx);
  const ShardChoice choice = choose_sharding(cfg, cfg.model, facts);
  ctx.shard_why = choice.why;
  apply_sharding(ctx, cfg, facts, choice.node);
  cap_device_memory(ctx, cfg, facts);
  ctx.data = opts.data;
  ctx.eval_sets = opts.eval_sets;
  ctx.tokenizer = opts.tokenizer;
  for (const EvalSet& e : ctx.eval_sets) {
    if (std::min(cfg.eval.samples, e.samples->size()) < ctx.world)
      throw std::invalid_argument("eval set '" + e.name + "' (" + e.path + "): " +
                                  std::to_string(std::min(cfg.eval.samples, e.samples->size())) +
                                  " samples cannot be split over " + std::to_string(ctx.world) +
                                  " ranks; give it more (eval.samples, or a larger set)");
    if (e.samples->seq_len() != cfg.data.seq_len || e.samples->vocab() > cfg.model.vocab_size)
      throw std::invalid_argument("eval set '" + e.name + "' (" + e.path +
                                  ") does not fit the model: its samples have " +
                                  std::to_string(e.samples->seq_len()) + " tokens and ids below " +
                                  std::to_string(e.samples->vocab()));
  }
  if (cfg.train.threads > 0) at::set_num_threads(cfg.train.threads);
  ctx.adam_pool = std::make_unique<ThreadPool>(cfg.actors.adam_threads);
  if (ctx.on_device) ctx.peak_flops = device_peak_flops(0, cfg.train.precision);
}

// Communicators, the job's store, and the precision every node agrees on.
void connect(NodeContext& ctx, const Config& cfg) {
  const auto& topo = cfg.topology;
  // Rendezvous: in memory for one node; else a TCP store that node 0 serves on its port + 1.
  const NodeSpec& me = topo.nodes[topo.node_index];
  const bool multi = ctx.nodes > 1;
  // Local rank l drives device l (CUDA), with its own streams.
  for (int l = 0; l < ctx.local_ranks; ++l)
    ctx.streams.push_back(RankStreams::for_device(
        ctx.on_device ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(l)) : c10::Device(c10::kCPU)));
  const double comm_timeout = 2 * cfg.deadlines.collective_s * cfg.deadlines.first_step_factor;
  CommGroup group;
  // Node sharding's groups are made wherever it may be chosen (the nodes agree below, on the
  // store that the communicators bring up); unused ones stay idle.
  const NodeGroups node_groups{topo.node_index, ctx.nodes};
  const NodeGroups* groups = multi && same_devices(topo) && topo.shard != "global" ? &node_groups : nullptr;
  // Several nodes: every store connection proves the job's secret (comm/net_store.hpp), and the
  // job's node-level secret handshake runs on the store before any rank connects.
  if (multi) {
    // NCCL's socket transport takes the first interface that is up unless told: point it (and
    // Gloo's) at the interface that owns this node's topology address.
    std::printf("xy: %s\n", choose_socket_interface(me.host, "topology.nodes[" +
                                                              std::to_string(topo.node_index) + "].host")
                                   .c_str());
    set_store_credentials({cfg.control.secret, "node " + std::to_string(topo.node_index)});
    set_rendezvous_guard([&cfg, &topo](KeyValueStore& s) { secret_handshake(s, cfg, topo.node_index, 60); });
  }
#ifdef XY_WITH_CUDA
  if (ctx.on_device)
    group = make_nccl_comms(ctx.world, ctx.first_rank, ctx.local_ranks,
                            multi ? topo.nodes[0].host : "", multi ? topo.nodes[0].port + 1 : 0,
                            topo.node_index == 0, comm_timeout, groups);
  else
#endif
    group = make_gloo_comms(ctx.world, ctx.first_rank, ctx.local_ranks, me.host,
                            multi ? topo.nodes[0].host : "", multi ? topo.nodes[0].port + 1 : 0,
                            topo.node_index == 0, comm_timeout, groups);
  ctx.comms = std::move(group.comms);
  ctx.store = std::move(group.store);
  // Node sharding only where every node chose it (their memories may differ): each publishes its
  // choice and takes the first refusal it reads, so all end with the same answer.
  if (multi) {
    ctx.store->set("xy/shard/" + std::to_string(ctx.node_index), (ctx.node_shard ? "node " : "global ") + ctx.shard_why);
    std::string refused;
    for (int n = 0; n < ctx.nodes && refused.empty(); ++n) {
      const std::string said = ctx.store->get("xy/shard/" + std::to_string(n));
      if (said.rfind("node ", 0) != 0) refused = "node " + std::to_string(n) + " chose " + said.substr(said.find(' ') + 1);
    }
    if (!refused.empty() && ctx.node_shard) {
      if (cfg.topology.shard == "node")  // chosen by the user: never silently another
        throw std::invalid_argument("topology.shard = \"node\", but " + refused);
      ctx.shard_why = "global (" + refused + ")";
      apply_sharding(ctx, cfg, device_facts(ctx), false);
    }
    if (!ctx.quiet) std::printf("xy: sharding %s\n", ctx.shard_why.c_str());
  }
  ctx.shard_comms = ctx.node_shard ? group.shard : ctx.comms;
  if (ctx.node_shard) ctx.replica_comms = group.replica;
  // bf16 only if every device of the job has it; else fp16 everywhere, said once per node.
  std::string note;
  const std::string precision = agree_precision(*ctx.store, ctx.node_index, ctx.nodes, cfg.train.precision,
                                                local_no_bf16(ctx), &note);
  if (precision != cfg.train.precision) {
    ctx.cfg.train.precision = precision;
    // fp16 needs the loss scaler even where bf16 was meant to run without one.
    if (ctx.cfg.train.loss_scaling == "none") ctx.cfg.train.loss_scaling = "dynamic";
    ctx.working_dtype = working_dtype(precision, ctx.on_device);
    std::printf("xy: %s\n", note.c_str());
  }
}

// Where a resumed run starts: step, Adam step, loss scaler, data position.
void set_start(NodeContext& ctx, const Config& cfg, const CheckpointManifest& ckpt) {
  ctx.start_step = ckpt.step;
  ctx.start_adam_step = ckpt.adam_step;
  ctx.start_scaler = LossScalerState{ckpt.loss_scale, ckpt.scaler_iter, ckpt.scaler_last_overflow,
                                     ckpt.scaler_hysteresis};
  ctx.resumed_from = ckpt.dir;
  // The data position: the global sample stream is consumed in order (io/samples.hpp), so the
  // same number of consumed samples continues it exactly on another world size when it divides
  // evenly, or, with nodes taking different samples per step (mixed GPUs), when it is a whole
  // number of steps of the new split.
  const int64_t consumed = ckpt.samples;
  const std::vector<int64_t> per_step = rank_step_samples(cfg);
  const int64_t total = step_samples(cfg);
  if (std::all_of(per_step.begin(), per_step.end(), [&](int64_t c) { return c == per_step[0]; })) {
    if (consumed % ctx.world != 0)
      throw std::invalid_argument("checkpoint " + ckpt.dir + " consumed " + std::to_string(consumed) +
                                  " samples, which " + std::to_string(ctx.world) +
                                  " ranks cannot split evenly; resume with a world size dividing it");
    ctx.start_positions.assign(ctx.local_ranks, consumed / ctx.world);
  } else {
    if (consumed % total != 0)
      throw std::invalid_argument(
          "checkpoint " + ckpt.dir + " consumed " + std::to_string(consumed) + " samples, not a whole "
          "number of steps of the " + std::to_string(total) + " samples per step that the nodes' "
          "micro_batch x grad_accum x devices add up to; resume with a split whose samples per step divide it");
    ctx.start_positions.resize(ctx.local_ranks);
    for (int l = 0; l < ctx.local_ranks; ++l)
      ctx.start_positions[l] = consumed / total * per_step[ctx.first_rank + l];
  }
  if (ctx.start_step >= cfg.train.steps)
    throw std::invalid_argument("checkpoint " + ckpt.dir + " is at step " +
                                std::to_string(ctx.start_step) + ", not before train.steps = " +
                                std::to_string(cfg.train.steps) + "; raise train.steps to go on");
}

}  // namespace

double rss_gib() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024 * 1024);
}

double device_reserved_gib(const c10::Device& device) {
#ifdef XY_WITH_CUDA
  if (device.is_cuda())
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).reserved_bytes[0].current /
           1073741824.0;
#endif
  return 0;
}

int64_t device_peak_bytes(const c10::Device& device, bool reserved) {
#ifdef XY_WITH_CUDA
  if (device.is_cuda()) {
    const auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return (reserved ? st.reserved_bytes[0] : st.allocated_bytes[0]).peak;
  }
#endif
  (void)device;
  (void)reserved;
  return 0;
}

double device_peak_flops(int index, const std::string& precision) {
  if (precision == "fp32") return 0;
#ifdef XY_WITH_CUDA
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, index) != cudaSuccess) return 0;
  const std::string name = p.name;
  for (const auto& [key, flops] : std::vector<std::pair<const char*, double>>{
           {"H100", 989e12}, {"H200", 989e12}, {"H800", 989e12}, {"A100", 312e12}, {"A800", 312e12},
           {"V100", 125e12}, {"L40S", 362e12}, {"A10", 125e12}, {"L4", 121e12}})
    if (name.find(key) != std::string::npos) return flops;
#endif
  return 0;
}

void check_devices(const Config& cfg) {
  const auto& topo = cfg.topology;
  if (topo.device != "cuda") return;
#ifndef XY_WITH_CUDA
  throw std::invalid_argument("topology.device = \"cuda\" in " + cfg.source +
                              ", but this build of xy has only the CPU engine; build with "
                              "-DXY_CUDA=ON against a CUDA LibTorch (README: Building with CUDA)");
#else
  // Local rank l drives GPU l: without this check a missing GPU ends in c10's "Device index ...
  // out of range" with a backtrace (the doctor checks the same, unless it is skipped).
  const int node = topo.node_index;
  const int want = topo.nodes.at(node).devices;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaSuccess && count >= want) return;
  const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES");
  throw std::invalid_argument(
      "node " + std::to_string(node) + ": topology.nodes[" + std::to_string(node) + "].devices = " +
      std::to_string(want) + " in " + cfg.source + " needs " + std::to_string(want) + " GPUs, but " +
      (e == cudaSuccess ? std::to_string(count) + " visible"
                        : std::string("none usable (cudaGetDeviceCount: ") + cudaGetErrorString(e) + ")") +
      " (CUDA_VISIBLE_DEVICES " + (cvd ? std::string("= \"") + cvd + "\"" : std::string("unset")) +
      "); lower its devices, or make the GPUs visible");
#endif
}

void build_context(NodeContext& ctx, const Config& cfg, const RunOptions& opts) {
  set_identity(ctx, cfg, opts);
  connect(ctx, cfg);
  // Every rank initialises each full unit identically (explicit seeded generator) and keeps its
  // slice: the result does not depend on the world size.
  for (int local = 0; local < ctx.local_ranks; ++local) {
    auto sh = std::make_shared<RankShards>();
    sh->rank = ctx.first_rank + local;
    sh->shard = ctx.node_shard ? local : sh->rank;
    ctx.shards.push_back(sh);
  }
  std::optional<CheckpointManifest> ckpt;
  if (!opts.resume.empty()) ckpt = open_resume_checkpoint(cfg, opts);
  std::vector<at::Tensor> hf_units;
  if (!ckpt && !cfg.model.init_from.empty()) hf_units = load_init_from(ctx, cfg, opts);
  for (size_t u = 0; u < ctx.layout.units.size(); ++u)
    place_unit(ctx, ctx.layout.units[u], unit_start(ctx, cfg, static_cast<int>(u), ckpt, &hf_units));
  for (auto& sh : ctx.shards) {
    for (size_t u = 0; u < sh->working.size(); ++u)
      if (ctx.plan.units[u].double_buffered) {  // the delayed update's second copy, beside the first
        const at::Tensor& w = sh->working[u];
        sh->working_alt.push_back(ctx.plan.units[u].working == Where::kPinnedHost ? pinned_copy(w, *sh)
                                                                                  : w.clone());
      }
    if (ctx.plan.staging_elems > 0)
      for (auto& b : sh->staging) b = pinned_zeros(ctx.plan.staging_elems, ctx.working_dtype, *sh);
  }
  check_allocated(ctx);
#ifdef XY_WITH_CUDA
  // The state was placed by work on each GPU's default stream (fills, copies); the ranks' own
  // streams are non-blocking and would not wait for it: it is finished before any of them starts.
  if (ctx.on_device) {
    int previous = 0;
    cudaGetDevice(&previous);
    for (int l = 0; l < ctx.local_ranks; ++l)
      if (cudaSetDevice(l) == cudaSuccess) cudaDeviceSynchronize();
    cudaSetDevice(previous);
  }
#endif
  ctx.start_positions.assign(ctx.local_ranks, 0);
  if (ckpt) set_start(ctx, cfg, *ckpt);
}

std::string agree_precision(KeyValueStore& store, int node, int nodes, const std::string& requested,
                            const std::string& no_bf16, std::string* message) {
  if (requested != "bf16") return requested;
  store.set("xy/precision/no_bf16/" + std::to_string(node), no_bf16.empty() ? "-" : no_bf16);
  for (int n = 0; n < nodes; ++n) {
    const std::string why = store.get("xy/precision/no_bf16/" + std::to_string(n));
    if (why == "-") continue;
    if (message)
      *message = "node " + std::to_string(n) + ": " + why +
                 ": the whole job trains in fp16 with dynamic loss scaling instead of the "
                 "requested bf16 (train.precision)";
    return "fp16";
  }
  return requested;
}

}  // namespace xy
