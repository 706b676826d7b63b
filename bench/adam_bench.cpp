// CPU AdamW benchmark: xy's fused kernel vs LibTorch's torch::optim::AdamW on the same tensors, and
// against the host-memory floor, for 1, 2 and all threads.
//
// Formulas (printed with the table):
//   ns/param = step time / N
//   GB/s     = 30 bytes/param * N / step time   (reads p, m, v, g: 16 B; writes p, m, v: 12 B;
//                                                 writes the bf16 working copy: 2 B)
//   floor    = 30 bytes/param / copy bandwidth, the copy bandwidth measured here with the same
//              threads (bytes read + bytes written per second by a parallel memcpy)
// usage: adam_bench [N (default 2^26)] [repeats (default 5)]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "optim/adam.hpp"
#include "optim/thread_pool.hpp"

using namespace xy;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double time_median(int repeats, F&& f) {
  f();  // warm-up (page faults, caches)
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(t);
}

// Parallel memcpy of `bytes`: returns bytes moved (read + written) per second.
double copy_bandwidth(ThreadPool& pool, int64_t bytes, int repeats) {
  std::vector<char> a(bytes, 1), b(bytes, 0);
  const double t = time_median(repeats, [&] {
    pool.parallel_for(bytes, 4096, [&](int64_t s, int64_t e) { std::memcpy(b.data() + s, a.data() + s, e - s); });
  });
  return 2.0 * static_cast<double>(bytes) / t;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : (int64_t{1} << 26);
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  const int all = static_cast<int>(std::thread::hardware_concurrency());
  std::vector<int> thread_counts{1, 2, all};
  thread_counts.erase(std::unique(thread_counts.begin(), thread_counts.end()), thread_counts.end());
  std::printf("CPU AdamW, N = %lld parameters, kernel %s, %d hardware threads, median of %d\n",
              static_cast<long long>(n), adam_isa_name(AdamIsa::kBest), all, repeats);

  at::manual_seed(0);
  at::Tensor p = at::randn({n}), m = at::zeros({n}), v = at::zeros({n}), g = at::randn({n});
  at::Tensor out = at::empty({n}, at::kBFloat16);
  AdamHyper h;
  h.lr = 1e-3;
  h.weight_decay = 0.1;

  // Correctness first: one step of each against the other, from the same state.
  {
    at::Tensor ref = p.clone().requires_grad_(true);
    torch::optim::AdamW opt({ref}, torch::optim::AdamWOptions(h.lr).betas({h.beta1, h.beta2})
                                       .eps(h.eps).weight_decay(h.weight_decay));
    ref.mutable_grad() = g.clone();
    opt.step();
    at::Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
    ThreadPool pool(all);
    adamw_parallel(pool, p2.data_ptr<float>(), m2.data_ptr<float>(), v2.data_ptr<float>(),
                   g.data_ptr<float>(), n, h, true, out.data_ptr(), WorkingType::kBFloat16);
    const double err = ((p2 - ref.detach()).abs().max() / ref.detach().abs().max()).item<double>();
    std::printf("check: max relative difference to torch::optim::AdamW after one step: %.3g\n", err);
    if (err > 1e-6) {
      std::printf("FAILED: the kernels disagree\n");
      return 1;
    }
  }

  std::printf("\n%8s %12s %10s %14s %10s %12s %12s %10s\n", "threads", "xy ns/param", "xy GB/s",
              "torch ns/param", "xy speedup", "copy GB/s", "floor ns/p", "xy/floor");
  for (int t : thread_counts) {
    ThreadPool pool(t);
    const double bw = copy_bandwidth(pool, int64_t{1} << 30, repeats);
    int64_t step = 0;
    const double t_xy = time_median(repeats, [&] {
      h.step = ++step;
      adamw_parallel(pool, p.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(),
                     g.data_ptr<float>(), n, h, true, out.data_ptr(), WorkingType::kBFloat16);
    });
    at::set_num_threads(t);
    at::Tensor ref = p.clone().requires_grad_(true);
    ref.mutable_grad() = g.clone();
    torch::optim::AdamW opt({ref}, torch::optim::AdamWOptions(h.lr).weight_decay(h.weight_decay));
    const double t_torch = time_median(repeats, [&] { opt.step(); });
    const double ns_xy = t_xy / n * 1e9, ns_torch = t_torch / n * 1e9;
    const double floor_ns = 30.0 / bw * 1e9;
    std::printf("%8d %12.3f %10.1f %14.3f %9.2fx %12.1f %12.3f %9.2fx\n", t, ns_xy,
                30.0 * n / t_xy / 1e9, ns_torch, t_torch / t_xy, bw / 1e9, floor_ns, ns_xy / floor_ns);
  }
  std::printf("\nGB/s = 30 B/param * N / time; floor = 30 B/param / copy bandwidth (read + write).\n"
              "Targets: xy speedup >= 5x over torch::optim::AdamW, xy/floor <= 1.3 at all threads.\n");
  return 0;
}
