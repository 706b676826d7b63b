// The job configuration: one struct per concern, loaded from TOML and validated once at start-up.
//
// Each field's default is its initializer here. Its key, rule (type, range or allowed values) and
// user documentation are its row in the field tables of io/config_fields.cpp, from which the
// reader, the "valid:" key lists and the key tables of docs/CONFIG.md are made; the comments here
// say what a field is, for the code that uses it. load_config() rejects unknown keys, wrong types
// and inconsistent values with a ConfigError whose message names the file, line and column, the
// dotted key, and what would be valid, e.g.
//   config/tiny.toml:15:9: model.heads: 7 does not divide model.hidden = 256 (from preset 'tiny'):
//   head_dim would be 36.57, not an integer; valid: a divisor of 256 that leaves an even head_dim,
//   such as 2, 4, 8, 16
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace xy {

// Thrown by load_config/parse_config for any invalid input; what() is the full user-facing message.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One machine of the cluster ([[topology.nodes]]).
struct NodeSpec {
  std::string host = "127.0.0.1";  // address the node's control plane binds to and peers dial
  int port = 0;                     // control-plane TCP port; 0 = pick a free one (single node only)
  int devices = 1;                  // devices (GPUs, or CPU ranks) this node drives
  // Mixed GPUs: this node's samples per micro-batch and micro-batches per step per rank; 0 = the
  // train table's. The loss is weighted by tokens, so the global batch's mean is unchanged.
  int64_t micro_batch = 0;
  int64_t grad_accum = 0;
};

// [topology]: who takes part. Global rank = devices on earlier nodes + local device index.
struct TopologyConfig {
  std::string device = "cpu";   // "cpu" (Gloo between ranks) or "cuda" (NCCL)
  std::vector<NodeSpec> nodes;  // default: one node on 127.0.0.1 with 1 device
  int node_index = 0;           // which entry of nodes this process is (overridable by flag/env)
  double gpu_memory_gb = 0;     // GiB of each GPU the process may use (0 = the whole device)
  // ZeRO-3's sharding: "global" (over every rank), "node" (within each node, replicated across
  // nodes: HSDP), "auto" (node where it fits and moves fewer bytes across the nodes' links).
  std::string shard = "auto";
  int world_size() const;       // sum of devices over nodes
};

// [model]: a LLaMA-style decoder. `preset` fills every shape field; explicit keys override it.
struct ModelConfig {
  std::string preset = "tiny";  // model_preset(): the shape fields below; "custom" = none
  int64_t vocab_size = 0;       // tokens; 0 = take the tokenizer's vocabulary size
  int64_t hidden = 0;           // model width
  int64_t intermediate = 0;     // SwiGLU inner width
  int64_t layers = 0;           // transformer blocks
  int64_t heads = 0;            // attention heads
  int64_t kv_heads = 0;         // key/value heads (grouped-query attention); 0 = heads
  int64_t head_dim = 0;         // width of one attention head; 0 = hidden / heads
  double rms_eps = 1e-5;        // RMSNorm epsilon
  double rope_theta = 10000.0;  // rotary embedding base
  // The Hugging Face class the model is (written on export; it limits the combinations below):
  // "llama" (LlamaForCausalLM), "qwen2" (Qwen2ForCausalLM), "qwen3" (Qwen3ForCausalLM).
  std::string family = "llama";
  bool tie_embeddings = false;         // the LM head is the embedding matrix (one parameter)
  std::string attention_bias = "none"; // "none", "qkv" (Qwen2) or "qkvo" (biases on o_proj too)
  bool qk_norm = false;                // RMSNorm over head_dim on each q and k head before RoPE
  // RoPE frequency scaling as transformers computes it (modeling_rope_utils.py): "none",
  // "linear", "dynamic" (NTK, rescaled for sequences longer than rope_original_max_len),
  // "llama3", "yarn". The parameters apply to the kinds named with them.
  std::string rope_scaling = "none";
  double rope_factor = 1.0;               // linear, dynamic, llama3, yarn
  int64_t rope_original_max_len = 0;      // dynamic, llama3, yarn; 0 = max_seq_len
  double rope_low_freq_factor = 1.0;      // llama3
  double rope_high_freq_factor = 4.0;     // llama3
  double rope_beta_fast = 32.0;           // yarn
  double rope_beta_slow = 1.0;            // yarn
  double rope_attention_factor = 0.0;     // yarn: cos and sin are multiplied by it; 0 = default
  int64_t max_seq_len = 4096;   // longest sequence the model is meant for
  double init_std = 0.02;       // std of the normal init of linear and embedding weights
  uint64_t init_seed = 1234;    // seed of the parameter initialisation (identical on every rank)
  // A Hugging Face LlamaForCausalLM folder (config.json + safetensors) to start from instead of a
  // random initialisation (continued pretraining); its config.json sets the model's shape.
  std::string init_from;
};

// [data]: where tokens come from.
struct DataConfig {
  std::vector<std::string> inputs = {"data/sample/fincorpus_sample.jsonl.gz"};  // JSONL(.gz) files
  std::string text_field = "text";  // JSON key holding each document's text
  // A directory written by `xy-node preprocess`: train from its memory-mapped token shards
  // instead of tokenizing `inputs` (docs/DATA.md). Empty = use inputs.
  std::string shards;
  std::string tokenizer;            // SentencePiece .model; empty = train one from the inputs
  int64_t tokenizer_vocab = 8000;   // vocabulary size when training a tokenizer (BPE, byte fallback)
  std::string work_dir = "runs/tiny";  // tokenizer, token cache and checkpoints go here by default
  int64_t seq_len = 256;            // tokens per sample (the model sees seq_len, predicts the next)
  uint64_t seed = 42;               // seed of the sample order
};

// [train]: the loop.
struct TrainConfig {
  int64_t steps = 200;         // optimizer steps
  int64_t micro_batch = 8;     // samples per micro-batch per rank
  int64_t grad_accum = 1;      // micro-batches per step per rank
  std::string precision = "fp32";  // working precision of parameters (fp32, bf16, fp16)
  int64_t log_every = 10;      // print a step line every N steps (and the first and last)
  int threads = 0;             // intra-op threads for compute per rank; 0 = cores / ranks
  // Dynamic loss scaling (DeepSpeed's DynamicLossScaler): "auto" = on for fp16 only; "dynamic" =
  // on in any precision (drills); "none". An overflow skips the step and halves the scale once
  // `loss_scale_hysteresis` overflows have been seen; `loss_scale_window` good steps double it;
  // an overflow at `min_loss_scale` stops training with the scale history.
  std::string loss_scaling = "auto";
  double initial_loss_scale = 65536;
  int64_t loss_scale_window = 1000;
  int64_t loss_scale_hysteresis = 2;
  double min_loss_scale = 1;
};

// [optimizer]: AdamW with decoupled weight decay and a learning-rate schedule.
struct OptimizerConfig {
  double lr = 3e-3;            // peak learning rate
  double min_lr = 3e-4;        // floor of the decay
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  // Parameters whose name contains any of these substrings get no weight decay.
  std::vector<std::string> no_decay = {"norm"};
  double grad_clip = 1.0;      // clip the global gradient norm to this; 0 = off
  int64_t warmup_steps = 20;   // linear warm-up from 0 to lr
  // cosine | linear | constant: linear warm-up from 0 to lr, then down to min_lr;
  // warmup_decay | warmup: DeepSpeed's WarmupDecayLR / WarmupLR exactly (from min_lr up to lr over
  // warmup_steps, `warmup_type` log or linear; warmup_decay then decays linearly to min_lr at
  // train.steps). Schedules count optimizer steps: a skipped (overflow) step does not advance them.
  std::string schedule = "cosine";
  std::string warmup_type = "log";  // warmup_decay / warmup only: log | linear
  // Delayed parameter update (DeepSpeed's DPU): step s's CPU Adam runs during step s+1's compute,
  // so step s's gradients are taken at the parameters of step s-2 (one step stale).
  bool delayed_update = false;
  // Where the optimizer state (fp32 master, m, v) of each rank's shard lives on GPU ranks
  // (optim/placement.hpp, docs/PLACEMENT.md): "cpu" (host memory, the CPU AdamW), "gpu" (the
  // device, the device AdamW), a fraction "0.25" (that share of every unit's shard on the device),
  // or "auto" (the largest share that fits the GPU with a margin). CPU ranks ignore it.
  std::string placement = "auto";
};

// optimizer.placement as a share of each shard on the device: 0 ("cpu"), 1 ("gpu"), the fraction,
// or -1 for "auto". Throws std::invalid_argument for anything else.
double placement_fraction(const std::string& placement);

// [actors]: runtime settings of the actors.
struct ActorsConfig {
  int prefetch_batches = 2;          // micro-batches the prefetcher keeps ready per rank
  // Units (model/layout.hpp: the embedding, one block, the head) the parameter-shard gathers ahead
  // of the one in use; the key keeps its older name.
  int prefetch_layers = 1;
  int64_t gather_budget_mb = 4096;   // max MiB of gathered (full) unit parameters held per rank
  int adam_threads = 0;              // CPU Adam threads per node; 0 = all cores
  // Parameter offload (GPU ranks): the working-precision shards live in pinned host memory and are
  // copied to the device just ahead of their all-gather, instead of staying on the device.
  bool offload_params = false;
};

// [deadlines]: seconds before an in-flight operation is declared stuck (watchdog).
struct DeadlinesConfig {
  double collective_s = 120;   // one all-gather / reduce-scatter / all-reduce
  double compute_s = 300;      // one unit's forward or backward
  double optimizer_s = 300;    // CPU Adam on one unit's shard
  double batch_s = 120;        // waiting for a micro-batch
  double checkpoint_s = 1800;  // writing one checkpoint
  double first_step_factor = 5;  // deadlines of step 1 are multiplied by this (warm-up, allocation)
  double poll_ms = 200;        // how often the watchdog looks
  // false: the watchdog does not poll the deadlines and its watcher thread does not run
  // (benchmarks of its overhead only; a stuck operation then hangs). Operations are still
  // registered and heartbeats and the status server still run.
  bool watchdog = true;
};

// [control]: the control plane between nodes, the job's secret and the status server
// (docs/OPERATIONS.md).
struct ControlConfig {
  // The job's shared secret: a node joins only if it proves it knows the same one (HMAC-SHA256
  // over a fresh challenge; the secret never crosses the network and is never logged). The
  // environment's XY_SECRET overrides it. Empty on every node = no check (a warning with > 1 node).
  std::string secret;
  double heartbeat_s = 10;      // a node without a heartbeat for this long is declared lost
  int http_port = 0;            // status server port (JSON /status, /metrics, page /); 0 = off
  std::string http_host;        // address it binds to; empty = this node's topology host
  bool doctor = true;           // `train` runs the preflight checks first (--no-doctor: off)
};

// [checkpoint]
struct CheckpointConfig {
  std::string dir;             // default: <data.work_dir>/checkpoints
  int64_t every_steps = 0;     // 0 = only at the end
  double every_minutes = 0;    // also when this many minutes passed since the last one; 0 = off
  int keep_last = 2;           // the newest checkpoints kept
  int64_t keep_every = 0;      // also keep every checkpoint whose step is a multiple; 0 = none
};

// [eval]: held-out losses during training (docs/CONFIG.md).
struct EvalConfig {
  std::vector<std::string> sets;  // "name=path": a JSONL(.gz/.zst) file or a preprocess shards dir
  int64_t every_steps = 0;        // 0 = only at the end
  int64_t samples = 64;           // samples per set (at most the set's size)
  int64_t micro_batch = 0;        // samples per forward per rank; 0 = train.micro_batch
  bool at_end = true;             // also after the last step
  double holdout = 0;             // fraction of the training documents held out as a set; 0 = none
  std::string holdout_name = "heldout";
};

struct Config {
  TopologyConfig topology;
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimizerConfig optimizer;
  ActorsConfig actors;
  DeadlinesConfig deadlines;
  CheckpointConfig checkpoint;
  ControlConfig control;
  EvalConfig eval;
  // [faults]: fault injection for tests and drills (docs/OPERATIONS.md). `inject` uses the syntax
  // of the XY_FAULT environment variable, which overrides it; "" = none. Checked by xy-node train.
  struct FaultsConfig {
    std::string inject;
  } faults;
  std::string source;  // the file it was loaded from ("<string>" for parse_config)
};

// Node `node`'s samples per micro-batch and micro-batches per step (per rank): its
// [[topology.nodes]] entry's, else the train table's.
inline int64_t node_micro_batch(const Config& c, int node) {
  const auto& n = c.topology.nodes;
  return node < static_cast<int>(n.size()) && n[node].micro_batch > 0 ? n[node].micro_batch
                                                                        : c.train.micro_batch;
}
inline int64_t node_grad_accum(const Config& c, int node) {
  const auto& n = c.topology.nodes;
  return node < static_cast<int>(n.size()) && n[node].grad_accum > 0 ? n[node].grad_accum
                                                                      : c.train.grad_accum;
}
// Samples each global rank takes per optimizer step (its node's micro_batch x grad_accum), in rank
// order; the global batch is their sum.
inline std::vector<int64_t> rank_step_samples(const Config& c) {
  const auto& n = c.topology.nodes;
  if (n.empty()) return {c.train.micro_batch * c.train.grad_accum};
  std::vector<int64_t> out;
  for (int i = 0; i < static_cast<int>(n.size()); ++i)
    out.insert(out.end(), n[i].devices, node_micro_batch(c, i) * node_grad_accum(c, i));
  return out;
}
inline int64_t step_samples(const Config& c) {
  int64_t total = 0;
  for (int64_t x : rank_step_samples(c)) total += x;
  return total;
}
// The samples the whole job has consumed when global rank 0 has consumed `rank0` (after whole
// steps): rank0 x world when every rank takes as many per step, else rank 0's steps x the samples
// of a step (the inverse of a resumed run's data positions).
inline int64_t global_samples(const Config& c, int64_t rank0, int world) {
  const std::vector<int64_t> per = rank_step_samples(c);
  for (int64_t x : per)
    if (x != per[0]) return rank0 / per[0] * step_samples(c);
  return rank0 * world;
}
// The most micro-batches per step of any node: gradients accumulate in fp32 (on the GPU, or landing
// in fp32 on CPU ranks) on every node when it is above 1, so that node sharding's all-reduce
// between nodes sums tensors of one type also when the nodes' grad_accum differ.
inline int64_t max_grad_accum(const Config& c) {
  int64_t most = c.train.grad_accum;
  if (!c.topology.nodes.empty()) most = node_grad_accum(c, 0);
  for (int i = 1; i < static_cast<int>(c.topology.nodes.size()); ++i) most = std::max(most, node_grad_accum(c, i));
  return most;
}

// head_dim, or hidden / heads when it is 0; kv_heads, or heads when it is 0.
inline int64_t head_dim_of(const ModelConfig& m) {
  return m.head_dim > 0 ? m.head_dim : (m.heads > 0 ? m.hidden / m.heads : 0);
}
inline int64_t kv_heads_of(const ModelConfig& m) { return m.kv_heads > 0 ? m.kv_heads : m.heads; }

// Shapes of the named presets (exactly those of the benchmark peer). Throws ConfigError for an
// unknown name, listing the valid ones.
ModelConfig model_preset(const std::string& name);

// Loads and validates `path`. Relative paths inside the file (data inputs, tokenizer, work_dir,
// checkpoint dir) are kept as written (relative to the working directory).
Config load_config(const std::string& path);

// Same from a string; `source_name` stands in for the file name in messages.
Config parse_config(const std::string& toml_text, const std::string& source_name = "<string>");

}  // namespace xy
