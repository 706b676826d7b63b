// The reduce-scatter over Gloo's send/recv (see gloo_reduce_scatter.hpp for the algorithm and
// where rounding happens).
#include "comm/gloo_reduce_scatter.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace xy {
namespace {

struct OpState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string error;  // empty: succeeded
};

struct Job {
  at::Tensor full, shard;
  int tag = 0;
  std::shared_ptr<OpState> state;
};

class PendingOp : public CommOp {
 public:
  PendingOp(std::shared_ptr<OpState> state, std::string what)
      : state_(std::move(state)), what_(std::move(what)) {}
  void wait() override {
    if (waited_) return;
    std::string error;
    {
      std::unique_lock<std::mutex> lock(state_->mu);
      state_->cv.wait(lock, [&] { return state_->done; });
      error = state_->error;
    }
    if (!error.empty()) throw std::runtime_error("gloo " + what_ + " failed: " + error);
    waited_ = true;
  }

 private:
  std::shared_ptr<OpState> state_;
  std::string what_;
  bool waited_ = false;
};

class DoneOp : public CommOp {
 public:
  void wait() override {}
};

// One operation: wire type T (the buffer's), accumulator type A (fp32 for 16-bit and fp32, fp64
// for fp64).
template <class T, class A>
void exchange(c10d::ProcessGroupGloo& pg, const at::Tensor& full, const at::Tensor& shard, int tag) {
  const int world = pg.getSize(), r = pg.getRank();
  const int64_t n = shard.numel();
  if (n == 0) return;
  // Every send is posted at once (round k: to rank r+k its slice). Gloo's unbound buffers move the
  // bytes once the peer has posted the matching recv, so nothing is buffered beyond `full`.
  std::vector<c10::intrusive_ptr<c10d::Work>> sends;
  for (int k = 1; k < world; ++k) {
    const int dst = (r + k) % world;
    std::vector<at::Tensor> t{full.narrow(0, dst * n, n)};
    sends.push_back(pg.send(t, dst, tag));
  }
  // Round k receives rank r-k's contribution to this rank's slice, into one of two buffers: round
  // k+1's arrives while round k's is added.
  at::Tensor bufs[2] = {at::empty({n}, full.options()), at::empty({n}, full.options())};
  auto post = [&](int k) {
    std::vector<at::Tensor> t{bufs[k % 2]};
    return pg.recv(t, (r - k + world) % world, tag);
  };
  auto recv = post(1);
  const auto acc_type = c10::CppTypeToScalarType<A>::value;
  const bool in_place = shard.scalar_type() == acc_type;  // the shard is the accumulator
  at::Tensor acc = in_place ? shard : at::empty({n}, full.options().dtype(acc_type));
  A* a = acc.data_ptr<A>();
  const T* own = full.data_ptr<T>() + r * n;
  for (int64_t i = 0; i < n; ++i) a[i] = static_cast<A>(own[i]);  // widening: exact
  for (int k = 1; k < world; ++k) {
    recv->wait();
    const T* b = bufs[k % 2].data_ptr<T>();
    if (k + 1 < world) recv = post(k + 1);  // into the buffer of round k-1, already added
    for (int64_t i = 0; i < n; ++i) a[i] += static_cast<A>(b[i]);  // rounded to A per add
  }
  for (auto& s : sends) s->wait();
  if (!in_place) shard.copy_(acc);  // the one rounding, to the shard's type (to nearest even)
}

void run_job(c10d::ProcessGroupGloo& pg, const Job& job) {
  switch (job.full.scalar_type()) {
    case at::kFloat: return exchange<float, float>(pg, job.full, job.shard, job.tag);
    case at::kDouble: return exchange<double, double>(pg, job.full, job.shard, job.tag);
    case at::kBFloat16: return exchange<c10::BFloat16, float>(pg, job.full, job.shard, job.tag);
    case at::kHalf: return exchange<c10::Half, float>(pg, job.full, job.shard, job.tag);
    default: throw std::logic_error("unsupported dtype");  // refused by start()
  }
}

}  // namespace

struct GlooReduceScatter::Worker {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> jobs;  // guarded by mu
  bool stop = false;     // guarded by mu
  std::thread thread;    // joined by ~GlooReduceScatter

  static void finish(const Job& job, std::string error) {
    {
      std::lock_guard<std::mutex> lock(job.state->mu);
      job.state->done = true;
      job.state->error = std::move(error);
    }
    job.state->cv.notify_all();
  }

  void loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || !jobs.empty(); });
        if (stop) {
          for (const Job& j : jobs) finish(j, "the communicator was closed before it ran");
          jobs.clear();
          return;
        }
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      std::string error;
      try {
        run_job(*pg, job);
      } catch (const c10::Error& e) {
        error = e.what_without_backtrace();
      } catch (const std::exception& e) {
        error = std::string(e.what()).empty() ? "an exception without a message" : e.what();
      } catch (...) {
        error = "an unknown exception";
      }
      job.full = at::Tensor();  // the caller may free them as soon as wait() returns
      job.shard = at::Tensor();
      finish(job, error);
    }
  }
};

GlooReduceScatter::GlooReduceScatter(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg)
    : pg_(std::move(pg)) {
  if (pg_->getSize() < 2) return;
  worker_ = std::make_shared<Worker>();
  worker_->pg = pg_;
  // std::thread: a refused thread is a std::system_error, which make_gloo_comms reports as such.
  worker_->thread = std::thread([w = worker_] { w->loop(); });
}

GlooReduceScatter::~GlooReduceScatter() {
  if (!worker_) return;
  {
    std::lock_guard<std::mutex> lock(worker_->mu);
    worker_->stop = true;
  }
  worker_->cv.notify_all();
  if (worker_->thread.joinable()) worker_->thread.join();
}

std::unique_ptr<CommOp> GlooReduceScatter::start(const at::Tensor& full, const at::Tensor& shard,
                                                 std::string what) {
  const auto t = full.scalar_type();
  if (t != at::kFloat && t != at::kDouble && t != at::kBFloat16 && t != at::kHalf)
    throw std::invalid_argument(what + ": gloo reduces fp32, fp64, bf16 and fp16, not " +
                                std::string(c10::toString(t)));
  if (!full.is_cpu() || !shard.is_cpu() || !full.is_contiguous() || !shard.is_contiguous())
    throw std::invalid_argument(what + ": gloo needs contiguous CPU tensors");
  if (!worker_) {  // one rank: its own slice, nothing to send
    shard.copy_(full);
    return std::make_unique<DoneOp>();
  }
  Job job;
  job.full = full;
  job.shard = shard;
  // The tag keeps operations apart on the wire; every rank starts them in the same order, so the
  // count is the same everywhere. (Gloo's collectives use slots with a prefix in the top byte.)
  job.tag = static_cast<int>(started_++ % (1u << 24));
  job.state = std::make_shared<OpState>();
  auto op = std::make_unique<PendingOp>(job.state, std::move(what));
  {
    std::lock_guard<std::mutex> lock(worker_->mu);
    worker_->jobs.push_back(std::move(job));
  }
  worker_->cv.notify_one();
  return op;
}

}  // namespace xy
