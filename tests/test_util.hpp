// Helpers shared by the numerical tests: relative errors that are printed, and a tiny config.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>

#include "io/config.hpp"
#include "io/samples.hpp"
#include "model/llama.hpp"

namespace xy::test {

// max |a - b| / max(max |b|, tiny): one number per tensor pair, printed by the callers.
inline double rel_err(const at::Tensor& a, const at::Tensor& b) {
  const double num = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  const double den = std::max(b.to(at::kDouble).abs().max().item<double>(), 1e-30);
  return num / den;
}

inline double max_abs_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// A small LLaMA with grouped KV heads, and settings that make every code path count.
inline Config tiny_config(int world, int64_t steps, int64_t grad_accum = 1) {
  Config c;
  c.model.preset = "custom";
  c.model.vocab_size = 97;
  c.model.hidden = 32;
  c.model.intermediate = 72;
  c.model.layers = 2;
  c.model.heads = 4;
  c.model.kv_heads = 2;
  c.model.max_seq_len = 64;
  c.model.init_seed = 7;
  c.data.seq_len = 12;
  c.data.seed = 3;
  c.data.work_dir = "runs/test";
  c.train.steps = steps;
  c.train.micro_batch = 2;
  c.train.grad_accum = grad_accum;
  c.optimizer.lr = 1e-2;
  c.optimizer.min_lr = 1e-3;
  c.optimizer.warmup_steps = 2;
  c.optimizer.weight_decay = 0.1;
  c.optimizer.grad_clip = 0.5;  // small, so that clipping is exercised
  c.topology.nodes = {NodeSpec{"127.0.0.1", 0, world}};
  c.checkpoint.dir = "runs/test/checkpoints";
  return c;
}

// Today's open architectures in one model: tied embeddings (one parameter in two places), q/k/v/o
// biases, per-head q/k RMSNorm, a head_dim other than hidden / heads (12, not 32 / 4), and llama3
// RoPE scaling whose original length (4) is below the sequence, so that every frequency band
// counts. (No Hugging Face class has all of these at once; the engine does not care.)
inline void make_modern(Config& c, const char* attention_bias = "qkv") {
  c.model.family = "qwen3";
  c.model.tie_embeddings = true;
  c.model.qk_norm = true;
  c.model.attention_bias = attention_bias;
  c.model.head_dim = 12;
  c.model.rope_theta = 500000.0;
  c.model.rope_scaling = "llama3";
  c.model.rope_factor = 8.0;
  c.model.rope_original_max_len = 4;
}

// Random tokens (fixed seed) as a sample source.
inline std::shared_ptr<TokenSamples> random_samples(int64_t tokens, int64_t seq_len, int64_t vocab,
                                                    uint64_t seed = 11) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(tokens);
  for (auto& t : ids) t = static_cast<int32_t>(rng() % vocab);
  return std::make_shared<TokenSamples>(std::move(ids), seq_len, vocab);
}

// The engine's per-unit path on full unit buffers: forward without autograd keeping each block's
// input, then head backward, each block recomputed from its input and backpropagated, embedding
// last. Returns the loss and one flat gradient per unit.
struct UnitGrads {
  double loss = 0;
  std::vector<at::Tensor> grads;
};
inline UnitGrads per_unit_backward(const Llama& model, const std::vector<at::Tensor>& flats,
                                   const at::Tensor& ids, const at::Tensor& labels) {
  const int head = static_cast<int>(flats.size()) - 1;
  std::vector<at::Tensor> saved(flats.size());
  UnitGrads out;
  out.grads.resize(flats.size());
  at::Tensor x;
  {
    at::NoGradGuard ng;
    x = model.embed_forward(flats[0], ids);
    for (int u = 1; u < head; ++u) {
      saved[u] = x;
      x = model.block_forward(u, flats[u], x);
    }
  }
  const HeadResult hr = model.head_backward(flats[head], x, labels, 1.0,
                                            model.tied() ? flats[0] : at::Tensor());
  out.loss = hr.loss.item<double>();
  out.grads[head] = hr.grad_flat;
  at::Tensor gx = hr.grad_x;
  for (int u = head - 1; u >= 1; --u) {
    auto g = model.block_backward(u, flats[u], saved[u], gx);
    gx = g.first;
    out.grads[u] = g.second;
  }
  out.grads[0] = model.embed_backward(flats[0], ids, gx);
  if (hr.grad_embed.defined()) out.grads[0] += hr.grad_embed;  // tied: the LM head's part
  return out;
}

}  // namespace xy::test
