// Device AdamW benchmark (CUDA build only): the fused device kernel (optim/adam_device.*) over N
// elements of fp32 master, m and v, against the device's copy bandwidth and the CPU kernel on this
// machine's cores, measured in the same run.
//
// Formulas (printed with the table):
//   bytes/elem = 16 read (p, m, v, fp32 g) + 12 written (p, m, v) + 2 (bf16 working copy) = 30,
//                or 28 with a bf16 gradient (the reduce-scatter's output in a bf16 run)
//   GB/s       = bytes/elem * N / step time;  elem/s = N / step time
//   of copy    = GB/s / the device's copy bandwidth (read + write bytes of a 4 GiB copy a second)
//   CPU        = the CPU kernel (adamw_parallel, fp32 gradient, bf16 working copy: 30 B/elem) on
//                all hardware threads over 1e8 elements (as bench/adam_bench.cpp)
// usage: adam_device_bench [repeats (default 10)] [N ... (default 1e8 2.5e8 5e8 1e9)]
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "optim/adam.hpp"
#include "optim/adam_device.hpp"
#include "optim/thread_pool.hpp"

using namespace xy;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds of one call of f on `stream`, the median of `repeats` after a warm-up, by CUDA events.
template <class F>
double device_time(cudaStream_t stream, int repeats, F&& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  f();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    cudaEventRecord(a, stream);
    f();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
  std::vector<int64_t> sizes;
  for (int i = 2; i < argc; ++i) sizes.push_back(static_cast<int64_t>(std::atof(argv[i])));
  if (sizes.empty()) sizes = {100000000, 250000000, 500000000, 1000000000};
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "adam_device_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const at::Device dev(at::kCUDA, 0);
  const auto f32 = at::TensorOptions(dev).dtype(at::kFloat);
  const c10::cuda::CUDAStream cs = c10::cuda::getCurrentCUDAStream(0);
  const cudaStream_t stream = cs.stream();
  std::printf("device AdamW on %s, median of %d after a warm-up\n", prop.name, repeats);

  double copy_bw = 0;
  {
    at::Tensor a = at::ones({int64_t{1} << 30}, f32), b = at::empty_like(a);  // 4 GiB each
    const double t = device_time(stream, repeats, [&] { b.copy_(a); });
    copy_bw = 2.0 * 4.0 * static_cast<double>(a.numel()) / t;
    std::printf("device copy bandwidth (read + write): %.0f GB/s\n\n", copy_bw / 1e9);
  }

  std::printf("%14s %5s %10s %10s %12s %9s\n", "N", "grad", "ms/step", "GB/s", "Gelem/s", "of copy");
  double best_eps = 0;
  for (int64_t n : sizes) {
    at::manual_seed(0);
    at::Tensor p = at::randn({n}, f32), m = at::zeros({n}, f32), v = at::zeros({n}, f32);
    at::Tensor g32 = at::randn({n}, f32), g16 = g32.to(at::kBFloat16);
    at::Tensor out = at::empty({n}, f32.dtype(at::kBFloat16));
    // A few no-decay ranges (norms): the kernel's per-element decay test is part of the cost.
    std::vector<ElemRange> nd;
    for (int k = 0; k < 4; ++k) nd.push_back({n / 4 * k, std::min(n, n / 4 * k + 4096)});
    AdamHyper h;
    h.lr = 1e-3;
    h.weight_decay = 0.1;
    h.grad_scale = 0.5;
    const c10::Stream s = cs.unwrap();
    for (const at::Tensor* g : {&g32, &g16}) {
      int64_t step = 0;
      const double t = device_time(stream, repeats, [&] {
        h.step = ++step;
        adamw_device(p, m, v, *g, out, h, nd, s);
      });
      const double bytes = g->scalar_type() == at::kFloat ? 30.0 : 28.0;
      const double gbs = bytes * static_cast<double>(n) / t / 1e9;
      best_eps = std::max(best_eps, static_cast<double>(n) / t);
      std::printf("%14lld %5s %10.3f %10.0f %12.2f %8.0f%%\n", static_cast<long long>(n),
                  g->scalar_type() == at::kFloat ? "fp32" : "bf16", t * 1e3, gbs,
                  static_cast<double>(n) / t / 1e9, 100.0 * gbs * 1e9 / copy_bw);
    }
    if (!at::isfinite(p.narrow(0, 0, std::min<int64_t>(n, 1 << 20))).all().item<bool>()) {
      std::printf("FAILED: non-finite master after the steps\n");
      return 1;
    }
  }

  // The CPU kernel in the same run, as the optimizer runs it today.
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  const int64_t n = 100000000;
  at::Tensor p = at::randn({n}), m = at::zeros({n}), v = at::zeros({n}), g = at::randn({n});
  at::Tensor out = at::empty({n}, at::kBFloat16);
  ThreadPool pool(threads);
  AdamHyper h;
  h.weight_decay = 0.1;
  std::vector<double> t;
  for (int i = 0; i <= std::min(repeats, 5); ++i) {
    h.step = i + 1;
    const auto t0 = std::chrono::steady_clock::now();
    adamw_parallel(pool, p.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(),
                   g.data_ptr<float>(), n, h, true, out.data_ptr(), WorkingType::kBFloat16);
    if (i > 0) t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double tc = median(t);
  std::printf("\nCPU kernel (%s, %d threads) at N = %lld: %.1f ms/step, %.1f GB/s, %.2f Gelem/s\n",
              adam_isa_name(AdamIsa::kBest), threads, static_cast<long long>(n), tc * 1e3,
              30.0 * n / tc / 1e9, n / tc / 1e9);
  std::printf("device / CPU, elements a second (best device figure): %.1fx\n", best_eps / (n / tc));
  std::printf("\nGB/s = bytes/elem * N / time (30 B fp32 gradient, 28 B bf16); of copy = GB/s / "
              "the device's copy bandwidth.\n");
  return 0;
}
