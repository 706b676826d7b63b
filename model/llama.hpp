// LLaMA math over flat unit buffers: forward of one unit, and recompute + backward of one unit from
// its saved input — what the engine's layer-by-layer schedule needs. Stateless apart from the
// rotary tables, so one instance serves every rank and thread (calls are const and re-entrant).
//
// Conventions follow Hugging Face's LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM:
// RMSNorm in fp32 then times the weight, rotary embeddings in the rotate-half convention (with
// transformers' frequency scalings), optional q/k/v(/o) biases, optional RMSNorm of each q and k
// head before RoPE (Qwen3), grouped KV heads repeated per query group, SwiGLU MLP, an untied LM
// head or the embedding matrix (tied), cross-entropy in fp32 over next-token labels.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>
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

// Rotary embedding tables cos/sin of shape [T, head_dim] for positions 0..T-1 (plain RoPE).
std::pair<at::Tensor, at::Tensor> rope_tables(int64_t seq_len, int64_t head_dim, double theta);

// The inverse frequencies [head_dim / 2] (fp32) of m's RoPE for a sequence of `seq_len` tokens
// (only "dynamic" depends on it), and the factor that multiplies cos and sin (yarn's attention
// factor; 1 otherwise): transformers' modeling_rope_utils.py, op for op.
std::pair<at::Tensor, double> rope_inv_freq(const ModelConfig& m, int64_t seq_len);

// cos/sin [T, head_dim] of m's RoPE (scaling and attention factor included) for positions
// 0..T-1, as transformers' rotary embedding returns them for a fresh sequence of T tokens.
std::pair<at::Tensor, at::Tensor> rope_tables(const ModelConfig& m, int64_t seq_len);

// Applies rotary embeddings to x [B, H, T, D] with tables [T, D] (rotate-half convention).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

struct HeadResult {
  at::Tensor loss;       // scalar fp32: mean cross-entropy over the micro-batch's tokens
  at::Tensor grad_x;     // gradient w.r.t. the head's input (times grad_scale)
  at::Tensor grad_flat;  // gradient w.r.t. the head unit's flat buffer (times grad_scale)
  // Tied embeddings: the LM head's part of the gradient w.r.t. the embedding unit's flat buffer
  // (times grad_scale; add it to embed_backward's). Undefined when untied.
  at::Tensor grad_embed;
};

// Where each parameter of a block is in its size table (-1: the model has none).
struct BlockRoles {
  int ln1 = -1, wq = -1, bq = -1, wk = -1, bk = -1, wv = -1, bv = -1, wo = -1, bo = -1;
  int q_norm = -1, k_norm = -1, ln2 = -1, wg = -1, wu = -1, wd = -1;
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
  // Final norm + LM head: [B, T, hidden] -> logits [B, T, vocab]. `embed` (the embedding unit's
  // full buffer) is the LM head's matrix of a tied model, and unused otherwise.
  at::Tensor head_forward(const at::Tensor& flat, const at::Tensor& x,
                          const at::Tensor& embed = at::Tensor()) const;
  bool tied() const { return layout_.tied; }
  // Mean cross-entropy (fp32) of logits [B, T, V] against labels [B, T].
  static at::Tensor loss(const at::Tensor& logits, const at::Tensor& labels);

  // Recomputes block `unit` from its saved input x and backpropagates grad_out.
  // Returns {grad_x, grad_flat}.
  std::pair<at::Tensor, at::Tensor> block_backward(int unit, const at::Tensor& flat,
                                                   const at::Tensor& x,
                                                   const at::Tensor& grad_out) const;
  // Head forward + loss + backward of (loss * grad_scale); tied: also the embedding's part.
  HeadResult head_backward(const at::Tensor& flat, const at::Tensor& x, const at::Tensor& labels,
                           double grad_scale, const at::Tensor& embed = at::Tensor()) const;
  // Gradient of the embedding unit's flat buffer for ids and the gradient of its output.
  at::Tensor embed_backward(const at::Tensor& flat, const at::Tensor& ids,
                            const at::Tensor& grad_out) const;

  // Whole-model forward from full unit buffers (one per unit), with autograd if they require it.
  at::Tensor forward(const std::vector<at::Tensor>& flats, const at::Tensor& ids) const;

 private:
  std::pair<at::Tensor, at::Tensor> rope_for(int64_t t, const at::Tensor& like) const;
  at::Tensor lm_head_weight(const at::Tensor& flat, const at::Tensor& embed) const;

  ModelConfig cfg_;
  ModelLayout layout_;
  int64_t head_dim_;
  int64_t kv_heads_;
  BlockRoles roles_;      // the same in every block
  int64_t dynamic_from_;  // "dynamic" RoPE: sequences longer than this get their own table; else 0
  at::Tensor cos_, sin_;  // [max_seq_len, head_dim] fp32 on the CPU
  // The tables cast and copied to each (device, dtype, and for dynamic RoPE the length) in use,
  // made once.
  mutable std::mutex tables_mu_;
  mutable std::map<std::tuple<std::string, int, int64_t>, std::pair<at::Tensor, at::Tensor>> tables_;
};

}  // namespace xy
