// Fused CPU AdamW (see adam.hpp) and the thread pool it runs on: a scalar path, and AVX2 and
// AVX-512 paths chosen at run time (compiled with target attributes, so one binary serves all).
#include "optim/adam.hpp"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "optim/thread_pool.hpp"
#include "io/threads.hpp"

namespace xy {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  try {
    for (int i = 1; i < threads; ++i)
      workers_.push_back(start_thread("CPU Adam thread " + std::to_string(i + 1) + " of " +
                                          std::to_string(threads) + " (actors.adam_threads)",
                                      [this, i] { worker(i); }));
  } catch (const ThreadStartError&) {
    // The destructor does not run for a constructor that throws: join the started ones here.
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
    throw;
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lock(mu_);
    work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const int64_t begin = index * chunk_, end = std::min(n_, begin + chunk_);
    const auto* fn = fn_;
    lock.unlock();
    if (begin < end) (*fn)(begin, end);
    lock.lock();
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t align,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int t = size();
  int64_t chunk = (n + t - 1) / t;
  chunk = (chunk + align - 1) / align * align;
  if (workers_.empty() || chunk >= n) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call(call_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    n_ = n;
    chunk_ = chunk;
    fn_ = &fn;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  work_cv_.notify_all();
  fn(0, std::min(n, chunk));
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
}

AdamConsts::AdamConsts(const AdamHyper& h, bool decay) {
  b1 = static_cast<float>(h.beta1);
  b2 = static_cast<float>(h.beta2);
  one_b1 = static_cast<float>(1.0 - h.beta1);
  one_b2 = static_cast<float>(1.0 - h.beta2);
  scale = static_cast<float>(h.grad_scale);
  wd_mul = decay ? static_cast<float>(1.0 - h.lr * h.weight_decay) : 1.0f;
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
  step_size = static_cast<float>(h.lr / bc1);
  inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  eps = static_cast<float>(h.eps);
}

namespace {

// The scalar path (also the tail of the vector paths).
template <typename Out, typename G>
void adamw_scalar(float* __restrict p, float* __restrict m, float* __restrict v,
                  const G* __restrict g, int64_t n, const AdamConsts& c, Out* __restrict out) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = static_cast<float>(g[i]) * c.scale;
    const float pi = p[i] * c.wd_mul;
    const float mi = c.b1 * m[i] + c.one_b1 * gi;
    const float vi = c.b2 * v[i] + c.one_b2 * gi * gi;
    const float denom = std::sqrt(vi) * c.inv_sqrt_bc2 + c.eps;
    const float pn = pi - c.step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
    p[i] = pn;
    if constexpr (!std::is_same_v<Out, void>) out[i] = static_cast<Out>(pn);
  }
}

template <typename G>
void scalar_dispatch(float* p, float* m, float* v, const G* g, int64_t n, const AdamConsts& c,
                     void* out, WorkingType t) {
  switch (t) {
    case WorkingType::kNone: adamw_scalar<void>(p, m, v, g, n, c, nullptr); break;
    case WorkingType::kFloat32: adamw_scalar(p, m, v, g, n, c, static_cast<float*>(out)); break;
    case WorkingType::kBFloat16:
      adamw_scalar(p, m, v, g, n, c, static_cast<c10::BFloat16*>(out));
      break;
    case WorkingType::kFloat16: adamw_scalar(p, m, v, g, n, c, static_cast<c10::Half*>(out)); break;
  }
}

#if defined(__x86_64__)
// AVX2 + FMA: 8 floats a step. bf16 is rounded to nearest even (NaN stays NaN), as c10 does.
template <typename G>
__attribute__((target("avx2,fma,f16c"))) void adamw_avx2(float* p, float* m, float* v,
                                                         const G* g, int64_t n,
                                                         const AdamConsts& c, void* out,
                                                         WorkingType t) {
  const __m256 b1 = _mm256_set1_ps(c.b1), b2 = _mm256_set1_ps(c.b2);
  const __m256 ob1 = _mm256_set1_ps(c.one_b1), ob2 = _mm256_set1_ps(c.one_b2);
  const __m256 sc = _mm256_set1_ps(c.scale), wd = _mm256_set1_ps(c.wd_mul);
  const __m256 ss = _mm256_set1_ps(c.step_size), ibc2 = _mm256_set1_ps(c.inv_sqrt_bc2);
  const __m256 eps = _mm256_set1_ps(c.eps);
  const __m256i round = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
  const __m256i qnan = _mm256_set1_epi32(0x7FC0);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 graw;
    if constexpr (std::is_same_v<G, float>) {
      graw = _mm256_loadu_ps(g + i);
    } else if constexpr (std::is_same_v<G, c10::Half>) {
      graw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + i)));
    } else {  // bf16 -> fp32: the 16 bits become the high half
      graw = _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + i))), 16));
    }
    const __m256 gi = _mm256_mul_ps(graw, sc);
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), wd);
    const __m256 mi = _mm256_fmadd_ps(b1, _mm256_loadu_ps(m + i), _mm256_mul_ps(ob1, gi));
    const __m256 vi = _mm256_fmadd_ps(b2, _mm256_loadu_ps(v + i), _mm256_mul_ps(_mm256_mul_ps(ob2, gi), gi));
    const __m256 denom = _mm256_fmadd_ps(_mm256_sqrt_ps(vi), ibc2, eps);
    const __m256 pn = _mm256_fnmadd_ps(ss, _mm256_div_ps(mi, denom), pi);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(p + i, pn);
    if (t == WorkingType::kFloat32) {
      _mm256_storeu_ps(static_cast<float*>(out) + i, pn);
    } else if (t == WorkingType::kBFloat16) {
      const __m256i bits = _mm256_castps_si256(pn);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
      __m256i r = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(round, lsb)), 16);
      const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(pn, pn, _CMP_UNORD_Q));
      r = _mm256_blendv_epi8(r, qnan, nan);
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0b1000);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i),
                       _mm256_castsi256_si128(packed));
    } else if (t == WorkingType::kFloat16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i),
                       _mm256_cvtps_ph(pn, _MM_FROUND_TO_NEAREST_INT));
    }
  }
  const size_t es = t == WorkingType::kFloat32 ? 4 : 2;
  scalar_dispatch(p + i, m + i, v + i, g + i, n - i, c,
                  out ? static_cast<char*>(out) + i * es : nullptr, t);
}

// AVX-512F: 16 floats a step.
template <typename G>
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))) void adamw_avx512(
    float* p, float* m, float* v, const G* g, int64_t n, const AdamConsts& c, void* out,
    WorkingType t) {
  const __m512 b1 = _mm512_set1_ps(c.b1), b2 = _mm512_set1_ps(c.b2);
  const __m512 ob1 = _mm512_set1_ps(c.one_b1), ob2 = _mm512_set1_ps(c.one_b2);
  const __m512 sc = _mm512_set1_ps(c.scale), wd = _mm512_set1_ps(c.wd_mul);
  const __m512 ss = _mm512_set1_ps(c.step_size), ibc2 = _mm512_set1_ps(c.inv_sqrt_bc2);
  const __m512 eps = _mm512_set1_ps(c.eps);
  const __m512i round = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
  const __m512i qnan = _mm512_set1_epi32(0x7FC0);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 graw;
    if constexpr (std::is_same_v<G, float>) {
      graw = _mm512_loadu_ps(g + i);
    } else if constexpr (std::is_same_v<G, c10::Half>) {
      graw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + i)));
    } else {  // bf16 -> fp32: the 16 bits become the high half
      graw = _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + i))), 16));
    }
    const __m512 gi = _mm512_mul_ps(graw, sc);
    const __m512 pi = _mm512_mul_ps(_mm512_loadu_ps(p + i), wd);
    const __m512 mi = _mm512_fmadd_ps(b1, _mm512_loadu_ps(m + i), _mm512_mul_ps(ob1, gi));
    const __m512 vi = _mm512_fmadd_ps(b2, _mm512_loadu_ps(v + i), _mm512_mul_ps(_mm512_mul_ps(ob2, gi), gi));
    const __m512 denom = _mm512_fmadd_ps(_mm512_sqrt_ps(vi), ibc2, eps);
    const __m512 pn = _mm512_fnmadd_ps(ss, _mm512_div_ps(mi, denom), pi);
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    _mm512_storeu_ps(p + i, pn);
    if (t == WorkingType::kFloat32) {
      _mm512_storeu_ps(static_cast<float*>(out) + i, pn);
    } else if (t == WorkingType::kBFloat16) {
      const __m512i bits = _mm512_castps_si512(pn);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
      __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(round, lsb)), 16);
      r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(pn, pn, _CMP_UNORD_Q), qnan);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(out) + i),
                          _mm512_cvtepi32_epi16(r));
    } else if (t == WorkingType::kFloat16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(out) + i),
                          _mm512_cvtps_ph(pn, _MM_FROUND_TO_NEAREST_INT));
    }
  }
  const size_t es = t == WorkingType::kFloat32 ? 4 : 2;
  scalar_dispatch(p + i, m + i, v + i, g + i, n - i, c,
                  out ? static_cast<char*>(out) + i * es : nullptr, t);
}
#endif

}  // namespace

bool adam_isa_supported(AdamIsa isa) {
#if defined(__x86_64__)
  switch (isa) {
    case AdamIsa::kBest:
    case AdamIsa::kScalar: return true;
    case AdamIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case AdamIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && adam_isa_supported(AdamIsa::kAvx2);
  }
  return false;
#else
  return isa == AdamIsa::kScalar || isa == AdamIsa::kBest;
#endif
}

AdamIsa adam_best_isa() {
  static const AdamIsa best = adam_isa_supported(AdamIsa::kAvx512) ? AdamIsa::kAvx512
                              : adam_isa_supported(AdamIsa::kAvx2)  ? AdamIsa::kAvx2
                                                                    : AdamIsa::kScalar;
  return best;
}

const char* adam_isa_name(AdamIsa isa) {
  switch (isa) {
    case AdamIsa::kBest: return adam_isa_name(adam_best_isa());
    case AdamIsa::kScalar: return "scalar";
    case AdamIsa::kAvx2: return "avx2";
    case AdamIsa::kAvx512: return "avx512";
  }
  return "?";
}

namespace {
template <typename G>
void adamw_typed(float* p, float* m, float* v, const G* g, int64_t n, const AdamConsts& c,
                 void* out, WorkingType out_type, AdamIsa isa) {
#if defined(__x86_64__)
  if (isa == AdamIsa::kAvx512) return adamw_avx512(p, m, v, g, n, c, out, out_type);
  if (isa == AdamIsa::kAvx2) return adamw_avx2(p, m, v, g, n, c, out, out_type);
#endif
  scalar_dispatch(p, m, v, g, n, c, out, out_type);
}
}  // namespace

void adamw_fused(float* p, float* m, float* v, const void* g, int64_t n, const AdamHyper& h,
                 bool decay, void* out, WorkingType out_type, AdamIsa isa, GradType g_type) {
  const AdamConsts c(h, decay);
  if (isa == AdamIsa::kBest) isa = adam_best_isa();
  if (g_type == GradType::kBFloat16)
    adamw_typed(p, m, v, static_cast<const c10::BFloat16*>(g), n, c, out, out_type, isa);
  else if (g_type == GradType::kFloat16)
    adamw_typed(p, m, v, static_cast<const c10::Half*>(g), n, c, out, out_type, isa);
  else
    adamw_typed(p, m, v, static_cast<const float*>(g), n, c, out, out_type, isa);
}

void adamw_parallel(ThreadPool& pool, float* p, float* m, float* v, const void* g, int64_t n,
                    const AdamHyper& h, bool decay, void* out, WorkingType out_type, AdamIsa isa,
                    GradType g_type) {
  const size_t esize = out_type == WorkingType::kFloat32 ? 4 : out_type == WorkingType::kNone ? 0 : 2;
  const size_t gsize = g_type == GradType::kFloat32 ? 4 : 2;
  pool.parallel_for(n, 64, [&](int64_t b, int64_t e) {
    void* o = out ? static_cast<char*>(out) + b * esize : nullptr;
    adamw_fused(p + b, m + b, v + b, static_cast<const char*>(g) + b * gsize, e - b, h, decay, o,
                out_type, isa, g_type);
  });
}

}  // namespace xy
