// Fused CPU AdamW (see adam.hpp) and the thread pool it runs on. The loop is written so that the
// compiler vectorises it (no aliasing, no branches in the body); explicit AVX2/AVX-512 paths with
// run-time dispatch are the next step.
#include "actors/adam.hpp"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "actors/thread_pool.hpp"

namespace xy {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker(i); });
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

namespace {

template <typename Out>
void adamw_loop(float* __restrict p, float* __restrict m, float* __restrict v,
                const float* __restrict g, int64_t n, const AdamHyper& h, bool decay,
                Out* __restrict out) {
  const float b1 = static_cast<float>(h.beta1), b2 = static_cast<float>(h.beta2);
  const float one_b1 = static_cast<float>(1.0 - h.beta1), one_b2 = static_cast<float>(1.0 - h.beta2);
  const float scale = static_cast<float>(h.grad_scale);
  const float wd_mul = decay ? static_cast<float>(1.0 - h.lr * h.weight_decay) : 1.0f;
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
  const float step_size = static_cast<float>(h.lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float eps = static_cast<float>(h.eps);
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * scale;
    const float pi = p[i] * wd_mul;
    const float mi = b1 * m[i] + one_b1 * gi;
    const float vi = b2 * v[i] + one_b2 * gi * gi;
    const float denom = std::sqrt(vi) * inv_sqrt_bc2 + eps;
    const float pn = pi - step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
    p[i] = pn;
    if constexpr (!std::is_same_v<Out, void>) out[i] = static_cast<Out>(pn);
  }
}

}  // namespace

void adamw_fused(float* p, float* m, float* v, const float* g, int64_t n, const AdamHyper& h,
                 bool decay, void* out, WorkingType out_type) {
  switch (out_type) {
    case WorkingType::kNone: adamw_loop<void>(p, m, v, g, n, h, decay, nullptr); break;
    case WorkingType::kFloat32:
      adamw_loop(p, m, v, g, n, h, decay, static_cast<float*>(out));
      break;
    case WorkingType::kBFloat16:
      adamw_loop(p, m, v, g, n, h, decay, static_cast<c10::BFloat16*>(out));
      break;
    case WorkingType::kFloat16:
      adamw_loop(p, m, v, g, n, h, decay, static_cast<c10::Half*>(out));
      break;
  }
}

void adamw_parallel(ThreadPool& pool, float* p, float* m, float* v, const float* g, int64_t n,
                    const AdamHyper& h, bool decay, void* out, WorkingType out_type) {
  const size_t esize = out_type == WorkingType::kFloat32 ? 4 : out_type == WorkingType::kNone ? 0 : 2;
  pool.parallel_for(n, 64, [&](int64_t b, int64_t e) {
    void* o = out ? static_cast<char*>(out) + b * esize : nullptr;
    adamw_fused(p + b, m + b, v + b, g + b, e - b, h, decay, o, out_type);
  });
}

}  // namespace xy
