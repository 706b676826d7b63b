// Builds the named size tables of the LLaMA units (see layout.hpp).
#include "model/layout.hpp"

#include <stdexcept>

namespace xy {

int64_t UnitLayout::shard_end(int rank) const {
  const int64_t end = (rank + 1) * shard_numel;
  return end < numel ? end : numel;
}

const ParamSpec& UnitLayout::param(const std::string& suffix) const {
  for (const auto& p : params) {
    if (p.name.size() >= suffix.size() &&
        p.name.compare(p.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return p;
  }
  throw std::out_of_range("unit " + name + " has no parameter named *" + suffix);
}

int64_t ModelLayout::total_numel() const {
  int64_t n = 0;
  for (const auto& u : units) n += u.numel;  // build_layout checked that the sum fits
  return n;
}

namespace {

// Sizes are element counts in int64, multiplied further into bytes (x 16 for the optimizer's
// state): every product and sum is checked against this limit, 2^53 (exact in a double), and a
// shape beyond it is refused naming the keys it comes from instead of wrapping around.
constexpr int64_t kMaxElements = int64_t{1} << 53;

int64_t checked(bool overflow, int64_t v, const std::string& what, const char* keys) {
  if (overflow || v > kMaxElements || v < 0)
    throw std::invalid_argument("model: " + what + " would have more than 2^53 elements (" +
                                keys + " too large)");
  return v;
}

// `keys`: the config keys the shape comes from, for the message.
enum class Init { kNormal, kOnes, kZeros };

void add(UnitLayout& u, const std::string& name, std::vector<int64_t> shape, const char* keys,
         Init init, const std::vector<std::string>& no_decay) {
  ParamSpec p;
  p.name = name;
  p.shape = std::move(shape);
  p.numel = 1;
  for (int64_t d : p.shape) {
    int64_t n = 0;
    const bool overflow = __builtin_mul_overflow(p.numel, d, &n);  // before n is read
    p.numel = checked(overflow, n, name, keys);
  }
  p.offset = u.numel;
  p.is_norm = init == Init::kOnes;
  p.is_bias = init == Init::kZeros;
  for (const auto& s : no_decay)
    if (!s.empty() && name.find(s) != std::string::npos) p.decay = false;
  int64_t sum = 0;
  const bool overflow = __builtin_add_overflow(u.numel, p.numel, &sum);  // before sum is read
  u.numel = checked(overflow, sum, "unit " + u.name, keys);
  u.params.push_back(std::move(p));
}

void finish(UnitLayout& u, int world_size) {
  // numel <= 2^53, world_size < 2^31: the rounding cannot overflow.
  u.padded_numel = (u.numel + world_size - 1) / world_size * world_size;
  u.shard_numel = u.padded_numel / world_size;
}

}  // namespace

ModelLayout build_layout(const ModelConfig& m, int world_size,
                         const std::vector<std::string>& no_decay) {
  if (world_size < 1) throw std::invalid_argument("world_size must be >= 1");
  // Divisions and loops below use these: load_config ensures them for configured models; a
  // ModelConfig built otherwise (a checkpoint's manifest, a test) gets one line, not a SIGFPE.
  const int64_t hd = head_dim_of(m);
  if (m.hidden < 1 || m.heads < 1 || m.intermediate < 1 || m.layers < 1 || m.vocab_size < 1 ||
      m.kv_heads < 0 || m.head_dim < 0 || hd < 1 || (m.head_dim == 0 && m.hidden % m.heads != 0) ||
      (m.kv_heads > 0 && m.heads % m.kv_heads != 0) || m.layers > INT32_MAX - 2)
    throw std::invalid_argument(
        "model: not a valid shape: vocab_size " + std::to_string(m.vocab_size) + ", hidden " +
        std::to_string(m.hidden) + ", intermediate " + std::to_string(m.intermediate) + ", layers " +
        std::to_string(m.layers) + ", heads " + std::to_string(m.heads) + ", kv_heads " +
        std::to_string(m.kv_heads) + ", head_dim " + std::to_string(m.head_dim));
  const int64_t h = m.hidden, inter = m.intermediate, v = m.vocab_size;
  const int64_t kv = kv_heads_of(m);
  const bool bias = m.attention_bias == "qkv" || m.attention_bias == "qkvo";
  const bool o_bias = m.attention_bias == "qkvo";
  ModelLayout layout;
  layout.world_size = world_size;
  layout.tied = m.tie_embeddings;
  const Init W = Init::kNormal, N = Init::kOnes, Z = Init::kZeros;

  UnitLayout emb;
  emb.kind = UnitKind::kEmbedding;
  emb.name = "embed";
  add(emb, "model.embed_tokens.weight", {v, h}, "model.vocab_size x model.hidden", W, no_decay);
  layout.units.push_back(std::move(emb));

  const char* head_keys = m.head_dim > 0 ? "model.heads x model.head_dim" : "model.hidden";
  int64_t q_out = 0, kv_out = 0;
  bool overflow = __builtin_mul_overflow(m.heads, hd, &q_out);  // before q_out is read
  q_out = checked(overflow, q_out, "q_proj's rows", head_keys);
  overflow = __builtin_mul_overflow(kv, hd, &kv_out);
  kv_out = checked(overflow, kv_out, "k_proj's rows", head_keys);
  for (int64_t l = 0; l < m.layers; ++l) {
    UnitLayout u;
    u.kind = UnitKind::kBlock;
    u.block = static_cast<int>(l);
    u.name = "layers." + std::to_string(l);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const char* hk = "model.hidden", *ak = m.head_dim > 0 ? "model.head_dim" : "model.hidden",
                *ik = "model.intermediate x model.hidden", *dk = "model.head_dim";
    // Order of the size table (the flat buffer's): Llama-2-shaped models have exactly the
    // unbracketed ones: ln1, q, [q bias], k, [k bias], v, [v bias], o, [o bias],
    // [q_norm, k_norm], ln2, gate, up, down.
    add(u, p + "input_layernorm.weight", {h}, hk, N, no_decay);
    add(u, p + "self_attn.q_proj.weight", {q_out, h}, ak, W, no_decay);
    if (bias) add(u, p + "self_attn.q_proj.bias", {q_out}, ak, Z, no_decay);
    add(u, p + "self_attn.k_proj.weight", {kv_out, h}, ak, W, no_decay);
    if (bias) add(u, p + "self_attn.k_proj.bias", {kv_out}, ak, Z, no_decay);
    add(u, p + "self_attn.v_proj.weight", {kv_out, h}, ak, W, no_decay);
    if (bias) add(u, p + "self_attn.v_proj.bias", {kv_out}, ak, Z, no_decay);
    add(u, p + "self_attn.o_proj.weight", {h, q_out}, ak, W, no_decay);
    if (o_bias) add(u, p + "self_attn.o_proj.bias", {h}, hk, Z, no_decay);
    if (m.qk_norm) {
      add(u, p + "self_attn.q_norm.weight", {hd}, dk, N, no_decay);
      add(u, p + "self_attn.k_norm.weight", {hd}, dk, N, no_decay);
    }
    add(u, p + "post_attention_layernorm.weight", {h}, hk, N, no_decay);
    add(u, p + "mlp.gate_proj.weight", {inter, h}, ik, W, no_decay);
    add(u, p + "mlp.up_proj.weight", {inter, h}, ik, W, no_decay);
    add(u, p + "mlp.down_proj.weight", {h, inter}, ik, W, no_decay);
    layout.units.push_back(std::move(u));
  }

  UnitLayout head;
  head.kind = UnitKind::kHead;
  head.name = "head";
  add(head, "model.norm.weight", {h}, "model.hidden", N, no_decay);
  if (!m.tie_embeddings)
    add(head, "lm_head.weight", {v, h}, "model.vocab_size x model.hidden", W, no_decay);
  layout.units.push_back(std::move(head));

  int64_t total = 0;
  for (size_t i = 0; i < layout.units.size(); ++i) {
    layout.units[i].index = static_cast<int>(i);
    finish(layout.units[i], world_size);
    int64_t sum = 0;
    const bool overflow = __builtin_add_overflow(total, layout.units[i].padded_numel, &sum);
    total = checked(overflow, sum, "the parameter count", "model.layers x the size of a block");
  }
  return layout;
}

}  // namespace xy
