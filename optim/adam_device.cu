// The fused device AdamW kernel and the skipped step's recast (see adam_device.hpp). LibTorch-free:
// the CUDA runtime and cuda_fp16.h only, so that nvcc compiles no LibTorch header.
#include "optim/adam_device.hpp"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace xy {
namespace {

// The no-decay ranges of one launch, passed by value as a kernel parameter (no copy to the device,
// nothing shared between streams). A call with more ranges is split into several launches.
constexpr int kMaxRanges = 32;
struct LaunchRanges {
  int count = 0;
  int64_t begin[kMaxRanges];
  int64_t end[kMaxRanges];
};

constexpr int kThreads = 256;  // threads a block
constexpr int kPerThread = 4;  // consecutive elements a thread (one 16-byte load of fp32)

__device__ __forceinline__ bool decays(const LaunchRanges& r, int64_t i) {
  if (r.count == 0) return true;
  int lo = 0, hi = r.count;  // the first range that ends after i
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (r.end[mid] <= i) lo = mid + 1;
    else hi = mid;
  }
  return !(lo < r.count && r.begin[lo] <= i);
}

// One element, in the order of the CPU kernel's AVX2 / AVX-512 paths (optim/adam.cpp), each
// operation rounded once where the CPU rounds it (__f*_rn: never contracted or reordered):
//   gi = g * scale; pi = p * wd; m = fma(b1, m, ob1 * gi); v = fma(b2, v, (ob2 * gi) * gi);
//   denom = fma(sqrt(v), inv_sqrt_bc2, eps); p = fma(-step_size, m / denom, pi)   (= fnmadd)
__device__ __forceinline__ void adam_elem(float& p, float& m, float& v, float graw, float wd,
                                          const AdamConsts& c) {
  const float gi = __fmul_rn(graw, c.scale);
  const float pi = __fmul_rn(p, wd);
  m = __fmaf_rn(c.b1, m, __fmul_rn(c.one_b1, gi));
  v = __fmaf_rn(c.b2, v, __fmul_rn(__fmul_rn(c.one_b2, gi), gi));
  const float denom = __fmaf_rn(__fsqrt_rn(v), c.inv_sqrt_bc2, c.eps);
  p = __fmaf_rn(-c.step_size, __fdiv_rn(m, denom), pi);
}

__device__ __forceinline__ float bf16_to_float(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);  // exact
}
__device__ __forceinline__ float fp16_to_float(uint16_t b) {
  return __half2float(__ushort_as_half(b));  // exact
}
// Round to nearest even, NaN -> 0x7FC0: c10::BFloat16's conversion, which the CPU paths copy.
__device__ __forceinline__ uint16_t float_to_bf16(float x) {
  if (isnan(x)) return 0x7FC0;
  const uint32_t b = __float_as_uint(x);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}
// Round to nearest even (as F16C's vcvtps2ph and c10::Half; only a NaN's payload may differ).
__device__ __forceinline__ uint16_t float_to_fp16(float x) {
  return __half_as_ushort(__float2half_rn(x));
}

template <GradType G>
__device__ __forceinline__ float load_grad(const void* g, int64_t i) {
  if constexpr (G == GradType::kFloat32) return static_cast<const float*>(g)[i];
  else if constexpr (G == GradType::kBFloat16) return bf16_to_float(static_cast<const uint16_t*>(g)[i]);
  else return fp16_to_float(static_cast<const uint16_t*>(g)[i]);
}

template <GradType G>
__device__ __forceinline__ void load_grad4(const void* g, int64_t i, float (&out)[4]) {
  if constexpr (G == GradType::kFloat32) {
    const float4 q = *reinterpret_cast<const float4*>(static_cast<const float*>(g) + i);
    out[0] = q.x, out[1] = q.y, out[2] = q.z, out[3] = q.w;
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(g) + i);
    const uint16_t h[4] = {static_cast<uint16_t>(q.x & 0xFFFFu), static_cast<uint16_t>(q.x >> 16),
                           static_cast<uint16_t>(q.y & 0xFFFFu), static_cast<uint16_t>(q.y >> 16)};
#pragma unroll
    for (int k = 0; k < 4; ++k)
      out[k] = G == GradType::kBFloat16 ? bf16_to_float(h[k]) : fp16_to_float(h[k]);
  }
}

template <WorkingType O>
__device__ __forceinline__ void store_out(void* out, int64_t i, float x) {
  if constexpr (O == WorkingType::kFloat32) static_cast<float*>(out)[i] = x;
  else if constexpr (O == WorkingType::kBFloat16) static_cast<uint16_t*>(out)[i] = float_to_bf16(x);
  else if constexpr (O == WorkingType::kFloat16) static_cast<uint16_t*>(out)[i] = float_to_fp16(x);
}

template <WorkingType O>
__device__ __forceinline__ void store_out4(void* out, int64_t i, const float (&x)[4]) {
  if constexpr (O == WorkingType::kFloat32) {
    *reinterpret_cast<float4*>(static_cast<float*>(out) + i) = make_float4(x[0], x[1], x[2], x[3]);
  } else if constexpr (O == WorkingType::kBFloat16 || O == WorkingType::kFloat16) {
    uint16_t h[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      h[k] = O == WorkingType::kBFloat16 ? float_to_bf16(x[k]) : float_to_fp16(x[k]);
    *reinterpret_cast<uint2*>(static_cast<uint16_t*>(out) + i) =
        make_uint2(h[0] | (static_cast<uint32_t>(h[1]) << 16), h[2] | (static_cast<uint32_t>(h[3]) << 16));
  }
}

// Each thread updates kPerThread consecutive elements per turn of a grid-stride loop: with kVec
// (every pointer aligned for it) in 16-byte (fp32) and 8-byte (16-bit) loads and stores, the last
// partial group and unaligned calls element by element.
template <GradType G, WorkingType O, bool kVec>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                 const void* __restrict__ g, void* __restrict__ out, int64_t n, AdamConsts c,
                 LaunchRanges nd) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * kPerThread;
  for (int64_t i0 = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
       i0 < n; i0 += stride) {
    if (kVec && i0 + kPerThread <= n) {
      const float4 p4 = *reinterpret_cast<const float4*>(p + i0);
      const float4 m4 = *reinterpret_cast<const float4*>(m + i0);
      const float4 v4 = *reinterpret_cast<const float4*>(v + i0);
      float gs[4];
      load_grad4<G>(g, i0, gs);
      float ps[4] = {p4.x, p4.y, p4.z, p4.w}, ms[4] = {m4.x, m4.y, m4.z, m4.w},
            vs[4] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
      for (int k = 0; k < 4; ++k)
        adam_elem(ps[k], ms[k], vs[k], gs[k], decays(nd, i0 + k) ? c.wd_mul : 1.0f, c);
      *reinterpret_cast<float4*>(p + i0) = make_float4(ps[0], ps[1], ps[2], ps[3]);
      *reinterpret_cast<float4*>(m + i0) = make_float4(ms[0], ms[1], ms[2], ms[3]);
      *reinterpret_cast<float4*>(v + i0) = make_float4(vs[0], vs[1], vs[2], vs[3]);
      store_out4<O>(out, i0, ps);
    } else {
      const int64_t e = i0 + kPerThread < n ? i0 + kPerThread : n;
      for (int64_t i = i0; i < e; ++i) {
        float pi = p[i], mi = m[i], vi = v[i];
        adam_elem(pi, mi, vi, load_grad<G>(g, i), decays(nd, i) ? c.wd_mul : 1.0f, c);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        store_out<O>(out, i, pi);
      }
    }
  }
}

template <WorkingType O>
__global__ void __launch_bounds__(kThreads)
    recast_kernel(const float* __restrict__ master, void* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    store_out<O>(out, i, master[i]);
}

unsigned blocks_for(int64_t work_items) {
  const int64_t b = (work_items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(b, 1), int64_t{1} << 20));
}

bool aligned(const void* ptr, uintptr_t to) { return reinterpret_cast<uintptr_t>(ptr) % to == 0; }

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": CUDA kernel launch failed: " + cudaGetErrorString(e));
}

template <GradType G, WorkingType O>
void launch(float* p, float* m, float* v, const void* g, void* out, int64_t n, const AdamConsts& c,
            const LaunchRanges& nd, cudaStream_t stream) {
  const bool vec = aligned(p, 16) && aligned(m, 16) && aligned(v, 16) &&
                   aligned(g, G == GradType::kFloat32 ? 16 : 8) &&
                   (O == WorkingType::kNone || aligned(out, O == WorkingType::kFloat32 ? 16 : 8));
  const unsigned blocks = blocks_for((n + kPerThread - 1) / kPerThread);
  if (vec)
    adamw_kernel<G, O, true><<<blocks, kThreads, 0, stream>>>(p, m, v, g, out, n, c, nd);
  else
    adamw_kernel<G, O, false><<<blocks, kThreads, 0, stream>>>(p, m, v, g, out, n, c, nd);
  check_launch("adamw_device");
}

template <GradType G>
void launch_out(float* p, float* m, float* v, const void* g, void* out, WorkingType out_type,
                int64_t n, const AdamConsts& c, const LaunchRanges& nd, cudaStream_t stream) {
  switch (out_type) {
    case WorkingType::kNone: return launch<G, WorkingType::kNone>(p, m, v, g, nullptr, n, c, nd, stream);
    case WorkingType::kFloat32: return launch<G, WorkingType::kFloat32>(p, m, v, g, out, n, c, nd, stream);
    case WorkingType::kBFloat16: return launch<G, WorkingType::kBFloat16>(p, m, v, g, out, n, c, nd, stream);
    case WorkingType::kFloat16: return launch<G, WorkingType::kFloat16>(p, m, v, g, out, n, c, nd, stream);
  }
}

}  // namespace

void adamw_device(float* p, float* m, float* v, const void* g, int64_t n, const AdamHyper& h,
                  const ElemRange* no_decay, int64_t ranges, void* out, WorkingType out_type,
                  GradType g_type, cudaStream_t stream) {
  if (n <= 0) return;
  for (int64_t k = 0; k < ranges; ++k) {
    const ElemRange& r = no_decay[k];
    if (r.begin < 0 || r.end > n || r.begin >= r.end || (k > 0 && r.begin < no_decay[k - 1].end))
      throw std::invalid_argument("adamw_device: no-decay range " + std::to_string(k) + " [" +
                                  std::to_string(r.begin) + ", " + std::to_string(r.end) +
                                  ") is empty, outside [0, " + std::to_string(n) +
                                  ") or not after the previous one");
  }
  if (out_type != WorkingType::kNone && out == nullptr)
    throw std::invalid_argument("adamw_device: no working copy pointer for a working type");
  const AdamConsts c(h, /*decay=*/true);  // wd_mul per element: c.wd_mul, or 1 in a no-decay range
  const size_t gsize = g_type == GradType::kFloat32 ? 4 : 2;
  const size_t osize = out_type == WorkingType::kFloat32 ? 4 : 2;
  // Pieces of at most kMaxRanges ranges each: a piece ends where the next piece's first range
  // begins, so that every range of a piece lies inside it.
  int64_t pos = 0, next = 0;
  do {
    LaunchRanges nd;
    nd.count = static_cast<int>(std::min<int64_t>(ranges - next, kMaxRanges));
    const int64_t end = next + nd.count < ranges ? no_decay[next + nd.count].begin : n;
    for (int k = 0; k < nd.count; ++k) {
      nd.begin[k] = no_decay[next + k].begin - pos;
      nd.end[k] = no_decay[next + k].end - pos;
    }
    const void* gp = static_cast<const char*>(g) + pos * gsize;
    void* op = out ? static_cast<char*>(out) + pos * osize : nullptr;
    switch (g_type) {
      case GradType::kFloat32:
        launch_out<GradType::kFloat32>(p + pos, m + pos, v + pos, gp, op, out_type, end - pos, c, nd, stream);
        break;
      case GradType::kBFloat16:
        launch_out<GradType::kBFloat16>(p + pos, m + pos, v + pos, gp, op, out_type, end - pos, c, nd, stream);
        break;
      case GradType::kFloat16:
        launch_out<GradType::kFloat16>(p + pos, m + pos, v + pos, gp, op, out_type, end - pos, c, nd, stream);
        break;
    }
    pos = end;
    next += nd.count;
  } while (pos < n);
}

void recast_device(const float* master, void* out, int64_t n, WorkingType out_type,
                   cudaStream_t stream) {
  if (n <= 0 || out_type == WorkingType::kNone) return;
  const unsigned blocks = blocks_for(n);
  switch (out_type) {
    case WorkingType::kNone: break;
    case WorkingType::kFloat32:
      recast_kernel<WorkingType::kFloat32><<<blocks, kThreads, 0, stream>>>(master, out, n);
      break;
    case WorkingType::kBFloat16:
      recast_kernel<WorkingType::kBFloat16><<<blocks, kThreads, 0, stream>>>(master, out, n);
      break;
    case WorkingType::kFloat16:
      recast_kernel<WorkingType::kFloat16><<<blocks, kThreads, 0, stream>>>(master, out, n);
      break;
  }
  check_launch("recast_device");
}

}  // namespace xy
