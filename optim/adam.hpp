// The fused CPU AdamW kernel of the optimizer-offload actor: one pass over a shard reads the fp32
// gradient and updates the fp32 master, m and v in place, and writes the working-precision copy.
//
// Math (decoupled weight decay, bias correction; identical to torch.optim.AdamW):
//   g  = grad * grad_scale                  (grad_scale = clip coefficient / loss scale)
//   p  = p * (1 - lr * wd)                  (only where decay)
//   m  = b1 * m + (1 - b1) * g
//   v  = b2 * v + (1 - b2) * g * g
//   p  = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Memory traffic per element: 16 bytes read (p, m, v, g), 12 written (p, m, v) + the working copy.
#pragma once

#include <cstdint>

namespace xy {

class ThreadPool;

struct AdamHyper {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;         // 1-based step count (for bias correction)
  double grad_scale = 1.0;  // multiplies the gradient before use
};

// The fp32 constants of one call, computed once on the host (in double, then rounded), shared by
// every path of the CPU kernel and by the device kernel (optim/adam_device.hpp), so that both
// start from the same bits.
struct AdamConsts {
  float b1, b2, one_b1, one_b2, scale, wd_mul, step_size, inv_sqrt_bc2, eps;
  AdamConsts(const AdamHyper& h, bool decay);  // wd_mul = 1 - lr * wd with decay, else 1
};

enum class WorkingType { kNone, kFloat32, kBFloat16, kFloat16 };

// The gradient's type: fp32, or bf16 / fp16 (gradients landed from a device in the working
// precision, 2 bytes each).
enum class GradType { kFloat32, kBFloat16, kFloat16 };

// Instruction sets of the kernel. kBest picks the widest one this CPU has (at run time).
enum class AdamIsa { kBest, kScalar, kAvx2, kAvx512 };
AdamIsa adam_best_isa();            // what kBest resolves to here
bool adam_isa_supported(AdamIsa isa);
const char* adam_isa_name(AdamIsa isa);

// Updates n elements. `decay` selects weight decay for this range. `out` (may be null with
// kNone) receives the new parameters in the working type. Single-threaded; see adamw_parallel.
void adamw_fused(float* p, float* m, float* v, const void* g, int64_t n, const AdamHyper& h,
                 bool decay, void* out, WorkingType out_type, AdamIsa isa = AdamIsa::kBest,
                 GradType g_type = GradType::kFloat32);

// The same over a thread pool (chunks aligned to 64 elements).
void adamw_parallel(ThreadPool& pool, float* p, float* m, float* v, const void* g, int64_t n,
                    const AdamHyper& h, bool decay, void* out, WorkingType out_type,
                    AdamIsa isa = AdamIsa::kBest, GradType g_type = GradType::kFloat32);

}  // namespace xy
