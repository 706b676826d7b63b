// The field tables of the job configuration: every key's member, rule, shown default and docs, once
// (io/config_fields.hpp says what is made of them). Adding a key: its member in io/config.hpp, its
// row here, then regenerate docs/CONFIG.md's tables (tests/config_test.cpp's ConfigDocs says how)
// and show it in config/tiny.toml. The file is a little over 600 lines because the tables carry
// the user documentation of all 70-odd keys; the code around them is small.
#include "io/config_fields.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "io/hf_config.hpp"

namespace xy {
namespace config_fields {

const std::vector<std::string> kPresets = {"tiny",        "1b",          "3b",          "7b",
                                           "xuanyuan-6b", "llama3.1-8b", "llama3.2-1b", "llama3.2-3b",
                                           "qwen3-1.7b",  "qwen3-8b",    "custom"};

// ---- text --------------------------------------------------------------------------------------

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string fmt_double(double v) {
  char buf[64];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string text = buf;
  size_t e = text.find('e');
  if (e != std::string::npos) {
    std::string mantissa = text.substr(0, e), exponent = text.substr(e + 1);
    std::string sign = exponent[0] == '-' ? "-" : "";
    size_t digits = exponent.find_first_not_of("+-0");
    text = mantissa + "e" + sign + (digits == std::string::npos ? "0" : exponent.substr(digits));
  }
  return text;
}

namespace {

// Levenshtein distance, ASCII case-insensitive (so 'Hidden' is 0 edits from 'hidden', and is
// suggested as such; TOML keys themselves are case-sensitive).
size_t edit_distance(const std::string& a, const std::string& b) {
  auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t subst = prev[j - 1] + (lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

// Within 3 edits, and not a complete rewrite of a short word (a guess rather than a correction).
std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 4;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_distance && d < std::max(word.size(), c.size())) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

// ---- the error builder -------------------------------------------------------------------------

void Context::fail(Pos where, const std::string& key, const std::string& problem,
                   const std::string& valid) const {
  std::string msg = source_;
  if (where.line > 0) msg += ":" + std::to_string(where.line);
  if (where.line > 0 && where.column > 0) msg += ":" + std::to_string(where.column);
  msg += ": ";
  if (!key.empty()) msg += key + ": ";
  msg += problem;
  if (!valid.empty()) msg += "; valid: " + valid;
  throw ConfigError(msg);
}

Pos Context::first_given(const std::vector<std::string>& keys) const {
  for (const std::string& key : keys) {
    auto it = given_.find(key);
    if (it != given_.end()) return it->second;
  }
  return {};
}

// ---- rules -------------------------------------------------------------------------------------

std::string Rule::valid() const {
  switch (kind) {
    case Kind::kInteger:
      // The type's own limit is not worth stating (the reader names it when a value exceeds it).
      if (max == INT64_MAX || max == INT_MAX) return "an integer >= " + std::to_string(min);
      return "an integer in " + std::to_string(min) + ".." + std::to_string(max);
    case Kind::kNumber: return "a number " + range;
    case Kind::kString:
      if (!allowed.empty()) return join(allowed);
      return required ? "a non-empty string" : "a string";
    case Kind::kBoolean: return "true, false";
    case Kind::kStrings:
    case Kind::kTables: return list_valid;
  }
  return "";
}

Rule integer(int64_t min, int64_t max) {
  Rule r;
  r.kind = Kind::kInteger;
  r.min = min;
  r.max = max;
  return r;
}

Rule number(bool (*ok)(double), std::string range) {
  Rule r;
  r.kind = Kind::kNumber;
  r.ok = ok;
  r.range = std::move(range);
  return r;
}

Rule positive() {
  return number([](double v) { return v > 0; }, "> 0");
}

Rule non_negative() {
  return number([](double v) { return v >= 0; }, ">= 0");
}

Rule seconds() {
  return number([](double v) { return v > 0 && v <= kMaxSeconds; }, "> 0 and <= 2592000 (30 days)");
}

Rule string() { return Rule{}; }

Rule non_empty() {
  Rule r;
  r.required = true;
  return r;
}

Rule one_of(std::vector<std::string> allowed) {
  Rule r;
  r.allowed = std::move(allowed);
  return r;
}

Rule boolean() {
  Rule r;
  r.kind = Kind::kBoolean;
  return r;
}

Rule strings(bool required, std::string valid) {
  Rule r;
  r.kind = Kind::kStrings;
  r.required = required;
  r.list_valid = std::move(valid);
  return r;
}

Rule tables(std::string valid) {
  Rule r;
  r.kind = Kind::kTables;
  r.required = true;
  r.list_valid = std::move(valid);
  return r;
}

// ---- the tables --------------------------------------------------------------------------------

const Table<TopologyConfig>& topology_table() {
  using T = TopologyConfig;
  static const Table<T> table{"topology", {
      {"device", &T::device, one_of({"cpu", "cuda"}),
       "`cpu` (Gloo between ranks; several CPU ranks may run in one process) or `cuda` (NCCL)"},
      {"nodes", &T::nodes, tables("one or more [[topology.nodes]] tables with host, port, devices"),
       "written as `[[topology.nodes]]` blocks (below), one per machine, in rank order",
       "one node: `127.0.0.1`, port 0, 1 device"},
      {"node_index", &T::node_index, integer(0),
       "which `[[topology.nodes]]` entry this process is; less than the number of nodes (may be "
       "overridden by a flag or the launcher's environment)"},
      {"shard", &T::shard, one_of({"auto", "global", "node"}),
       "how ZeRO-3 shards parameters, gradients and optimizer state: `global` over every rank; "
       "`node` within each node and replicated across nodes (HSDP: gathers and per-micro-batch "
       "reductions stay inside the node, one gradient all-reduce per step crosses between nodes; "
       "needs the same `devices` on every node); `auto` = `node` where every node has the same "
       "`devices`, the node-sharded state fits and it moves fewer bytes between nodes per step "
       "than `global`, else `global` (one node: the same). `train` prints the choice and why "
       "([OPERATIONS.md](OPERATIONS.md#running-on-several-machines))"},
      {"gpu_memory_gb", &T::gpu_memory_gb,
       number([](double v) { return v >= 0 && v <= 1048576; }, ">= 0 and <= 1048576"),
       "GiB of each GPU that xy may use; `0` = the whole device. A cap makes a large GPU play a "
       "smaller one (`39.5` an A100-40G, `31.7` a V100-32G): the placement plan checks the "
       "state against the least of this and the free memory, and LibTorch's caching allocator is "
       "limited to it ([OPERATIONS.md](OPERATIONS.md#a-gpu-memory-cap)). Only with `device = \"cuda\"`",
       "",
       [](const Context& ctx, const std::string& prefix, T& topo) {
         if (topo.gpu_memory_gb == 0 || topo.device == "cuda") return;
         ctx.fail(ctx.first_given({prefix + ".gpu_memory_gb"}), prefix + ".gpu_memory_gb",
                  config_fields::fmt_double(topo.gpu_memory_gb) + " caps a GPU's memory, but " + prefix +
                      ".device is \"" + topo.device + "\"",
                  "0 with device = \"cpu\"");
       }},
  }};
  return table;
}

const Table<NodeSpec>& node_table() {
  using T = NodeSpec;
  static const Table<T> table{"topology.nodes", {
      {"host", &T::host, non_empty(), "address the node's control plane binds to and peers dial"},
      {"port", &T::port, integer(0, 65535),
       "control-plane TCP port, at most 65534 (node 0 also serves the rendezvous store on `port + "
       "1`); `0` = pick a free one, allowed only with a single node",
       "",
       [](const Context& ctx, const std::string& prefix, T& node) {
         if (node.port <= kMaxPort) return;
         ctx.fail(ctx.first_given({prefix + ".port"}), prefix + ".port",
                  std::to_string(node.port) + " leaves no port for the rendezvous store, which node "
                  "0 serves on its port + 1",
                  "1.." + std::to_string(kMaxPort) + ", or 0 (pick a free one) with a single node");
       }},
      {"devices", &T::devices, integer(1, kMaxDevices),
       "devices (GPUs, or CPU ranks) this node drives. With `device = \"cuda\"` the node needs that "
       "many visible GPUs (local rank *l* drives GPU *l*): `train` checks it before anything else, "
       "also with the doctor off"},
      {"micro_batch", &T::micro_batch, integer(0, int64_t{1} << 20),
       "samples per micro-batch on each of this node's ranks; `0` = `train.micro_batch`. For mixed "
       "GPUs: the loss and gradients are weighted by tokens, so the step's mathematics is that of "
       "one batch of all nodes' samples ([OPERATIONS.md](OPERATIONS.md#running-on-several-machines))"},
      {"grad_accum", &T::grad_accum, integer(0, int64_t{1} << 20),
       "micro-batches per step on each of this node's ranks; `0` = `train.grad_accum`. Nodes may "
       "differ only with `topology.shard = \"node\"` (with global sharding every rank gathers "
       "every unit for every micro-batch, so all must run as many)"},
  }};
  return table;
}

const Table<ModelConfig>& model_table() {
  using T = ModelConfig;
  static const Table<T> table{
      "model",
      {
          {"preset", &T::preset, one_of(kPresets),
           "fills every shape key (the presets are below); `custom`: none, `hidden`, "
           "`intermediate`, `layers` and `heads` must all be given",
           "",
           // The preset first, then every key written in [model] overrides it.
           [](const Context&, const std::string&, T& m) { m = model_preset(m.preset); }},
          {"vocab_size", &T::vocab_size, integer(0, kMaxVocab),
           "tokens in the embedding (token ids are int32); `0` = take the tokenizer's vocabulary "
           "size",
           "from the preset (`custom`: `0`)"},
          {"hidden", &T::hidden, integer(1), "model width", "from the preset"},
          {"intermediate", &T::intermediate, integer(1), "SwiGLU inner width", "from the preset"},
          {"layers", &T::layers, integer(1, kMaxLayers), "transformer blocks", "from the preset"},
          {"heads", &T::heads, integer(1), "attention heads; see the rules below", "from the preset"},
          {"kv_heads", &T::kv_heads, integer(0),
           "key/value heads (grouped-query attention); `0` = `heads`, resolved to `heads` at load",
           "from the preset"},
          {"head_dim", &T::head_dim, integer(0, int64_t{1} << 20),
           "width of one attention head (even); `0` = `hidden / heads`. q_proj is `heads x head_dim` "
           "rows, k_proj and v_proj `kv_heads x head_dim`",
           "from the preset (`tiny`: `0`)"},
          {"rms_eps", &T::rms_eps, positive(), "RMSNorm epsilon", "from the preset (`tiny`: `1e-5`)"},
          {"rope_theta", &T::rope_theta, positive(), "rotary embedding base",
           "from the preset (`tiny`: `10000.0`)"},
          {"max_seq_len", &T::max_seq_len, integer(1),
           "longest sequence the model is meant for; `>= data.seq_len`",
           "from the preset (`tiny`: `4096`)"},
          {"family", &T::family, one_of({"llama", "qwen2", "qwen3"}),
           "the Hugging Face class the model is, written by `xy-node export` (`LlamaForCausalLM`, "
           "`Qwen2ForCausalLM`, `Qwen3ForCausalLM`); each expresses only some of the keys below "
           "(`qk_norm` is Qwen3's and only Qwen3's, `attention_bias = \"qkv\"` Qwen2's and only "
           "Qwen2's; Qwen2 has no `head_dim` of its own): a combination it cannot express is refused",
           "from the preset (`tiny`: `\"llama\"`)"},
          {"tie_embeddings", &T::tie_embeddings, boolean(),
           "the LM head is the embedding matrix (`tie_word_embeddings`): one parameter, sharded, "
           "updated and checkpointed once; its gradient sums the embedding's and the head's",
           "from the preset (`tiny`: `false`)"},
          {"attention_bias", &T::attention_bias, one_of({"none", "qkv", "qkvo"}),
           "biases of the attention projections: `qkv` on q/k/v (Qwen2), `qkvo` also on o_proj "
           "(transformers' `attention_bias = true` of Llama and Qwen3); initialised to 0"},
          {"qk_norm", &T::qk_norm, boolean(),
           "an RMSNorm over `head_dim` of each query and key head before RoPE (Qwen3's `q_norm`, "
           "`k_norm`)",
           "from the preset (`tiny`: `false`)"},
          {"rope_scaling", &T::rope_scaling, one_of({"none", "linear", "dynamic", "llama3", "yarn"}),
           "RoPE frequency scaling, computed as transformers does: `linear` (frequencies / "
           "`rope_factor`), `dynamic` (NTK: the base grows for sequences longer than "
           "`rope_original_max_len`), `llama3` (Llama 3.1's), `yarn` (with its attention factor)",
           "from the preset (`tiny`: `\"none\"`)"},
          {"rope_factor", &T::rope_factor, positive(),
           "the scaling factor of `linear`, `dynamic`, `llama3` and `yarn`",
           "from the preset (`tiny`: `1.0`)"},
          {"rope_original_max_len", &T::rope_original_max_len, integer(0, int64_t{1} << 40),
           "the context length the scaling is relative to (`original_max_position_embeddings`; "
           "`dynamic`: transformers' `max_position_embeddings`); `0` = `max_seq_len`",
           "from the preset (`tiny`: `0`)"},
          {"rope_low_freq_factor", &T::rope_low_freq_factor, positive(), "`llama3`'s `low_freq_factor`",
           "from the preset (`tiny`: `1.0`)"},
          {"rope_high_freq_factor", &T::rope_high_freq_factor, positive(),
           "`llama3`'s `high_freq_factor`; `> rope_low_freq_factor`", "from the preset (`tiny`: `4.0`)"},
          {"rope_beta_fast", &T::rope_beta_fast, positive(), "`yarn`'s `beta_fast`"},
          {"rope_beta_slow", &T::rope_beta_slow, positive(), "`yarn`'s `beta_slow`"},
          {"rope_attention_factor", &T::rope_attention_factor, non_negative(),
           "`yarn`'s `attention_factor` (multiplies cos and sin); `0` = transformers' default, "
           "`0.1 ln(rope_factor) + 1` (1 when `rope_factor <= 1`)"},
          {"init_std", &T::init_std, positive(),
           "standard deviation of the normal init of linear and embedding weights"},
          {"init_seed", &T::init_seed, integer(0),
           "seed of the parameter initialisation (identical on every rank)"},
          {"init_from", &T::init_from, string(),
           "a Hugging Face `LlamaForCausalLM`, `Qwen2ForCausalLM` or `Qwen3ForCausalLM` folder to "
           "start from instead of a random initialisation; its config.json sets the shape and "
           "architecture (see below), and its `tokenizer.json` (or `tokenizer.model`), if any, is "
           "the run's tokenizer unless `data.tokenizer` is set; empty = none"},
      },
      [](const Context& ctx, const std::string&, T& m) {
        if (!m.init_from.empty()) {
          // The folder's config.json is the model's shape (docs/CONFIG.md): taken here, once, so
          // that every command (train, doctor, status) and every check sees the real shape, never
          // the zeros of preset 'custom'.
          try {
            apply_init_from_shape(m);
          } catch (const std::exception& e) {
            ctx.fail(ctx.first_given({"model.init_from"}), "model.init_from",
                     "cannot take the model's shape from it: " + std::string(e.what()),
                     "a Hugging Face Llama, Qwen2 or Qwen3 folder (config.json + safetensors)");
          }
          return;
        }
        if (m.preset != "custom") return;
        for (const char* key : {"hidden", "intermediate", "layers", "heads"}) {
          if (ctx.was_given("model." + std::string(key))) continue;
          ctx.fail(ctx.first_given({"model.preset", "model"}), "model." + std::string(key),
                   "missing; model.preset = 'custom' needs hidden, intermediate, layers and heads",
                   "set model." + std::string(key) + ", or choose a preset: " +
                       join(std::vector<std::string>(kPresets.begin(), kPresets.end() - 1)));
        }
      }};
  return table;
}

// SentencePiece BPE with byte fallback needs 256 byte pieces plus <unk>, <s>, </s>, and at least
// one learned piece.
constexpr int64_t kMinTrainedVocab = 260;

const Table<DataConfig>& data_table() {
  using T = DataConfig;
  static const Table<T> table{"data", {
      {"inputs", &T::inputs, strings(true, "one or more JSONL (.jsonl or .jsonl.gz) paths"),
       "JSONL files (`.jsonl`, `.json`, optionally gzipped), one JSON object per line; one path per "
       "file (no globs)"},
      {"text_field", &T::text_field, non_empty(), "JSON key holding each document's text"},
      {"shards", &T::shards, string(),
       "a directory written by `xy-node preprocess` ([DATA.md](DATA.md)): train from its "
       "memory-mapped token shards instead of tokenizing `inputs`; not together with `inputs`. Its "
       "tokenizer is used (`tokenizer`, when given, must be the same file by SHA-256, and so must "
       "`model.init_from`'s when its folder holds one); with "
       "`llm-code` packing, `seq_len` must divide the preprocessing `--seq-len`",
       "",
       [](const Context& ctx, const std::string&, T&) {
         if (!ctx.was_given("data.shards") || !ctx.was_given("data.inputs")) return;
         ctx.fail(ctx.first_given({"data.shards"}), "data.shards",
                  "is given together with data.inputs; a job reads either JSONL inputs or "
                  "preprocessed shards",
                  "remove data.inputs (the shards were made from them) or data.shards");
       }},
      {"tokenizer", &T::tokenizer, string(),
       "SentencePiece `.model` file, or a Hugging Face `tokenizer.json` (byte-level BPE: Llama-3.x, "
       "Qwen3; or the directory holding it; [DATA.md](DATA.md)); empty = the tokenizer of "
       "`model.init_from` when its folder holds a `tokenizer.json` (else a `tokenizer.model`): a "
       "pretrained model's embedding rows mean its own tokenizer's ids; otherwise train a "
       "SentencePiece model from the inputs (BPE with byte fallback) into `work_dir` (with "
       "`init_from`, `xy-node train` warns that those ids do not mean what the model learned)"},
      {"tokenizer_vocab", &T::tokenizer_vocab, integer(kMinTrainedVocab, kMaxVocab),
       "vocabulary size when training a tokenizer; at least 256 byte pieces, `<unk>`, `<s>`, "
       "`</s>` and one learned piece. SentencePiece also needs room for every character it must "
       "cover: Chinese text needs several thousand"},
      {"work_dir", &T::work_dir, non_empty(),
       "tokenizer, token cache and (by default) checkpoints go here"},
      {"seq_len", &T::seq_len, integer(1),
       "tokens per sample (the model sees `seq_len` tokens and predicts the next of each); "
       "`<= model.max_seq_len`"},
      {"seed", &T::seed, integer(0), "seed of the sample order"},
  }};
  return table;
}

const Table<TrainConfig>& train_table() {
  using T = TrainConfig;
  // The scale multiplies an fp32 loss: above 2^64 it is a typo, and an infinite scaled loss would
  // overflow on every step without ever reaching min_loss_scale.
  auto scale = [] { return number([](double v) { return v > 0 && v <= 0x1p64; }, "> 0 and <= 2^64"); };
  static const Table<T> table{"train", {
      {"steps", &T::steps, integer(1), "optimizer steps"},
      {"micro_batch", &T::micro_batch, integer(1), "samples per micro-batch per rank"},
      {"grad_accum", &T::grad_accum, integer(1),
       "micro-batches per step per rank. Samples per step = world size x `micro_batch` x "
       "`grad_accum`"},
      {"precision", &T::precision, one_of({"fp32", "bf16", "fp16"}),
       "working precision of the parameters (`fp16` with dynamic loss scaling)"},
      {"log_every", &T::log_every, integer(1),
       "print a step line every N steps (and the first and last)"},
      {"threads", &T::threads, integer(0, kMaxThreads),
       "intra-op threads for compute per rank; `0` = cores / ranks"},
      {"loss_scaling", &T::loss_scaling, one_of({"auto", "dynamic", "none"}),
       "`auto`: dynamic loss scaling when `precision = \"fp16\"`; `dynamic`: in any precision "
       "(drills, tests); `none` (see Loss scaling below)"},
      {"initial_loss_scale", &T::initial_loss_scale, scale(), "the starting scale (2^16)"},
      {"loss_scale_window", &T::loss_scale_window, integer(1),
       "good steps after the last overflow before the scale doubles"},
      {"loss_scale_hysteresis", &T::loss_scale_hysteresis, integer(1),
       "overflows tolerated before the scale halves (the counter restarts when the scale doubles)"},
      {"min_loss_scale", &T::min_loss_scale, scale(),
       "an overflow at this scale stops training (exit 1) with the recent scale history and the "
       "overflowing units"},
  }};
  return table;
}

const Table<OptimizerConfig>& optimizer_table() {
  using T = OptimizerConfig;
  auto below_one = [] { return number([](double v) { return v >= 0 && v < 1; }, "in [0, 1)"); };
  static const Table<T> table{"optimizer", {
      {"lr", &T::lr, positive(), "peak learning rate"},
      {"min_lr", &T::min_lr, non_negative(), "floor of the decay; `<= lr`"},
      {"beta1", &T::beta1, below_one(), "Adam's first-moment decay"},
      {"beta2", &T::beta2, below_one(), "Adam's second-moment decay"},
      {"eps", &T::eps, positive(), "Adam's epsilon"},
      {"weight_decay", &T::weight_decay, non_negative(), "decoupled weight decay"},
      {"no_decay", &T::no_decay, strings(false, "a list of parameter-name substrings"),
       "parameters whose name contains any of these get no weight decay; may be empty"},
      {"grad_clip", &T::grad_clip, non_negative(),
       "clip the global gradient norm to this; `0` = off"},
      {"warmup_steps", &T::warmup_steps, integer(0),
       "linear warm-up from 0 to `lr`; `<= train.steps`"},
      {"schedule", &T::schedule, one_of({"cosine", "linear", "constant", "warmup_decay", "warmup"}),
       "`cosine`, `linear`, `constant`: a linear warm-up from 0 to `lr` over `warmup_steps`, then "
       "from `lr` down to `min_lr` (or constant); `warmup_decay` and `warmup`: DeepSpeed's "
       "`WarmupDecayLR` and `WarmupLR` exactly (warm-up from `min_lr` to `lr` over max(2, "
       "`warmup_steps`) with `warmup_type`; `warmup_decay` then decays linearly to `min_lr` at "
       "`train.steps`, `warmup` stays at `lr`). Every schedule counts applied optimizer steps: a "
       "step skipped for an fp16 overflow does not advance it (as in DeepSpeed)"},
      {"warmup_type", &T::warmup_type, one_of({"log", "linear"}),
       "for `warmup_decay` and `warmup`: `log` (DeepSpeed's default: lr rises with log(step)) or "
       "`linear`"},
      {"delayed_update", &T::delayed_update, boolean(),
       "the delayed parameter update (DeepSpeed's DPU): step *s*'s CPU Adam runs while step *s+1* "
       "computes, so the whole optimizer step overlaps compute; the gradients of step *s* are then "
       "taken at the parameters after step *s-2* (one step stale: θ<sub>s</sub> = "
       "Adam(θ<sub>s-1</sub>, ∇L<sub>s</sub>(θ<sub>s-2</sub>))). Costs a second copy of the "
       "working shards where they live in host memory (CPU ranks, parameter offload); on a GPU "
       "the working shards stay one copy, and each unit's new version waits in the fp32 master and "
       "pinned host memory until the next step's backward has read the old one"},
      {"placement", &T::placement, string(),
       "where each GPU rank keeps its optimizer state (fp32 master, m, v and the gradient they "
       "read): `\"cpu\"` (host memory, stepped by the CPU AdamW: what fits any GPU), `\"gpu\"` "
       "(all on the GPU, stepped by the device AdamW; refused with the numbers if it cannot fit), a "
       "fraction such as `\"0.5\"` (that share of every unit's shard on the GPU, the rest on the "
       "host; both updated at once), or `\"auto\"`: the largest share that fits the GPU after the "
       "working copies, the gathered units, the activations and a margin of 10% (printed at "
       "start-up with the reason). The arithmetic is the same on both sides: placements agree to "
       "rounding (docs/PLACEMENT.md), and a checkpoint resumes under any placement. CPU ranks "
       "ignore it"},
  }};
  return table;
}

const Table<ActorsConfig>& actors_table() {
  using T = ActorsConfig;
  static const Table<T> table{"actors", {
      {"prefetch_batches", &T::prefetch_batches, integer(1, 1024),
       "micro-batches the prefetcher keeps ready per rank"},
      {"prefetch_layers", &T::prefetch_layers, integer(0, kMaxLayers),
       "units the parameter-shard gathers ahead of the one in use (a unit is the embedding, one "
       "transformer block or the head: `model/layout.hpp`)"},
      // MiB become bytes in int64.
      {"gather_budget_mb", &T::gather_budget_mb, integer(1, int64_t{1} << 30),
       "most MiB of gathered (full) unit parameters held per rank; prefetching stops at it"},
      {"adam_threads", &T::adam_threads, integer(0, kMaxThreads),
       "CPU Adam threads per node; `0` = all cores"},
      {"offload_params", &T::offload_params, boolean(),
       "GPU ranks: keep the working-precision parameter shards in pinned host memory and copy each "
       "to the device just ahead of its all-gather (for GPUs too small to hold them: V100-32GB, "
       "A100-40GB); costs host-to-device bandwidth each gather"},
  }};
  return table;
}

const Table<DeadlinesConfig>& deadlines_table() {
  using T = DeadlinesConfig;
  static const Table<T> table{"deadlines", {
      {"collective_s", &T::collective_s, seconds(), "one all-gather, reduce-scatter or all-reduce"},
      {"compute_s", &T::compute_s, seconds(), "one unit's forward or backward"},
      {"optimizer_s", &T::optimizer_s, seconds(), "CPU Adam on one unit's shard"},
      {"batch_s", &T::batch_s, seconds(), "waiting for a micro-batch"},
      {"checkpoint_s", &T::checkpoint_s, seconds(), "writing one checkpoint"},
      {"first_step_factor", &T::first_step_factor,
       number([](double v) { return v >= 1 && v <= 100; }, ">= 1 and <= 100"),
       "the deadlines of step 1 are multiplied by this (warm-up, allocation)"},
      {"poll_ms", &T::poll_ms,
       number([](double v) { return v > 0 && v <= 60000; }, "> 0 and <= 60000 (a minute)"),
       "how often the watchdog looks, in milliseconds"},
      {"watchdog", &T::watchdog, boolean(),
       "`false` stops the watchdog's deadline polling and its watcher thread (no stall reports: a "
       "stuck operation hangs; heartbeats, registry and status server still run); only for "
       "measuring its overhead"},
  }};
  return table;
}

const Table<CheckpointConfig>& checkpoint_table() {
  using T = CheckpointConfig;
  static const Table<T> table{"checkpoint", {
      {"dir", &T::dir, string(), "where checkpoints are written (filled in at load)",
       "`\"\"` = `<data.work_dir>/checkpoints`"},
      {"every_steps", &T::every_steps, integer(0),
       "write a checkpoint every N steps, and at the end; `0` = only at the end"},
      {"every_minutes", &T::every_minutes,
       number([](double v) { return v >= 0 && v <= kMaxSeconds / 60; }, ">= 0 and <= 43200 (30 days)"),
       "also checkpoint when this many minutes have passed since the last one (decided by rank 0 "
       "and agreed by every rank in the end-of-step all-reduce, so all nodes save the same step); "
       "`0` = off"},
      {"keep_last", &T::keep_last, integer(1),
       "checkpoints kept (the newest by step number), older ones deleted; the one just published "
       "and the one `latest` names are never deleted"},
      {"keep_every", &T::keep_every, integer(0),
       "besides the newest `keep_last`, keep for good every checkpoint whose step is a multiple of "
       "this; `0` = none"},
  }};
  return table;
}

const Table<ControlConfig>& control_table() {
  using T = ControlConfig;
  static const Table<T> table{"control", {
      {"secret", &T::secret, string(),
       "the job's shared secret; a node joins only if it proves it knows it (HMAC over a fresh "
       "challenge; never sent or printed). `XY_SECRET` in the environment overrides it (preferred: "
       "keep secrets out of files). Empty on every node = no check, with a warning when there are "
       "several nodes"},
      {"heartbeat_s", &T::heartbeat_s, seconds(),
       "a node whose heartbeat has not moved for this long is lost: the others end with exit code "
       "4 and name it"},
      {"http_port", &T::http_port, integer(0, 65535),
       "the status server (`/status`, `/metrics`, `/`): node *i* serves on `http_port + i`, so "
       "`http_port + nodes - 1 <= 65535`; `0` = off"},
      {"http_host", &T::http_host, string(), "the address the status server binds to",
       "`\"\"` = the node's `topology.nodes[i].host`"},
      {"doctor", &T::doctor, boolean(),
       "`xy-node train` runs the preflight checks (`xy-node doctor`) first and stops on a failure; "
       "`--no-doctor` also turns them off"},
  }};
  return table;
}

// Each of eval.sets is "name=path" with a name of letters, digits, '_' and '-', each name once.
void check_eval_sets(const Context& ctx, const std::string& prefix, EvalConfig& e) {
  std::vector<std::string> names;
  for (const std::string& s : e.sets) {
    const size_t eq = s.find('=');
    const std::string name = eq == std::string::npos ? "" : s.substr(0, eq);
    const bool good_name = !name.empty() && name.size() <= 64 &&
                           std::all_of(name.begin(), name.end(), [](char c) {
                             return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
                           });
    if (!good_name || eq + 1 >= s.size())
      ctx.fail(ctx.first_given({prefix + ".sets"}), prefix + ".sets", quoted(s) + " is not name=path",
               "\"name=path\" (name: letters, digits, _ and -; path: a JSONL file or a shards directory)");
    if (std::find(names.begin(), names.end(), name) != names.end())
      ctx.fail(ctx.first_given({prefix + ".sets"}), prefix + ".sets", "the name " + quoted(name) + " is used twice",
               "each set's name once");
    names.push_back(name);
  }
}

void check_holdout_name(const Context& ctx, const std::string& prefix, EvalConfig& e) {
  const std::string& n = e.holdout_name;
  const bool good = !n.empty() && n.size() <= 64 && std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  if (!good)
    ctx.fail(ctx.first_given({prefix + ".holdout_name"}), prefix + ".holdout_name",
             quoted(n) + " is not a set name", "letters, digits, _ and -");
  for (const std::string& s : e.sets)
    if (s.substr(0, s.find('=')) == n)
      ctx.fail(ctx.first_given({prefix + ".holdout_name"}), prefix + ".holdout_name",
               "the name " + quoted(n) + " is also in eval.sets", "a name of its own");
}

const Table<EvalConfig>& eval_table() {
  using T = EvalConfig;
  static const Table<T> table{"eval", {
      {"sets", &T::sets, strings(false, "an array of \"name=path\" strings"),
       "held-out sets, each `\"name=path\"`: a JSONL file (`.jsonl`, `.gz`, `.zst`; tokenized with "
       "the job's tokenizer, `data.text_field`) or a directory made by `xy-node preprocess`; e.g. "
       "`[\"fin=data/eval/fin.jsonl\", \"general=data/eval/wiki.jsonl\"]`. Empty = no evaluation",
       "", check_eval_sets},
      {"every_steps", &T::every_steps, integer(0),
       "evaluate every N steps (after the step's update); `0` = only at the end"},
      {"samples", &T::samples, integer(1, int64_t{1} << 40),
       "samples of `data.seq_len` tokens per set, the first ones of the set in order (at most the "
       "set's size); split over the ranks"},
      {"micro_batch", &T::micro_batch, integer(0, int64_t{1} << 20),
       "samples per forward per rank; `0` = `train.micro_batch` (the smallest node's where "
       "`[[topology.nodes]]` set `micro_batch`)"},
      {"at_end", &T::at_end, boolean(), "also evaluate after the last step"},
      {"holdout", &T::holdout, number([](double v) { return v >= 0 && v <= 0.5; }, ">= 0 and <= 0.5"),
       "a fixed split of the training data by document: this fraction of the documents (chosen by a "
       "hash of `data.seed` and the document's index) is kept out of training and evaluated as the "
       "set `holdout_name`; samples that straddle a held-out and a trained document are dropped. "
       "`0` = none"},
      {"holdout_name", &T::holdout_name, string(), "the name of the held-out set", "",
       check_holdout_name},
  }};
  return table;
}

const Table<Config::FaultsConfig>& faults_table() {
  using T = Config::FaultsConfig;
  static const Table<T> table{"faults", {
      {"inject", &T::inject, string(),
       "faults to inject, in the syntax of the `XY_FAULT` environment variable (which overrides "
       "it), e.g. `\"sleep-compute:rank=1,step=3\"`; see "
       "[OPERATIONS.md](OPERATIONS.md#fault-injection-tests-and-drills). Checked by `xy-node "
       "train` (exit 2 naming the bad part); empty = none"},
  }};
  return table;
}

// ---- what is made of them ----------------------------------------------------------------------

const std::vector<TableKeys>& schema() {
  static const std::vector<TableKeys> tables = [] {
    std::vector<TableKeys> out;
    Config cfg;
    for_each_table(cfg, [&out](const auto& table, auto&) { out.push_back({table.name, table.keys()}); });
    return out;
  }();
  return tables;
}

const std::vector<std::string>& keys_of(const std::string& table) {
  for (const TableKeys& t : schema())
    if (t.name == table) return t.keys;
  throw std::logic_error("config schema lacks table " + table);
}

namespace {

// A member's value as written in TOML, for the docs' default column.
std::string toml_text(int v) { return std::to_string(v); }
std::string toml_text(int64_t v) { return std::to_string(v); }
std::string toml_text(uint64_t v) { return std::to_string(v); }
std::string toml_text(double v) { return fmt_double(v); }
std::string toml_text(bool v) { return v ? "true" : "false"; }
std::string toml_text(const std::string& v) { return "\"" + v + "\""; }
std::string toml_text(const std::vector<std::string>& v) {
  std::vector<std::string> items;
  for (const std::string& s : v) items.push_back(toml_text(s));
  return "[" + join(items) + "]";
}
std::string toml_text(const std::vector<NodeSpec>&) {
  throw std::logic_error("config field table: a list of tables needs a shown default");
}

template <class T>
std::string markdown_table(const Table<T>& table) {
  const T defaults{};
  std::string out = "| key | default | valid | meaning |\n|---|---|---|---|\n";
  for (const Field<T>& f : table.fields) {
    std::string shown = f.shown_default;
    if (shown.empty())
      shown = "`" + std::visit([&](auto member) { return toml_text(defaults.*member); }, f.member) + "`";
    out += "| `" + f.key + "` | " + shown + " | " + f.rule.valid() + " | " + f.doc + " |\n";
  }
  return out;
}

}  // namespace

std::vector<std::string> doc_table_names() {
  std::vector<std::string> names;
  for (const TableKeys& t : schema()) {
    names.push_back(t.name);
    if (t.name == "topology") names.push_back(node_table().name);
  }
  return names;
}

std::string doc_table(const std::string& name) {
  if (name == node_table().name) return markdown_table(node_table());
  std::string out;
  Config cfg;
  for_each_table(cfg, [&](const auto& table, auto&) {
    if (table.name == name) out = markdown_table(table);
  });
  if (out.empty()) throw std::logic_error("config field tables lack " + name);
  return out;
}

}  // namespace config_fields

// ---- the presets -------------------------------------------------------------------------------

ModelConfig model_preset(const std::string& name) {
  using config_fields::kPresets;
  ModelConfig m;  // rms_eps 1e-5, rope_theta 10000, max_seq_len 4096 unless set below
  m.preset = name;
  m.vocab_size = 32000;
  auto shape = [&m](int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads,
                    int64_t kv_heads) {
    m.hidden = hidden;
    m.intermediate = intermediate;
    m.layers = layers;
    m.heads = heads;
    m.kv_heads = kv_heads;
  };
  if (name == "tiny") {
    shape(256, 688, 4, 8, 8);
  } else if (name == "1b") {
    shape(2048, 5504, 24, 16, 16);
  } else if (name == "3b") {
    shape(3200, 8640, 26, 32, 32);
  } else if (name == "7b") {  // Llama-2-7B
    shape(4096, 11008, 32, 32, 32);
    m.max_seq_len = 4096;
    m.rms_eps = 1e-5;
  } else if (name == "xuanyuan-6b") {
    // Follows the published XuanYuan-6B config (Du Xiaoman): a Llama-2 architecture with 30 layers
    // and a vocabulary extended for Chinese, hidden 4096, intermediate 11008, 32 heads.
    shape(4096, 11008, 30, 32, 32);
    m.vocab_size = 39438;
    m.max_seq_len = 4096;
    m.rms_eps = 1e-5;
  } else if (name == "llama3.1-8b" || name == "llama3.2-1b" || name == "llama3.2-3b") {
    // The published config.json of meta-llama/Llama-3.1-8B, Llama-3.2-1B and Llama-3.2-3B
    // (docs/CONFIG.md, "Presets"): vocabulary 128256, rope_theta 500000, llama3 RoPE scaling
    // (low 1, high 4, original 8192; factor 8 for 3.1, 32 for 3.2), 131072 positions.
    if (name == "llama3.1-8b") shape(4096, 14336, 32, 32, 8);
    else if (name == "llama3.2-1b") shape(2048, 8192, 16, 32, 8);
    else shape(3072, 8192, 28, 24, 8);
    m.vocab_size = 128256;
    m.head_dim = name == "llama3.2-1b" ? 64 : name == "llama3.2-3b" ? 128 : 0;
    m.tie_embeddings = name != "llama3.1-8b";
    m.rms_eps = 1e-5;
    m.rope_theta = 500000.0;
    m.max_seq_len = 131072;
    m.rope_scaling = "llama3";
    m.rope_factor = name == "llama3.1-8b" ? 8.0 : 32.0;
    m.rope_low_freq_factor = 1.0;
    m.rope_high_freq_factor = 4.0;
    m.rope_original_max_len = 8192;
  } else if (name == "qwen3-1.7b" || name == "qwen3-8b") {
    // The published config.json of Qwen/Qwen3-1.7B and Qwen3-8B: head_dim 128 (given
    // explicitly, as Qwen3 does), q/k RMSNorm, vocabulary 151936, rope_theta 1e6, rms 1e-6,
    // 40960 positions.
    if (name == "qwen3-1.7b") shape(2048, 6144, 28, 16, 8);
    else shape(4096, 12288, 36, 32, 8);
    m.family = "qwen3";
    m.vocab_size = 151936;
    m.head_dim = 128;
    m.qk_norm = true;
    m.tie_embeddings = name == "qwen3-1.7b";
    m.rms_eps = 1e-6;
    m.rope_theta = 1000000.0;
    m.max_seq_len = 40960;
  } else if (name == "custom") {
    shape(0, 0, 0, 0, 0);  // every shape must be given in [model]
    m.vocab_size = 0;
  } else {
    std::string near = config_fields::closest(name, kPresets);
    throw ConfigError("model.preset: " + config_fields::quoted(name) + " is not a preset" +
                      (near.empty() ? "" : " (did you mean " + config_fields::quoted(near) + "?)") +
                      "; valid: " + config_fields::join(kPresets));
  }
  return m;
}

}  // namespace xy
