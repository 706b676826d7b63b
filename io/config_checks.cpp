// The rules between keys of the job configuration: those that involve keys of several tables, or
// keys and the preset (or the folder of model.init_from) they came from. They run once every table
// is read (parse_config), and name each value involved and where it came from.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "io/config_fields.hpp"

namespace xy {
namespace config_fields {
namespace {

std::string fixed2(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// Divisors of n (ascending).
std::vector<int64_t> divisors(int64_t n) {
  std::vector<int64_t> small, large;
  for (int64_t d = 1; d * d <= n; ++d) {
    if (n % d) continue;
    small.push_back(d);
    if (d != n / d) large.push_back(n / d);
  }
  small.insert(small.end(), large.rbegin(), large.rend());
  return small;
}

// Head counts that divide `hidden` with an even head_dim: the two below `wanted` and the two above.
std::string head_suggestions(int64_t hidden, int64_t wanted) {
  std::vector<int64_t> below, above;
  for (int64_t d : divisors(hidden)) {
    if ((hidden / d) % 2 != 0) continue;
    (d < wanted ? below : above).push_back(d);
  }
  if (below.size() > 2) below.erase(below.begin(), below.end() - 2);
  if (above.size() > 2) above.resize(2);
  std::vector<std::string> text;
  for (int64_t v : below) text.push_back(std::to_string(v));
  for (int64_t v : above) text.push_back(std::to_string(v));
  if (text.empty())
    return "none: model.hidden = " + std::to_string(hidden) + " is odd, make it even";
  return "a divisor of " + std::to_string(hidden) + " that leaves an even head_dim, such as " +
         join(text);
}

// Where a model key's value came from, for messages: the init_from folder, the file (nothing to
// add), the default of 'custom', or the preset.
std::string preset_origin(const Context& ctx, const ModelConfig& m, const std::string& key) {
  if (!m.init_from.empty()) return " (from " + m.init_from + "/config.json)";
  if (ctx.was_given("model." + key)) return "";
  if (m.preset == "custom") return " (default)";
  return " (from preset " + quoted(m.preset) + ")";
}

std::string given_or_default(const Context& ctx, const std::string& dotted_key) {
  return ctx.was_given(dotted_key) ? "" : " (default)";
}

// What each Hugging Face class can express (model.family): a model xy could train but could not
// export as its family is refused at load, naming the keys.
template <class Pos>
void check_family(const Context& ctx, const ModelConfig& m, const Pos& model_pos) {
  const std::string fam = quoted(m.family);
  auto refuse = [&](const std::string& key, const std::string& what, const std::string& valid) {
    ctx.fail(model_pos({"model." + key, "model.family"}), "model." + key,
             what + " with model.family = " + fam + preset_origin(ctx, m, "family"), valid);
  };
  if (m.qk_norm && m.family != "qwen3")
    refuse("qk_norm", "true (per-head q/k RMSNorm is Qwen3's)", "false, or model.family = \"qwen3\"");
  if (!m.qk_norm && m.family == "qwen3")
    refuse("qk_norm", "false (Qwen3ForCausalLM always has q_norm and k_norm)",
           "true, or another model.family");
  if (m.attention_bias == "qkv" && m.family != "qwen2")
    refuse("attention_bias", "\"qkv\" (biases on q/k/v only are Qwen2's)",
           "\"none\" or \"qkvo\", or model.family = \"qwen2\"");
  if (m.attention_bias != "qkv" && m.family == "qwen2")
    refuse("attention_bias", quoted(m.attention_bias) + " (Qwen2ForCausalLM always has q/k/v biases, no o_proj bias)",
           "\"qkv\", or another model.family");
  if (m.family == "qwen2" && m.head_dim > 0 && m.head_dim * m.heads != m.hidden)
    refuse("head_dim", std::to_string(m.head_dim) + " != hidden / heads (Qwen2 derives it)",
           "0, or another model.family");
  if (m.rope_scaling == "llama3" && !(m.rope_high_freq_factor > m.rope_low_freq_factor))
    ctx.fail(model_pos({"model.rope_high_freq_factor", "model.rope_low_freq_factor"}),
             "model.rope_high_freq_factor",
             fmt_double(m.rope_high_freq_factor) + " does not exceed model.rope_low_freq_factor = " +
                 fmt_double(m.rope_low_freq_factor) + " (llama3 RoPE divides by their difference)",
             "a number > " + fmt_double(m.rope_low_freq_factor));
}

void check_model(const Context& ctx, const Config& cfg) {
  const ModelConfig& m = cfg.model;
  // Blame the first of the involved keys written in the file, else the preset, else [model].
  // (With model.init_from its config.json gave the shape: blame that key.)
  auto model_pos = [&ctx, &m](std::vector<std::string> keys) {
    if (!m.init_from.empty()) keys.insert(keys.begin(), "model.init_from");
    keys.push_back("model.preset");
    keys.push_back("model");
    return ctx.first_given(keys);
  };
  std::string heads = std::to_string(m.heads), hidden = std::to_string(m.hidden);
  // Every division below is by a shape field: none may be 0 here (the reader's ranges and the
  // preset 'custom' rule ensure it; this guards the divisions themselves).
  for (auto [key, v] : {std::pair<const char*, int64_t>{"hidden", m.hidden}, {"heads", m.heads},
                        {"intermediate", m.intermediate}, {"layers", m.layers}}) {
    if (v > 0) continue;
    ctx.fail(model_pos({"model." + std::string(key)}), "model." + std::string(key),
             std::to_string(v) + preset_origin(ctx, m, key) + " is not a size",
             "an integer >= 1");
  }
  if (m.head_dim > 0 && m.head_dim % 2 != 0)
    ctx.fail(model_pos({"model.head_dim"}), "model.head_dim",
             std::to_string(m.head_dim) + preset_origin(ctx, m, "head_dim") +
                 " is odd, but rotary embeddings rotate pairs of dimensions",
             "an even number, or 0 (= hidden / heads)");
  if (m.head_dim == 0 && m.hidden % m.heads != 0) {
    ctx.fail(model_pos({"model.heads", "model.hidden"}), "model.heads",
             heads + preset_origin(ctx, m, "heads") + " does not divide model.hidden = " + hidden +
                 preset_origin(ctx, m, "hidden") + ": head_dim would be " +
                 fixed2(double(m.hidden) / double(m.heads)) + ", not an integer",
             head_suggestions(m.hidden, m.heads));
  }
  int64_t head_dim = m.hidden / m.heads;
  if (m.head_dim == 0 && head_dim % 2 != 0) {
    ctx.fail(model_pos({"model.heads", "model.hidden"}), "model.heads",
             "head_dim = model.hidden / model.heads = " + hidden + " / " + heads + " = " +
                 std::to_string(head_dim) +
                 " is odd, but rotary embeddings rotate pairs of dimensions",
             head_suggestions(m.hidden, m.heads));
  }
  if (m.kv_heads != 0 && m.heads % m.kv_heads != 0) {
    std::vector<std::string> valid = {"0 (= heads)"};
    for (int64_t d : divisors(m.heads)) valid.push_back(std::to_string(d));
    ctx.fail(model_pos({"model.kv_heads", "model.heads"}), "model.kv_heads",
             std::to_string(m.kv_heads) + preset_origin(ctx, m, "kv_heads") +
                 " does not divide model.heads = " + heads + preset_origin(ctx, m, "heads") +
                 " (each key/value head must serve a whole number of query heads)",
             join(valid));
  }
  check_family(ctx, m, model_pos);
  if (m.vocab_size != 0 && cfg.data.tokenizer.empty() && cfg.data.shards.empty() &&
      m.vocab_size < cfg.data.tokenizer_vocab) {
    std::string tv = std::to_string(cfg.data.tokenizer_vocab);
    ctx.fail(model_pos({"model.vocab_size", "data.tokenizer_vocab"}), "model.vocab_size",
             std::to_string(m.vocab_size) + preset_origin(ctx, m, "vocab_size") +
                 " is smaller than data.tokenizer_vocab = " + tv +
                 given_or_default(ctx, "data.tokenizer_vocab") +
                 " (the tokenizer trained from data.inputs emits ids up to " +
                 std::to_string(cfg.data.tokenizer_vocab - 1) + ")",
             "0 (take the tokenizer's) or >= " + tv);
  }
  if (cfg.data.seq_len > m.max_seq_len) {
    std::string max = std::to_string(m.max_seq_len);
    ctx.fail(ctx.first_given({"data.seq_len", "model.max_seq_len", "data"}), "data.seq_len",
             std::to_string(cfg.data.seq_len) + given_or_default(ctx, "data.seq_len") +
                 " exceeds model.max_seq_len = " + max + preset_origin(ctx, m, "max_seq_len"),
             "1.." + max + " (or raise model.max_seq_len)");
  }
}

// The sizes derived from the model's shape, in overflow-checked arithmetic: every parameter
// matrix, the parameter count, the rotary tables and the largest per-step activations (logits,
// attention scores) must stay within kMaxElements. A size beyond it is named with the key that
// made it so, before anything multiplies it into a byte count or allocates it. (The engine checks
// the layout it builds again, with the tokenizer's actual vocabulary: model/layout.cpp.)
void check_model_sizes(const Context& ctx, const Config& cfg) {
  const ModelConfig& m = cfg.model;
  // The vocabulary when known: model.vocab_size, else the tokenizer trained from the inputs.
  const bool trained = cfg.data.tokenizer.empty() && cfg.data.shards.empty();
  const int64_t vocab = m.vocab_size != 0 ? m.vocab_size : trained ? cfg.data.tokenizer_vocab : 1;
  const int64_t h = m.hidden, kv = m.kv_heads != 0 ? m.kv_heads : m.heads, hd = head_dim_of(m);
  auto value_of = [&](const std::string& key) -> std::string {
    for (auto [k, v] : {std::pair<const char*, int64_t>{"model.hidden", m.hidden},
                        {"model.intermediate", m.intermediate}, {"model.layers", m.layers},
                        {"model.vocab_size", m.vocab_size}, {"model.heads", m.heads}, {"model.kv_heads", m.kv_heads}, {"model.head_dim", m.head_dim},
                        {"model.max_seq_len", m.max_seq_len}, {"data.seq_len", cfg.data.seq_len},
                        {"train.micro_batch", cfg.train.micro_batch}})
      if (key == k) {
        std::string origin = key.rfind("model.", 0) == 0 ? preset_origin(ctx, m, key.substr(6))
                                                         : given_or_default(ctx, key);
        return std::to_string(v) + origin;
      }
    return "";
  };
  auto too_large = [&](const std::string& key, const std::string& what) {
    std::vector<std::string> keys = {key};
    if (!m.init_from.empty() && key.rfind("model.", 0) == 0) keys.insert(keys.begin(), "model.init_from");
    keys.push_back("model.preset");
    keys.push_back(key.substr(0, key.find('.')));
    ctx.fail(ctx.first_given(keys), key,
             value_of(key) + " makes " + what + " larger than 2^53 elements (9.0e15)",
             "a smaller " + key + " (sizes derived from the model's shape stay below 2^53)");
  };
  auto mul = [&](int64_t a, int64_t b, const std::string& key, const std::string& what) {
    int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r) || r > kMaxElements) too_large(key, what);
    return r;
  };
  auto add = [&](int64_t a, int64_t b, const std::string& key, const std::string& what) {
    int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r) || r > kMaxElements) too_large(key, what);
    return r;
  };
  // q_proj is heads x head_dim x hidden (hidden x hidden when head_dim is derived).
  const char* q_key = m.head_dim > 0 ? "model.head_dim" : "model.hidden";
  const char* q_what = m.head_dim > 0 ? "q_proj (heads x head_dim x hidden)" : "q_proj (hidden x hidden)";
  const int64_t square = mul(mul(m.heads, hd, q_key, q_what), h, "model.hidden", q_what);
  const int64_t embed = mul(vocab, h, m.vocab_size > h ? "model.vocab_size" : "model.hidden",
                            "the embedding (vocab_size x hidden)");
  const int64_t kv_proj = mul(mul(kv, hd, "model.kv_heads", "k_proj (kv_heads x head_dim x hidden)"), h,
                              "model.hidden", "k_proj (kv_heads x head_dim x hidden)");
  const int64_t mlp = mul(m.intermediate, h, "model.intermediate", "gate_proj (intermediate x hidden)");
  const std::string block_what = "one transformer block";
  int64_t block = add(mul(2, square, "model.hidden", block_what),
                      mul(2, kv_proj, "model.hidden", block_what), "model.hidden", block_what);
  block = add(block, mul(3, mlp, "model.intermediate", block_what), "model.intermediate", block_what);
  block = add(block, 2 * h, "model.hidden", block_what);
  const int64_t blocks = mul(m.layers, block, "model.layers", "the parameter count (layers x block)");
  add(add(blocks, mul(m.tie_embeddings ? 1 : 2, embed, "model.hidden", "the parameter count"),
          "model.hidden", "the parameter count"),
      h, "model.hidden", "the parameter count");
  mul(m.max_seq_len, hd, "model.max_seq_len", "the rotary tables (max_seq_len x head_dim)");
  const int64_t tokens = mul(cfg.train.micro_batch, cfg.data.seq_len, "train.micro_batch",
                             "a micro-batch (micro_batch x seq_len tokens)");
  mul(tokens, vocab, "train.micro_batch", "the logits of a micro-batch (tokens x vocab_size)");
  mul(mul(tokens, cfg.data.seq_len, "data.seq_len", "the attention scores (tokens x seq_len x heads)"),
      m.heads, "data.seq_len", "the attention scores (tokens x seq_len x heads)");
  mul(tokens, std::max(h, m.intermediate), "train.micro_batch",
      "the activations of a micro-batch (tokens x intermediate)");
}

void check_training(const Context& ctx, const Config& cfg) {
  const OptimizerConfig& o = cfg.optimizer;
  try {
    (void)placement_fraction(o.placement);
  } catch (const std::invalid_argument&) {
    ctx.fail(ctx.first_given({"optimizer.placement", "optimizer"}), "optimizer.placement",
             "\"" + o.placement + "\" is not a placement",
             "\"cpu\", \"gpu\", \"auto\", or a fraction in [0, 1] such as \"0.5\"");
  }
  if (o.min_lr > o.lr) {
    ctx.fail(ctx.first_given({"optimizer.min_lr", "optimizer.lr", "optimizer"}), "optimizer.min_lr",
             fmt_double(o.min_lr) + given_or_default(ctx, "optimizer.min_lr") +
                 " exceeds optimizer.lr = " + fmt_double(o.lr) +
                 given_or_default(ctx, "optimizer.lr") +
                 " (the schedule decays from lr down to min_lr)",
             "0 <= min_lr <= " + fmt_double(o.lr));
  }
  if (o.warmup_steps > cfg.train.steps) {
    std::string steps = std::to_string(cfg.train.steps);
    ctx.fail(ctx.first_given({"optimizer.warmup_steps", "train.steps", "optimizer"}),
             "optimizer.warmup_steps",
             std::to_string(o.warmup_steps) + given_or_default(ctx, "optimizer.warmup_steps") +
                 " exceeds train.steps = " + steps + given_or_default(ctx, "train.steps") +
                 " (the run would end before reaching the peak learning rate)",
             "0.." + steps);
  }
}

void check_topology(const Context& ctx, const TopologyConfig& topo) {
  for (size_t i = 0; i < topo.nodes.size(); ++i) {
    const NodeSpec& a = topo.nodes[i];
    std::string key = "topology.nodes[" + std::to_string(i) + "]";
    if (a.port == 0 && topo.nodes.size() > 1) {
      ctx.fail(ctx.first_given({key + ".port", key + ".host"}), key + ".port",
               "0 (pick a free port) only works with a single node; peers must know where to dial",
               "a port in 1..65534");
    }
    for (size_t j = 0; j < i; ++j) {
      const NodeSpec& b = topo.nodes[j];
      if (a.port == 0 || a.host != b.host || a.port != b.port) continue;
      ctx.fail(ctx.first_given({key + ".port", key + ".host"}), key,
               a.host + ":" + std::to_string(a.port) + " is already used by topology.nodes[" +
                   std::to_string(j) + "]",
               "a distinct host:port per node");
    }
  }
  // Node 0 serves the rendezvous store on its port + 1: no other node of that host may use it.
  for (size_t i = 1; i < topo.nodes.size(); ++i) {
    const NodeSpec &n0 = topo.nodes[0], &a = topo.nodes[i];
    if (n0.port == 0 || a.host != n0.host || a.port != n0.port + 1) continue;
    std::string key = "topology.nodes[" + std::to_string(i) + "]";
    ctx.fail(ctx.first_given({key + ".port", key + ".host"}), key + ".port",
             a.host + ":" + std::to_string(a.port) + " is node 0's rendezvous store (topology.nodes[0]"
             ".port + 1)",
             "a port other than " + std::to_string(a.port) + " on " + a.host);
  }
  int64_t world = 0;
  for (const NodeSpec& node : topo.nodes) world += node.devices;
  if (world > kMaxWorld)
    ctx.fail(ctx.first_given({"topology.nodes", "topology"}), "topology.nodes",
             "the devices add up to " + std::to_string(world) + " ranks",
             "at most " + std::to_string(kMaxWorld) + " ranks in one job");
  // Node sharding shards each node's state over its own ranks: every node must hold the same
  // shards, so every node needs the same number of ranks.
  for (size_t i = 1; i < topo.nodes.size() && topo.shard == "node"; ++i)
    if (topo.nodes[i].devices != topo.nodes[0].devices)
      ctx.fail(ctx.first_given({"topology.shard"}), "topology.shard",
               "\"node\" shards the state within each node, but topology.nodes[" + std::to_string(i) +
                   "].devices = " + std::to_string(topo.nodes[i].devices) + " differs from topology.nodes[0]"
                   ".devices = " + std::to_string(topo.nodes[0].devices),
               "\"global\" or \"auto\", or the same devices on every node");
  size_t count = topo.nodes.empty() ? 1 : topo.nodes.size();
  if (static_cast<size_t>(topo.node_index) >= count) {
    ctx.fail(ctx.first_given({"topology.node_index", "topology"}), "topology.node_index",
             std::to_string(topo.node_index) + " but topology.nodes lists " +
                 std::to_string(count) + (count == 1 ? " node" : " nodes"),
             "0.." + std::to_string(count - 1));
  }
}

}  // namespace

void check_config(const Context& ctx, const Config& cfg) {
  check_topology(ctx, cfg.topology);
  // With global sharding every rank all-gathers every unit for each of its micro-batches: the
  // collectives only line up when every node runs as many micro-batches per step.
  for (size_t i = 1; i < cfg.topology.nodes.size() && cfg.topology.shard == "global"; ++i)
    if (node_grad_accum(cfg, static_cast<int>(i)) != node_grad_accum(cfg, 0)) {
      const std::string key = "topology.nodes[" + std::to_string(i) + "].grad_accum";
      ctx.fail(ctx.first_given({key, "topology.shard"}), key,
               std::to_string(node_grad_accum(cfg, static_cast<int>(i))) + " micro-batches per step, but node 0 runs " +
                   std::to_string(node_grad_accum(cfg, 0)) + " and topology.shard = \"global\" gathers every "
                   "unit for every micro-batch on every rank",
               "the same grad_accum on every node, or topology.shard = \"node\" (or \"auto\")");
    }
  check_model(ctx, cfg);
  check_model_sizes(ctx, cfg);
  check_training(ctx, cfg);
  // Node i's status server listens on control.http_port + i.
  if (cfg.control.http_port > 0) {
    const int64_t nodes = cfg.topology.nodes.empty() ? 1 : static_cast<int64_t>(cfg.topology.nodes.size());
    if (cfg.control.http_port + nodes - 1 > 65535)
      ctx.fail(ctx.first_given({"control.http_port"}), "control.http_port",
               std::to_string(cfg.control.http_port) + " + node index reaches " +
                   std::to_string(cfg.control.http_port + nodes - 1) + " for the last of " +
                   std::to_string(nodes) + " nodes (node i serves on http_port + i)",
               "1.." + std::to_string(65535 - nodes + 1) + ", or 0 (off)");
  }
}

}  // namespace config_fields
}  // namespace xy
