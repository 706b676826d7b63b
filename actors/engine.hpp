// What the actors of one node share, and the entry point that runs a training job on this node.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "actors/exit_codes.hpp"
#include "actors/protocol.hpp"
#include "health/registry.hpp"
#include "optim/schedule.hpp"
#include "optim/thread_pool.hpp"
#include "comm/comm.hpp"
#include "comm/device.hpp"
#include "io/config.hpp"
#include "io/dataset.hpp"
#include "io/samples.hpp"
#include "model/layout.hpp"
#include "model/llama.hpp"
#include "optim/placement.hpp"

namespace xy {

class MetricsLog;  // health/metrics.hpp


// One rank's memory, allocated once at start-up where the node's PlacementPlan says (context.cpp
// checks that what it allocated is what the plan priced). Ownership: `working` and `grad` are
// written by the rank's parameter-shard actor (grad: during backward; working: never), `master`,
// `m`, `v` and `working` by its optimizer-offload actor (between finish and the unit's `updated`).
struct RankShards {
  int rank = 0;
  // Which slice of each unit this rank holds: its global rank, or with node sharding its local
  // index (the shard group is the node; the same slices live on every node).
  int shard = 0;
  std::vector<at::Tensor> working;  // per unit [shard_numel], working precision
  // The optimizer state is split at the plan's device_elems d of each unit (optim/placement.hpp):
  // elements [d, shard_numel) of the shard live in host memory below, [0, d) on the GPU in the
  // *_dev tensors (empty where no unit has state on the GPU, e.g. on CPU ranks).
  std::vector<at::Tensor> grad;     // per unit [shard_numel - d], the gradient landing buffer
  std::vector<at::Tensor> master;   // per unit [shard_numel - d], fp32
  std::vector<at::Tensor> m, v;     // per unit [shard_numel - d], fp32 Adam moments
  std::vector<at::Tensor> master_dev, m_dev, v_dev;  // per unit [d], fp32, on the GPU
  std::vector<at::Tensor> grad_gpu;  // per unit [d], the landed gradient the device AdamW reads
  // master (0), m (1) or v (2): the host parts and the GPU parts (empty list: none) of every unit.
  std::pair<const std::vector<at::Tensor>*, const std::vector<at::Tensor>*> state_parts(int which) const {
    return which == 0 ? std::pair{&master, &master_dev} : which == 1 ? std::pair{&m, &m_dev} : std::pair{&v, &v_dev};
  }
  // Unit u's whole shard of master (0), m (1) or v (2) in host memory: the GPU part copied down
  // on the current stream (which the caller has ordered after the optimizer), the host part after it.
  at::Tensor state_on_host(int which, size_t u) const;
  // On a device only: `working` lives on the device (the optimizer writes each unit's new working
  // copy into a pinned staging buffer, `staging`, and copies it up); `grad` is pinned and in the
  // working precision (bf16 gradients land in 2 bytes: host state is then 14 bytes a parameter);
  // with grad_accum > 1 gradients accumulate on the device in `grad_dev` (fp32) until the end of
  // the step.
  std::vector<at::Tensor> grad_dev;
  // With the delayed update the working copy is double-buffered: version v lives in
  // working_of(u, v), so the optimizer writes version v + 1 while version v is still being read.
  std::vector<at::Tensor> working_alt;
  // The delayed update with the working copy on the GPU (the plan's deferred_write): one copy. The
  // optimizer leaves version v's host part here, per unit [shard_numel - d], pinned (its GPU part is
  // the fp32 master's); the parameter-shard writes both into `working` once the next step's
  // backward has read version v - 1 (param_shard.cpp, write_next). Empty otherwise.
  std::vector<at::Tensor> next_host;
  // Where working copies live on the device: two pinned buffers (the largest shard each) that the
  // optimizer writes each unit's new working copy into, in turn, before it is copied up.
  at::Tensor staging[2];
  at::Tensor& working_of(size_t u, int64_t version) {
    return working_alt.empty() || version % 2 == 0 ? working[u] : working_alt[u];
  }
  // Parameter offload (working copies in pinned host memory): the last host-to-device copy that
  // read each unit's buffer of each version parity; with deferred writes, the last one that read
  // its next_host. The parameter-shard records it; the optimizer waits for it before it writes that
  // buffer again (an explicit guard, not a consequence of the order in which gathers happen to be
  // issued).
  void note_read(size_t u, int64_t version, DeviceEventPtr e) {
    std::lock_guard<std::mutex> lock(read_mu_);
    auto& v = last_read_[parity(version)];
    if (v.size() <= u) v.resize(u + 1);
    v[u] = std::move(e);
  }
  void wait_reads(size_t u, int64_t version) {
    DeviceEventPtr e;
    {
      std::lock_guard<std::mutex> lock(read_mu_);
      const auto& v = last_read_[parity(version)];
      if (u < v.size()) e = v[u];
    }
    if (e) e->synchronize();
  }
  // The optimizer's state of docs/ARCHITECTURE.md: fp32 master, m, v and the gradient landing
  // buffer (14 bytes a parameter with 16-bit gradients, 16 with fp32 ones).
  int64_t state_bytes() const;
  // The working copies (device memory; on CPU ranks they live in host memory too).
  int64_t working_bytes() const;
  // What the rank holds, measured from its tensors: on the device, in host memory (every host
  // tensor), and the page-locked part of that (counted as it is allocated: pinned_bytes_).
  int64_t device_bytes() const;
  int64_t host_bytes() const;
  int64_t pinned_bytes() const { return pinned_bytes_; }
  void note_pinned(int64_t bytes) { pinned_bytes_ += bytes; }

 private:
  template <class F>
  void for_each_tensor(F&& f) const;
  int64_t pinned_bytes_ = 0;
  int parity(int64_t version) const { return working_alt.empty() ? 0 : static_cast<int>(version % 2); }
  std::mutex read_mu_;
  std::vector<DeviceEventPtr> last_read_[2];
};

// Per-step record kept for the summary and tests.
struct StepRecord {
  int64_t step = 0;
  double loss = 0, grad_norm = 0, lr = 0;
  double step_s = 0, compute_s = 0, wait_gather_s = 0, wait_batch_s = 0, wait_finish_s = 0;
  double wait_optimizer_s = 0;  // the part of wait_gather_s spent waiting for the CPU optimizer
  // The rest of wait_gather_s: gathers that prefetching did not hide.
  double exposed_gather_s() const { return std::max(0.0, wait_gather_s - wait_optimizer_s); }
  double tokens_per_s = 0;
  double loss_scale = 1;            // the loss scale the step ran with (1 without loss scaling)
  bool skipped = false;             // an overflow skipped the optimizer step
  std::vector<int> overflow_units;  // units whose gradients overflowed
};

// One evaluation of one held-out set ([eval]), the same on every rank.
struct EvalRecord {
  std::string name;
  int64_t step = 0;
  double loss = 0;        // mean token cross-entropy
  double tokens = 0;      // tokens scored (all ranks)
  int64_t samples = 0;    // samples evaluated (all ranks)
  double seconds = 0;
};

struct TrainResult {
  int exit_code = kExitOk;
  std::string error;                 // first error, if any
  std::vector<StepRecord> steps;     // as seen by global rank 0 of this node
  std::vector<EvalRecord> evals;     // every evaluation, in order
  std::vector<at::Tensor> final_params;  // per unit, full fp32 master (only when every rank is local)
  std::string checkpoint_dir;        // last published checkpoint, if any
  int64_t host_bytes = 0;            // host state: master, m, v, gradient landing (all ranks here)
  int64_t working_bytes = 0;         // working copies (device memory; host on CPU ranks)
  // GPU ranks: the plan's predicted peak per rank (persistent state + the step's estimate) and the
  // caching allocator's measured peak, allocated and reserved, the most over local GPUs.
  int64_t predicted_peak_bytes = 0, device_peak_bytes = 0, device_reserved_peak_bytes = 0;
  int64_t final_adam_step = 0;       // optimizer steps applied (skipped steps not counted)
  int64_t final_samples = 0;         // samples consumed per rank (the data position)
  double final_loss = 0;
  LossScalerState final_scaler;
  double seconds = 0;                // wall time of the training loop
  std::string resumed_from;          // the checkpoint training started from, if any
  double checkpoint_pause_s = 0;     // the last checkpoint: training paused for its snapshot
  double checkpoint_write_s = 0;     // ... and its background write
};

// Everything the node's actors share. Built by the node supervisor before spawning them.
struct NodeContext {
  Config cfg;
  ModelLayout layout;
  std::shared_ptr<const Llama> model;
  std::shared_ptr<const SampleSource> data;
  OpRegistry registry;
  int world = 1;        // global ranks
  int first_rank = 0;   // global rank of local rank 0
  int local_ranks = 1;
  int node_index = 0;   // this node's entry in cfg.topology.nodes
  int nodes = 1;
  std::shared_ptr<KeyValueStore> store;              // the job's rendezvous store
  std::vector<std::shared_ptr<Comm>> comms;          // per local rank: every rank of the job
  // ZeRO-3's sharding (topology.shard, resolved at start-up): with node sharding the units are
  // sharded over each node's ranks (shard_world = local_ranks) and replicated across nodes; the
  // gathers and per-micro-batch reductions use shard_comms, the once-per-step gradient all-reduce
  // between nodes replica_comms. With global sharding shard_comms = comms, replica_comms empty.
  bool node_shard = false;
  int shard_world = 1;
  std::string shard_why;  // the choice and its reason (printed at start-up with several nodes)
  std::vector<std::shared_ptr<Comm>> shard_comms, replica_comms;
  std::vector<std::shared_ptr<RankShards>> shards;   // per local rank
  std::vector<RankStreams> streams;                  // per local rank (CPU: all default)
  bool on_device = false;                            // topology.device is cuda
  std::unique_ptr<ThreadPool> adam_pool;             // node pool for CPU Adam
  at::ScalarType working_dtype = at::kFloat;
  // Where every piece of each local rank's state lives, and its bytes (optim/placement.hpp): made
  // once before anything is allocated; the allocation, the optimizer and the reports read it.
  PlacementPlan plan;
  bool quiet = false;  // no per-step lines (tests)

  // Where training starts (from a checkpoint, else 0): the units' version, Adam's step count and
  // each local rank's data position.
  int64_t start_step = 0;
  int64_t start_adam_step = 0;
  std::optional<LossScalerState> start_scaler;  // from the checkpoint
  std::vector<int64_t> start_positions;
  std::string resumed_from;
  std::vector<EvalSet> eval_sets;  // from RunOptions
  std::optional<TokenizerRecord> tokenizer;  // from RunOptions: recorded in checkpoint manifests

  // <work_dir>/metrics.jsonl and TensorBoard (node 0, with RunOptions::metrics): global rank 0
  // appends a line per step (health/metrics.hpp).
  std::shared_ptr<MetricsLog> metrics;
  double peak_flops = 0;  // per device, for MFU (0: unknown, e.g. CPU ranks)

  std::atomic<bool> failed{false};  // set by fail(): trainers stop at their next step
  double last_checkpoint_pause_s = 0, last_checkpoint_write_s = 0;  // for the benchmark

  std::mutex result_mu;
  TrainResult result;  // guarded by result_mu
  void fail(const std::string& what, int code = kExitError);
};

struct RunOptions {
  std::shared_ptr<const SampleSource> data;  // the samples to train on
  bool quiet = false;
  bool checkpoint_at_end = true;
  std::string resume;            // "latest" or a checkpoint directory; empty = start fresh
  bool resume_fallback = false;  // if that checkpoint is corrupt, use the newest good older one
  bool verify = true;            // check every file's SHA-256 before resuming
  bool keep_params = false;      // return the full fp32 parameters (tests; costs 4 bytes/parameter)
  bool metrics = false;          // write <work_dir>/metrics.jsonl and tb/ (xy-node train does)
  std::vector<EvalSet> eval_sets;  // [eval]'s held-out sets (prepare_eval_sets)
  std::optional<TokenizerRecord> tokenizer;  // the run's tokenizer (PreparedData), for the manifests
};

// Tokens of one optimizer step of the whole job (every rank, every micro-batch).
int64_t tokens_per_step(const NodeContext& ctx);

// Seconds left after the last of `steps` (this run's records, oldest first): the mean time of the
// last 20, leaving out the run's first step (its warm-up) once there are others, times the steps
// to go until `total_steps`. 0 without records. The step line, metrics.jsonl and /status use it.
double eta_seconds(const std::vector<StepRecord>& steps, int64_t total_steps);

// Runs the training job of this node as configured: builds the context, spawns the actors, trains,
// checkpoints, shuts down. Never throws; errors are in the result's exit_code and error.
TrainResult run_training(const Config& cfg, const RunOptions& opts);

// That this node's devices exist: topology.device = "cuda" needs a CUDA build and, on this node,
// at least topology.nodes[node_index].devices visible GPUs (local rank l drives GPU l). Throws
// std::invalid_argument with one line naming the node, its devices, the GPUs visible and
// CUDA_VISIBLE_DEVICES. run_training checks it; `xy-node train` also checks it first.
void check_devices(const Config& cfg);

// bf16 where every device of the job has it, else fp16 everywhere (docs/ARCHITECTURE.md, "Precision"). Each
// node publishes on the job's store whether its devices have bf16 (`no_bf16` empty) or why not,
// and reads every node's answer: with `requested` = "bf16" and any node without it, the answer is
// "fp16" and `message` (if given) says which node and device forced it. Other precisions pass
// through. Every node gets the same answer.
std::string agree_precision(KeyValueStore& store, int node, int nodes, const std::string& requested,
                            const std::string& no_bf16, std::string* message);

}  // namespace xy
