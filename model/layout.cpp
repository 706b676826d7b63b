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
  for (const auto& u : units) n += u.numel;
  return n;
}

namespace {

void add(UnitLayout& u, const std::string& name, std::vector<int64_t> shape, bool is_norm,
         const std::vector<std::string>& no_decay) {
  ParamSpec p;
  p.name = name;
  p.shape = std::move(shape);
  p.numel = 1;
  for (int64_t d : p.shape) p.numel *= d;
  p.offset = u.numel;
  p.is_norm = is_norm;
  for (const auto& s : no_decay)
    if (!s.empty() && name.find(s) != std::string::npos) p.decay = false;
  u.numel += p.numel;
  u.params.push_back(std::move(p));
}

void finish(UnitLayout& u, int world_size) {
  u.padded_numel = (u.numel + world_size - 1) / world_size * world_size;
  u.shard_numel = u.padded_numel / world_size;
}

}  // namespace

ModelLayout build_layout(const ModelConfig& m, int world_size,
                         const std::vector<std::string>& no_decay) {
  if (world_size < 1) throw std::invalid_argument("world_size must be >= 1");
  const int64_t h = m.hidden, inter = m.intermediate, v = m.vocab_size;
  const int64_t kv = m.kv_heads > 0 ? m.kv_heads : m.heads;
  const int64_t hd = h / m.heads;
  ModelLayout layout;
  layout.world_size = world_size;

  UnitLayout emb;
  emb.kind = UnitKind::kEmbedding;
  emb.name = "embed";
  add(emb, "model.embed_tokens.weight", {v, h}, false, no_decay);
  layout.units.push_back(std::move(emb));

  for (int64_t l = 0; l < m.layers; ++l) {
    UnitLayout u;
    u.kind = UnitKind::kBlock;
    u.block = static_cast<int>(l);
    u.name = "layers." + std::to_string(l);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(u, p + "input_layernorm.weight", {h}, true, no_decay);
    add(u, p + "self_attn.q_proj.weight", {h, h}, false, no_decay);
    add(u, p + "self_attn.k_proj.weight", {kv * hd, h}, false, no_decay);
    add(u, p + "self_attn.v_proj.weight", {kv * hd, h}, false, no_decay);
    add(u, p + "self_attn.o_proj.weight", {h, h}, false, no_decay);
    add(u, p + "post_attention_layernorm.weight", {h}, true, no_decay);
    add(u, p + "mlp.gate_proj.weight", {inter, h}, false, no_decay);
    add(u, p + "mlp.up_proj.weight", {inter, h}, false, no_decay);
    add(u, p + "mlp.down_proj.weight", {h, inter}, false, no_decay);
    layout.units.push_back(std::move(u));
  }

  UnitLayout head;
  head.kind = UnitKind::kHead;
  head.name = "head";
  add(head, "model.norm.weight", {h}, true, no_decay);
  add(head, "lm_head.weight", {v, h}, false, no_decay);
  layout.units.push_back(std::move(head));

  for (size_t i = 0; i < layout.units.size(); ++i) {
    layout.units[i].index = static_cast<int>(i);
    finish(layout.units[i], world_size);
  }
  return layout;
}

}  // namespace xy
