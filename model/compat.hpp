// Differences between LibTorch versions (Debian's 1.13 for the CPU build, 2.x with CUDA), in one place.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

namespace xy::compat {

// Causal scaled-dot-product attention over [B, H, T, D] query/key/value (same head count).
inline at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                          /*is_causal=*/true);
#else
  // 1.13 has only the private op; write the math out (it is what the private op runs on CPU),
  // with the softmax in fp32.
  const int64_t t = q.size(-2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).mul(scale);
  at::Tensor mask = at::ones({t, t}, q.options().dtype(at::kBool)).triu(1);
  scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, v);
#endif
}

}  // namespace xy::compat
