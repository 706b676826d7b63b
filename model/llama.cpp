// LLaMA forward/backward over flat unit buffers (see llama.hpp).
#include "model/llama.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "model/compat.hpp"

namespace xy {

std::vector<at::Tensor> param_views(const UnitLayout& unit, const at::Tensor& flat) {
  if (flat.numel() < unit.numel)
    throw std::invalid_argument("unit " + unit.name + ": flat buffer has " +
                                std::to_string(flat.numel()) + " elements, needs " +
                                std::to_string(unit.numel));
  std::vector<at::Tensor> views;
  views.reserve(unit.params.size());
  for (const auto& p : unit.params) views.push_back(flat.narrow(0, p.offset, p.numel).view(p.shape));
  return views;
}

at::Tensor init_unit(const UnitLayout& unit, double std, uint64_t seed, at::ScalarType dtype) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed * 1000003ULL + unit.index);
  at::Tensor flat = at::zeros({unit.padded_numel}, at::kFloat);
  for (const auto& p : unit.params) {
    at::Tensor v = flat.narrow(0, p.offset, p.numel);
    if (p.is_norm) v.fill_(1.0);
    else if (!p.is_bias) v.normal_(0.0, std, gen);  // biases stay 0, as transformers' init
  }
  return flat.to(dtype);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> rope_tables(int64_t seq_len, int64_t head_dim, double theta) {
  // inv_freq[i] = theta^(-2i/d); angle[t, i] = t * inv_freq[i]; duplicated halves (rotate-half).
  at::Tensor idx = at::arange(0, head_dim, 2, at::kFloat);
  at::Tensor inv_freq = at::pow(theta, idx / static_cast<double>(head_dim)).reciprocal();
  at::Tensor t = at::arange(seq_len, at::kFloat);
  at::Tensor freqs = at::outer(t, inv_freq);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

std::pair<at::Tensor, double> rope_inv_freq(const ModelConfig& m, int64_t seq_len) {
  // Each line is the tensor op transformers runs (modeling_rope_utils.py, 5.x), in fp32: `s / t`
  // of a Python scalar s is t.reciprocal() * s there; Python floats are doubles.
  const int64_t dim = head_dim_of(m);
  const std::string& kind = m.rope_scaling;
  const double factor = m.rope_factor;
  const int64_t original = m.rope_original_max_len > 0 ? m.rope_original_max_len : m.max_seq_len;
  double base = m.rope_theta;
  if (kind == "dynamic") {
    const double len = static_cast<double>(std::max(seq_len, original));
    base = base * std::pow(factor * len / static_cast<double>(original) - (factor - 1.0),
                           static_cast<double>(dim) / static_cast<double>(dim - 2));
  }
  const at::Tensor exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = at::pow(base, exponent).reciprocal();
  double attention = 1.0;
  if (kind == "linear") {
    inv_freq = inv_freq / factor;
  } else if (kind == "llama3") {
    const double low = m.rope_low_freq_factor, high = m.rope_high_freq_factor;
    const double old_len = static_cast<double>(original);
    const double low_wavelen = old_len / low, high_wavelen = old_len / high;
    const at::Tensor wavelen = inv_freq.reciprocal() * (2 * M_PI);
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / factor, inv_freq);
    const at::Tensor smooth = (wavelen.reciprocal() * old_len - low) / (high - low);
    const at::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    const at::Tensor medium = at::logical_not(wavelen < high_wavelen) * at::logical_not(wavelen > low_wavelen);
    inv_freq = at::where(medium, smoothed, scaled);
  } else if (kind == "yarn") {
    attention = m.rope_attention_factor > 0 ? m.rope_attention_factor
                : factor <= 1                ? 1.0
                                             : 0.1 * std::log(factor) + 1.0;
    auto correction_dim = [&](double rotations) {
      return (static_cast<double>(dim) * std::log(static_cast<double>(original) / (rotations * 2 * M_PI))) /
             (2 * std::log(base));
    };
    double lo = std::max(std::floor(correction_dim(m.rope_beta_fast)), 0.0);
    double hi = std::min(std::ceil(correction_dim(m.rope_beta_slow)), static_cast<double>(dim - 1));
    if (lo == hi) hi += 0.001;  // transformers' guard against a zero-width ramp
    const at::Tensor pos_freqs = at::pow(base, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim));
    const at::Tensor extrapolation = pos_freqs.reciprocal();
    const at::Tensor interpolation = (pos_freqs * factor).reciprocal();
    const at::Tensor ramp = at::clamp((at::arange(dim / 2, at::kFloat) - lo) / (hi - lo), 0, 1);
    const at::Tensor extrapolation_factor = 1 - ramp;
    inv_freq = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return {inv_freq, attention};
}

std::pair<at::Tensor, at::Tensor> rope_tables(const ModelConfig& m, int64_t seq_len) {
  if (m.rope_scaling == "none") return rope_tables(seq_len, head_dim_of(m), m.rope_theta);
  auto [inv_freq, attention] = rope_inv_freq(m, seq_len);
  at::Tensor t = at::arange(seq_len, at::kFloat);
  at::Tensor freqs = at::outer(t, inv_freq);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  if (attention == 1.0) return {emb.cos(), emb.sin()};
  return {emb.cos() * attention, emb.sin() * attention};
}

namespace {
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

namespace {
// The role of a block parameter from its name (model/layout.cpp names them); -1 if none.
int* role_of(BlockRoles& r, const std::string& name) {
  static const std::pair<const char*, int BlockRoles::*> kRoles[] = {
      {"input_layernorm.weight", &BlockRoles::ln1}, {"self_attn.q_proj.weight", &BlockRoles::wq},
      {"self_attn.q_proj.bias", &BlockRoles::bq},   {"self_attn.k_proj.weight", &BlockRoles::wk},
      {"self_attn.k_proj.bias", &BlockRoles::bk},   {"self_attn.v_proj.weight", &BlockRoles::wv},
      {"self_attn.v_proj.bias", &BlockRoles::bv},   {"self_attn.o_proj.weight", &BlockRoles::wo},
      {"self_attn.o_proj.bias", &BlockRoles::bo},   {"self_attn.q_norm.weight", &BlockRoles::q_norm},
      {"self_attn.k_norm.weight", &BlockRoles::k_norm},
      {"post_attention_layernorm.weight", &BlockRoles::ln2},
      {"mlp.gate_proj.weight", &BlockRoles::wg},    {"mlp.up_proj.weight", &BlockRoles::wu},
      {"mlp.down_proj.weight", &BlockRoles::wd}};
  for (const auto& [suffix, member] : kRoles) {
    const std::string s = std::string(".") + suffix;
    if (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0)
      return &(r.*member);
  }
  return nullptr;
}

// An optional parameter: its view, or undefined.
at::Tensor opt(const std::vector<at::Tensor>& w, int i) { return i >= 0 ? w[i] : at::Tensor(); }
}  // namespace

Llama::Llama(const ModelConfig& cfg, const ModelLayout& layout) : cfg_(cfg), layout_(layout) {
  head_dim_ = head_dim_of(cfg);
  kv_heads_ = kv_heads_of(cfg);
  // Every block has the same size table; find each parameter by its name once.
  for (const auto& u : layout_.units) {
    if (u.kind != UnitKind::kBlock) continue;
    BlockRoles r;
    for (size_t i = 0; i < u.params.size(); ++i) {
      int* slot = role_of(r, u.params[i].name);
      if (!slot) throw std::invalid_argument("unit " + u.name + ": unknown parameter " + u.params[i].name);
      *slot = static_cast<int>(i);
    }
    for (int v : {r.ln1, r.wq, r.wk, r.wv, r.wo, r.ln2, r.wg, r.wu, r.wd})
      if (v < 0) throw std::invalid_argument("unit " + u.name + " lacks a projection or norm");
    if (u.block == 0) roles_ = r;
  }
  dynamic_from_ = 0;
  if (cfg.rope_scaling == "dynamic")
    dynamic_from_ = cfg.rope_original_max_len > 0 ? cfg.rope_original_max_len : cfg.max_seq_len;
  // Plain RoPE: the tables exactly as before (one table of max_seq_len rows, narrowed per use).
  std::tie(cos_, sin_) = rope_tables(cfg, std::min(cfg.max_seq_len, dynamic_from_ > 0 ? dynamic_from_ : cfg.max_seq_len));
}

std::pair<at::Tensor, at::Tensor> Llama::rope_for(int64_t t, const at::Tensor& like) const {
  if (t > cfg_.max_seq_len)
    throw std::invalid_argument("sequence of " + std::to_string(t) +
                                " tokens exceeds model.max_seq_len " + std::to_string(cfg_.max_seq_len));
  // Dynamic NTK scaling: a sequence longer than the original length has its own frequencies.
  const int64_t len = dynamic_from_ > 0 && t > dynamic_from_ ? t : 0;
  std::lock_guard<std::mutex> lock(tables_mu_);
  auto key = std::make_tuple(like.device().str(), static_cast<int>(like.scalar_type()), len);
  auto it = tables_.find(key);
  if (it == tables_.end()) {
    at::Tensor c = cos_, s = sin_;
    if (len > 0) std::tie(c, s) = rope_tables(cfg_, len);
    it = tables_.emplace(key, std::make_pair(c.to(like.options()), s.to(like.options()))).first;
  }
  return {it->second.first.narrow(0, 0, t), it->second.second.narrow(0, 0, t)};
}

at::Tensor Llama::embed_forward(const at::Tensor& flat, const at::Tensor& ids) const {
  const auto v = param_views(layout_.units.front(), flat);
  return at::embedding(v[0], ids);
}

at::Tensor Llama::block_forward(int unit, const at::Tensor& flat, const at::Tensor& x) const {
  const UnitLayout& u = layout_.units.at(unit);
  const auto w = param_views(u, flat);
  const BlockRoles& r = roles_;
  const int64_t b = x.size(0), t = x.size(1);
  const int64_t nh = cfg_.heads, kvh = kv_heads_, hd = head_dim_;

  at::Tensor hn = rms_norm(x, w[r.ln1], cfg_.rms_eps);
  at::Tensor q = at::linear(hn, w[r.wq], opt(w, r.bq)).view({b, t, nh, hd});
  at::Tensor k = at::linear(hn, w[r.wk], opt(w, r.bk)).view({b, t, kvh, hd});
  if (r.q_norm >= 0) {  // Qwen3: RMSNorm over each head's head_dim, before RoPE
    q = rms_norm(q, w[r.q_norm], cfg_.rms_eps);
    k = rms_norm(k, w[r.k_norm], cfg_.rms_eps);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  at::Tensor v = at::linear(hn, w[r.wv], opt(w, r.bv)).view({b, t, kvh, hd}).transpose(1, 2);
  auto [cos, sin] = rope_for(t, x);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);
  if (kvh != nh) {  // grouped KV heads: kv head j serves query heads j*rep .. j*rep + rep - 1
    k = k.repeat_interleave(nh / kvh, 1);
    v = v.repeat_interleave(nh / kvh, 1);
  }
  at::Tensor a = compat::causal_attention(q, k, v).transpose(1, 2).reshape({b, t, nh * hd});
  at::Tensor y = x + at::linear(a, w[r.wo], opt(w, r.bo));
  at::Tensor hn2 = rms_norm(y, w[r.ln2], cfg_.rms_eps);
  at::Tensor mlp = at::linear(at::silu(at::linear(hn2, w[r.wg])) * at::linear(hn2, w[r.wu]), w[r.wd]);
  return y + mlp;
}

at::Tensor Llama::lm_head_weight(const at::Tensor& flat, const at::Tensor& embed) const {
  if (!layout_.tied) return param_views(layout_.units.back(), flat)[1];
  if (!embed.defined())
    throw std::invalid_argument("tied embeddings: the head needs the embedding unit's parameters");
  return param_views(layout_.units.front(), embed)[0];
}

at::Tensor Llama::head_forward(const at::Tensor& flat, const at::Tensor& x, const at::Tensor& embed) const {
  const auto w = param_views(layout_.units.back(), flat);
  return at::linear(rms_norm(x, w[0], cfg_.rms_eps), lm_head_weight(flat, embed));
}

at::Tensor Llama::loss(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t vocab = logits.size(-1);
  return at::cross_entropy_loss(logits.reshape({-1, vocab}).to(at::kFloat), labels.reshape({-1}));
}

std::pair<at::Tensor, at::Tensor> Llama::block_backward(int unit, const at::Tensor& flat,
                                                        const at::Tensor& x,
                                                        const at::Tensor& grad_out) const {
  at::AutoGradMode grad_on(true);
  at::Tensor f = flat.detach().requires_grad_(true);
  at::Tensor xi = x.detach().requires_grad_(true);
  at::Tensor y = block_forward(unit, f, xi);
  auto g = torch::autograd::grad({y}, {xi, f}, {grad_out});
  return {g[0], g[1]};
}

HeadResult Llama::head_backward(const at::Tensor& flat, const at::Tensor& x,
                                const at::Tensor& labels, double grad_scale,
                                const at::Tensor& embed) const {
  at::AutoGradMode grad_on(true);
  at::Tensor f = flat.detach().requires_grad_(true);
  at::Tensor xi = x.detach().requires_grad_(true);
  if (!layout_.tied) {
    at::Tensor l = loss(head_forward(f, xi), labels);
    auto g = torch::autograd::grad({l * grad_scale}, {xi, f});
    return {l.detach(), g[0], g[1], at::Tensor()};
  }
  if (!embed.defined())
    throw std::invalid_argument("tied embeddings: the head needs the embedding unit's parameters");
  at::Tensor e = embed.detach().requires_grad_(true);
  at::Tensor l = loss(head_forward(f, xi, e), labels);
  auto g = torch::autograd::grad({l * grad_scale}, {xi, f, e});
  return {l.detach(), g[0], g[1], g[2]};
}

at::Tensor Llama::embed_backward(const at::Tensor& flat, const at::Tensor& ids,
                                 const at::Tensor& grad_out) const {
  at::AutoGradMode grad_on(true);
  at::Tensor f = flat.detach().requires_grad_(true);
  at::Tensor y = embed_forward(f, ids);
  return torch::autograd::grad({y}, {f}, {grad_out})[0];
}

at::Tensor Llama::forward(const std::vector<at::Tensor>& flats, const at::Tensor& ids) const {
  if (flats.size() != layout_.units.size())
    throw std::invalid_argument("forward needs one flat buffer per unit");
  at::Tensor x = embed_forward(flats.front(), ids);
  for (int u = 1; u + 1 < static_cast<int>(flats.size()); ++u) x = block_forward(u, flats[u], x);
  return head_forward(flats.back(), x, layout_.tied ? flats.front() : at::Tensor());
}

}  // namespace xy
