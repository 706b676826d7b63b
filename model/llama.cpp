// LLaMA forward/backward over flat unit buffers (see llama.hpp).
#include "model/llama.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

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
    else v.normal_(0.0, std, gen);
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

namespace {
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

Llama::Llama(const ModelConfig& cfg, const ModelLayout& layout) : cfg_(cfg), layout_(layout) {
  head_dim_ = cfg.hidden / cfg.heads;
  kv_heads_ = cfg.kv_heads > 0 ? cfg.kv_heads : cfg.heads;
  std::tie(cos_, sin_) = rope_tables(cfg.max_seq_len, head_dim_, cfg.rope_theta);
}

std::pair<at::Tensor, at::Tensor> Llama::rope_for(int64_t t, const at::Tensor& like) const {
  if (t > cos_.size(0))
    throw std::invalid_argument("sequence of " + std::to_string(t) +
                                " tokens exceeds model.max_seq_len " + std::to_string(cos_.size(0)));
  std::lock_guard<std::mutex> lock(tables_mu_);
  auto key = std::make_pair(like.device().str(), static_cast<int>(like.scalar_type()));
  auto it = tables_.find(key);
  if (it == tables_.end())
    it = tables_.emplace(key, std::make_pair(cos_.to(like.options()), sin_.to(like.options()))).first;
  return {it->second.first.narrow(0, 0, t), it->second.second.narrow(0, 0, t)};
}

at::Tensor Llama::embed_forward(const at::Tensor& flat, const at::Tensor& ids) const {
  const auto v = param_views(layout_.units.front(), flat);
  return at::embedding(v[0], ids);
}

at::Tensor Llama::block_forward(int unit, const at::Tensor& flat, const at::Tensor& x) const {
  const UnitLayout& u = layout_.units.at(unit);
  const auto w = param_views(u, flat);
  // Order of the size table: ln1, q, k, v, o, ln2, gate, up, down.
  const at::Tensor &ln1 = w[0], &wq = w[1], &wk = w[2], &wv = w[3], &wo = w[4], &ln2 = w[5],
                   &wg = w[6], &wu = w[7], &wd = w[8];
  const int64_t b = x.size(0), t = x.size(1), h = x.size(2);
  const int64_t nh = cfg_.heads, kvh = kv_heads_, hd = head_dim_;

  at::Tensor hn = rms_norm(x, ln1, cfg_.rms_eps);
  at::Tensor q = at::linear(hn, wq).view({b, t, nh, hd}).transpose(1, 2);
  at::Tensor k = at::linear(hn, wk).view({b, t, kvh, hd}).transpose(1, 2);
  at::Tensor v = at::linear(hn, wv).view({b, t, kvh, hd}).transpose(1, 2);
  auto [cos, sin] = rope_for(t, x);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);
  if (kvh != nh) {  // grouped KV heads: kv head j serves query heads j*rep .. j*rep + rep - 1
    k = k.repeat_interleave(nh / kvh, 1);
    v = v.repeat_interleave(nh / kvh, 1);
  }
  at::Tensor a = compat::causal_attention(q, k, v).transpose(1, 2).reshape({b, t, h});
  at::Tensor y = x + at::linear(a, wo);
  at::Tensor hn2 = rms_norm(y, ln2, cfg_.rms_eps);
  at::Tensor mlp = at::linear(at::silu(at::linear(hn2, wg)) * at::linear(hn2, wu), wd);
  return y + mlp;
}

at::Tensor Llama::head_forward(const at::Tensor& flat, const at::Tensor& x) const {
  const auto w = param_views(layout_.units.back(), flat);
  return at::linear(rms_norm(x, w[0], cfg_.rms_eps), w[1]);
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
                                const at::Tensor& labels, double grad_scale) const {
  at::AutoGradMode grad_on(true);
  at::Tensor f = flat.detach().requires_grad_(true);
  at::Tensor xi = x.detach().requires_grad_(true);
  at::Tensor l = loss(head_forward(f, xi), labels);
  auto g = torch::autograd::grad({l * grad_scale}, {xi, f});
  return {l.detach(), g[0], g[1]};
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
  return head_forward(flats.back(), x);
}

}  // namespace xy
