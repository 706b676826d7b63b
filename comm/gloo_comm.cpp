// Gloo communicators through LibTorch's c10d ProcessGroupGloo (the CPU data plane).
//
// Gloo in LibTorch 1.13 has no reduce_scatter and no flat all-gather; both are built here over what
// it has: all-gather over the list form with views of one flat output, and reduce-scatter over
// point-to-point send/recv in the buffer's precision (comm/gloo_reduce_scatter.hpp: each rank moves
// (world - 1) / world of the buffer, as a ring would).
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <system_error>
#include <stdexcept>
#include <thread>

#include "comm/c10d_store.hpp"
#include "comm/comm.hpp"
#include "comm/gloo_reduce_scatter.hpp"
#include "io/threads.hpp"

namespace xy {
namespace {

class GlooOp : public CommOp {
 public:
  GlooOp(c10::intrusive_ptr<c10d::Work> work, std::string what, std::function<void()> finish)
      : work_(std::move(work)), what_(std::move(what)), finish_(std::move(finish)) {}
  void wait() override {
    if (done_) return;
    try {
      work_->wait();
    } catch (const std::exception& e) {
      throw std::runtime_error("gloo " + what_ + " failed: " + e.what());
    }
    if (finish_) finish_();
    done_ = true;
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
  std::function<void()> finish_;
  bool done_ = false;
};

class GlooComm : public Comm {
 public:
  GlooComm(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg) : pg_(pg), rs_(std::move(pg)) {}
  int rank() const override { return pg_->getRank(); }
  int size() const override { return pg_->getSize(); }
  std::string backend() const override { return "gloo"; }

  std::unique_ptr<CommOp> all_gather(const at::Tensor& shard, const at::Tensor& full) override {
    const int64_t n = shard.numel();
    check_split("all_gather", full, shard);
    // Gloo in LibTorch 1.13 has no bf16 (nor int16): an all-gather only moves bytes, so bf16
    // moves as fp16.
    const bool bits16 = full.scalar_type() == at::kBFloat16;
    const at::Tensor f = bits16 ? full.view(at::kHalf) : full;
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < size(); ++r) out[0].push_back(f.narrow(0, r * n, n));
    std::vector<at::Tensor> in{bits16 ? shard.view(at::kHalf) : shard};
    const uint64_t s = next_seq();
    return std::make_unique<GlooOp>(pg_->allgather(out, in), "all-gather #" + std::to_string(s),
                                    nullptr);
  }

  std::unique_ptr<CommOp> reduce_scatter(const at::Tensor& full, const at::Tensor& shard) override {
    check_split("reduce_scatter", full, shard);
    const uint64_t s = next_seq();
    return rs_.start(full, shard, "reduce-scatter #" + std::to_string(s));
  }

  std::unique_ptr<CommOp> all_reduce(const at::Tensor& t) override {
    const uint64_t s = next_seq();
    if (is16(t)) {  // summed in fp32, written back at wait()
      std::vector<at::Tensor> v{t.to(at::kFloat)};
      at::Tensor sum = v[0], dst = t;
      return std::make_unique<GlooOp>(pg_->allreduce(v), "all-reduce #" + std::to_string(s),
                                      [sum, dst]() mutable { dst.copy_(sum); });
    }
    std::vector<at::Tensor> v{t};
    return std::make_unique<GlooOp>(pg_->allreduce(v), "all-reduce #" + std::to_string(s), nullptr);
  }

  static bool is16(const at::Tensor& t) {
    return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
  }

  std::unique_ptr<CommOp> broadcast(const at::Tensor& t, int root) override {
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    const uint64_t s = next_seq();
    return std::make_unique<GlooOp>(pg_->broadcast(v, opts), "broadcast #" + std::to_string(s),
                                    nullptr);
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  GlooReduceScatter rs_;  // its thread (world > 1) ends before the process group goes
};


}  // namespace

CommGroup make_gloo_comms(int world, int first_rank, int local, const std::string& bind_host,
                          const std::string& store_host, int store_port, bool is_store_server,
                          double timeout_s, const NodeGroups* groups) {
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  CommGroup group;
  auto kv = open_job_store(world, local, store_host, store_port, is_store_server, timeout_s);
  group.store = kv;
  group.comms.resize(local);
  if (groups) {
    group.shard.resize(local);
    group.replica.resize(local);
  }
  std::vector<std::string> errors(local);
  std::vector<char> refused(local, 0);  // a thread inside the process group could not start
  // Threads are started before any rendezvous (a refused thread must not leave the others waiting
  // for it until the timeout): each device (it starts its I/O loop thread) here, then one thread
  // per rank that waits at a gate until all are started.
  std::vector<decltype(c10d::ProcessGroupGloo::createDeviceForHostname(bind_host))> devices;
  for (int l = 0; l < local; ++l) {
    try {
      devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind_host));
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::resource_unavailable_try_again) throw;  // not a refused thread
      throw ThreadStartError("cannot start the Gloo I/O thread of rank " + std::to_string(first_rank + l) +
                             ": " + e.what() + " (too many threads, or too little address space for "
                             "their stacks: check ulimit -u and ulimit -v)");
    }
  }
  // At the peak: a set-up thread per rank plus the 2 worker threads each process group starts
  // after its rendezvous (where a refused one ends in std::terminate inside c10d) and the
  // communicator's reduce-scatter thread.
  check_threads_available((groups ? 10 : 4) * local,
                          "the Gloo process groups of " + std::to_string(local) +
                              " local ranks (a set-up thread, 2 workers and a reduce-scatter "
                              "thread each" + (groups ? ", and 2 workers and a reduce-scatter "
                                                        "thread for each of node sharding's 2 groups"
                                                      : "") + ")");
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  int gate = 0;  // 1: all started, go; -1: one was refused, return at once
  auto set_gate = [&](int v) {
    {
      std::lock_guard<std::mutex> lock(gate_mu);
      gate = v;
    }
    gate_cv.notify_all();
  };
  // Each process group's constructor rendezvouses with the others: build them concurrently.
  std::vector<std::thread> threads;
  try {
    for (int l = 0; l < local; ++l) {
      threads.push_back(start_thread("the Gloo set-up thread of rank " + std::to_string(first_rank + l), [&, l] {
        {
          std::unique_lock<std::mutex> lock(gate_mu);
          gate_cv.wait(lock, [&] { return gate != 0; });
          if (gate < 0) return;
        }
        try {
          auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
          opts->devices.push_back(devices[l]);
          opts->threads = 2;
          auto rank_store = store_for_local_rank(*kv, store_host, store_port, timeout_s);
          auto prefixed = c10::make_intrusive<c10d::PrefixStore>("gloo", rank_store);
          group.comms[l] = std::make_shared<GlooComm>(
              c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, first_rank + l, world, opts));
          // Node sharding: the shard group (this node's ranks) and the replica group (local
          // index l on every node), in the same order on every rank, over the same device.
          if (groups) {
            const std::string node = std::to_string(groups->node), index = std::to_string(l);
            group.shard[l] = std::make_shared<GlooComm>(c10::make_intrusive<c10d::ProcessGroupGloo>(
                c10::make_intrusive<c10d::PrefixStore>("gloo/shard/" + node, rank_store), l, local, opts));
            group.replica[l] = std::make_shared<GlooComm>(c10::make_intrusive<c10d::ProcessGroupGloo>(
                c10::make_intrusive<c10d::PrefixStore>("gloo/replica/" + index, rank_store),
                groups->node, groups->nodes, opts));
          }
        } catch (const std::system_error& e) {  // its threads (started after the rendezvous)
          refused[l] = e.code() == std::errc::resource_unavailable_try_again;
          errors[l] = (refused[l] ? "cannot start its worker threads: " : "") + std::string(e.what());
        } catch (const std::exception& e) {
          errors[l] = e.what();
        }
      }));
    }
  } catch (const ThreadStartError&) {
    set_gate(-1);
    for (auto& t : threads) t.join();
    throw;
  }
  set_gate(1);
  for (auto& t : threads) t.join();
  for (int l = 0; l < local; ++l)
    if (refused[l])
      throw ThreadStartError("Gloo process group of rank " + std::to_string(first_rank + l) + ": " +
                             errors[l] + " (too many threads, or too little address space for their "
                             "stacks: check ulimit -u and ulimit -v)");
  for (int l = 0; l < local; ++l)
    if (!errors[l].empty())
      throw std::runtime_error("gloo rendezvous of rank " + std::to_string(first_rank + l) +
                               " (bound to " + bind_host + ") failed: " + errors[l]);
  return group;
}

std::shared_ptr<KeyValueStore> connect_store(const std::string& host, int port, double timeout_s) {
  return std::make_shared<C10dStore>(
      tcp_store(host, port, /*is_server=*/false, timeout_s, store_credentials()));
}

std::vector<std::shared_ptr<Comm>> make_local_gloo_comms(int world, const std::string& host,
                                                         double timeout_s) {
  return make_gloo_comms(world, 0, world, host, "", 0, false, timeout_s).comms;
}

}  // namespace xy
