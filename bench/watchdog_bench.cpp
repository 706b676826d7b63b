// The watchdog's cost on a step: what one registered operation costs (OpRegistry::begin + end,
// with 1-4 threads registering at once, as ranks do), what one watchdog poll costs
// (first_overdue) with the ops of a busy node in flight, and what a /status or stall snapshot
// (to_json) costs. The overhead on a step is
//     ops_per_step_per_rank x ranks_per_node x cost_per_op / step_time + poll_cost / poll_interval
// with ops_per_step_per_rank ~= 9 x units (gather, wait-gather, compute, reduce, Adam per unit, and
// on the order of one more per unit for prefetched gathers) plus a few per step.
// usage: watchdog_bench [units]   (default 34: Llama-2-7B's 32 blocks + embedding + head)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "health/registry.hpp"

using xy::Clock;
using xy::OpRegistry;

namespace {

double ns_per_op(int threads, int iters) {
  OpRegistry reg;
  std::vector<std::thread> ts;
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&reg, t, iters] {
      for (int i = 0; i < iters; ++i) {
        const uint64_t id = reg.begin(i % 3 == 0 ? "all-gather" : "forward", t, i % 34,
                                      i % 3 == 0 ? static_cast<uint64_t>(i + 1) : 0, i / 100 + 1, 120);
        reg.end(id);
      }
    });
  for (auto& t : ts) t.join();
  // Wall time per operation of one thread (what a rank pays), contention included.
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / iters;
}

}  // namespace

int main(int argc, char** argv) {
  const int units = argc > 1 ? std::atoi(argv[1]) : 34;
  const int iters = 200000;
  std::printf("registry begin+end, wall ns per operation per thread (threads = ranks registering at once)\n");
  std::printf("%8s %12s\n", "threads", "ns/op");
  double worst = 0;
  for (int threads : {1, 2, 4}) {
    ns_per_op(threads, iters / 10);  // warm-up
    const double ns = ns_per_op(threads, iters);
    worst = std::max(worst, ns);
    std::printf("%8d %12.0f\n", threads, ns);
  }
  // A busy node: 8 ranks with ~6 operations each in flight.
  OpRegistry reg;
  for (int r = 0; r < 8; ++r)
    for (int k = 0; k < 6; ++k) reg.begin(k % 2 ? "all-gather" : "backward", r, k, k % 2 ? 100 + k : 0, 5, 120);
  for (int r = 0; r < 8; ++r) reg.set_status({r, 5, "backward", 3, 0, 0});
  const int polls = 20000;
  auto t0 = Clock::now();
  size_t found = 0;
  for (int i = 0; i < polls; ++i) found += reg.first_overdue(Clock::now()).has_value();
  const double poll_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / polls;
  t0 = Clock::now();
  size_t bytes = 0;
  for (int i = 0; i < 2000; ++i) bytes += reg.to_json(Clock::now(), 0, "node").dump().size();
  const double json_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / 2000;
  std::printf("\nwatchdog poll (first_overdue, 48 ops in flight): %.2f us (found %zu)\n", poll_us, found);
  std::printf("snapshot for /status or a stall report (to_json + dump, 48 ops): %.1f us (%zu bytes each)\n",
              json_us, bytes / 2000);

  const double ops_per_step = 9.0 * units + 4;
  std::printf("\noverhead on a step = ops/step x ns/op / step time + poll / poll interval (200 ms)\n");
  std::printf("ops/step per rank for %d units: %.0f; worst ns/op above: %.0f\n", units, ops_per_step, worst);
  std::printf("%14s %12s\n", "step time", "overhead");
  for (double step_s : {0.05, 0.1, 1.0, 10.0}) {
    const double overhead = ops_per_step * worst * 1e-9 / step_s + poll_us * 1e-6 / 0.2;
    std::printf("%12.2f s %11.4f%%\n", step_s, overhead * 100);
  }
  return 0;
}
