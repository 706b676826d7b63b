// LLaMA math over flat unit buffers: forward of one unit, and recompute + backward of one unit from
// its saved input — what the engine's layer-by-layer schedule needs. Stateless apart from the
// rotary tables, so one instance serves every rank and thread (calls are const and re-entrant).
//
// Conventions follow Hugging Face's LlamaForCausalLM: RMSNorm in fp32 then times the weight,
// rotary embeddings in the rotate-half convention, grouped KV heads repeated per query group,
// SwiGLU MLP, untied LM head, cross-entropy in fp32 over next-token labels.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "io/config.hpp"
#include "model/layout.hpp"

namespace xy {

// Views of a unit's flat buffer as its parameters (shapes from the size table; no copies).
std::vector<at::Tensor> param_views(const UnitLayout& unit, const at::Tensor& flat);

// Initialises a unit's full (unpadded + padding zeroed) flat buffer: normal(0, std) for weights,
// ones for norms. Deterministic in (seed, unit index) and independent of the world size.
at::Tensor init_unit(const UnitLayout& unit, double std, uint64_t seed, at::ScalarType dtype);

// RMSNorm: x * rsqrt(mean(x^2) + eps) in fp32, cast back, times weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// Rotary embedding tables cos/sin of shape [T, head_dim] for positions 0..T-1.
std::pair<at::Tensor, at::Tensor> rope_tables(int64_t seq_len, int64_t head_dim, double theta);

// Applies rotary embeddings to x [B, H, T, D] with tables [T, D] (rotate-half convention).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

struct HeadResult {
  at::Tensor loss;       // scalar fp32: mean cross-entropy over the micro-batch's tokens
  at::Tensor grad_x;     // gradient w.r.t. the head's input (times grad_scale)
  at::Tensor grad_flat;  // gradient w.r.t. the head unit's flat buffer (times grad_scale)
};

class Llama {
 public:
  Llama(const ModelConfig& cfg, const ModelLayout& layout);

  const ModelLayout& layout() const { return layout_; }
  const ModelConfig& config() const { return cfg_; }

  // ids [B, T] int64 -> hidden states [B, T, hidden].
  at::Tensor embed_forward(const at::Tensor& flat, const at::Tensor& ids) const;
  // Block `unit` (a kBlock unit index) on x [B, T, hidden].
  at::Tensor block_forward(int unit, const at::Tensor& flat, const at::Tensor& x) const;
  // Final norm + LM head: [B, T, hidden] -> logits [B, T, vocab].
  at::Tensor head_forward(const at::Tensor& flat, const at::Tensor& x) const;
  // Mean cross-entropy (fp32) of logits [B, T, V] against labels [B, T].
  static at::Tensor loss(const at::Tensor& logits, const at::Tensor& labels);

  // Recomputes block `unit` from its saved input x and backpropagates grad_out.
  // Returns {grad_x, grad_flat}.
  std::pair<at::Tensor, at::Tensor> block_backward(int unit, const at::Tensor& flat,
                                                   const at::Tensor& x,
                                                   const at::Tensor& grad_out) const;
  // Head forward + loss + backward of (loss * grad_scale).
  HeadResult head_backward(const at::Tensor& flat, const at::Tensor& x, const at::Tensor& labels,
                           double grad_scale) const;
  // Gradient of the embedding unit's flat buffer for ids and the gradient of its output.
  at::Tensor embed_backward(const at::Tensor& flat, const at::Tensor& ids,
                            const at::Tensor& grad_out) const;

  // Whole-model forward from full unit buffers (one per unit), with autograd if they require it.
  at::Tensor forward(const std::vector<at::Tensor>& flats, const at::Tensor& ids) const;

 private:
  std::pair<at::Tensor, at::Tensor> rope_for(int64_t t, const at::Tensor& like) const;

  ModelConfig cfg_;
  ModelLayout layout_;
  int64_t head_dim_;
  int64_t kv_heads_;
  at::Tensor cos_, sin_;  // [max_seq_len, head_dim] fp32 on the CPU
  // The tables cast and copied to each (device, dtype) in use, made once.
  mutable std::mutex tables_mu_;
  mutable std::map<std::pair<std::string, int>, std::pair<at::Tensor, at::Tensor>> tables_;
};

}  // namespace xy
