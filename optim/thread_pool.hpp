// A fixed pool of worker threads for data-parallel loops (CPU Adam). parallel_for splits [0, n)
// into one contiguous chunk per thread (aligned to `align` elements) and blocks until all are done.
// Callers are serialised (the node's optimizer-offload actors share one pool); the caller's thread
// runs chunk 0 itself.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace xy {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads >= 1 (0 = hardware concurrency)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // fn(begin, end) over disjoint chunks covering [0, n).
  void parallel_for(int64_t n, int64_t align, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker(int index);

  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  // Guarded by mu_:
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  int64_t n_ = 0, chunk_ = 0;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
};

}  // namespace xy
