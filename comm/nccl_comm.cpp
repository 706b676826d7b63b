// NCCL communicators through LibTorch's c10d ProcessGroupNCCL (the CUDA data plane), built only
// with -DXY_CUDA=ON. Collectives are stream-ordered: each is enqueued after the work already on the
// calling thread's current stream, and CommOp::wait() makes the current stream wait for it
// without blocking the host. Link the NCCL that LibTorch loads (see CMakeLists.txt): one NCCL per
// process.
//
// The communicators are non-blocking (ncclConfig_t.blocking = 0; XY_NCCL_BLOCKING=1 turns that
// off) so that the watchdog can abort a stuck collective (ncclCommAbort, through
// ProcessGroupNCCL::abort) instead of leaving it spinning on the device; the process group's own
// thread polls ncclCommGetAsyncError and fails the collective's work with the NCCL error.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "comm/c10d_store.hpp"
#include "comm/comm.hpp"

namespace xy {
namespace {

// ProcessGroupNCCL's API differs between LibTorch versions: these pick what this one has.
template <class P>
auto abort_group(P& pg, int) -> decltype(pg.abort(), std::string()) {
  pg.abort();
  return "NCCL communicator aborted (ncclCommAbort)";
}
template <class P>
std::string abort_group(P&, long) {
  return "this LibTorch's ProcessGroupNCCL cannot abort; the process exit ends the communicator";
}
template <class O>
auto set_nonblocking(O& o, int) -> decltype(o.config.blocking = 0, bool()) {
  o.config.blocking = 0;
  return true;
}
template <class O>
bool set_nonblocking(O&, long) {
  return false;
}

class NcclOp : public CommOp {
 public:
  NcclOp(c10::intrusive_ptr<c10d::Work> work, std::string what)
      : work_(std::move(work)), what_(std::move(what)) {}
  void wait() override {
    if (done_) return;
    try {
      work_->wait();  // the current stream waits for the collective
    } catch (const std::exception& e) {
      throw std::runtime_error("nccl " + what_ + " failed: " + e.what());
    }
    done_ = true;
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
  bool done_ = false;
};

class NcclComm : public Comm {
 public:
  explicit NcclComm(c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg) : pg_(std::move(pg)) {}
  int rank() const override { return pg_->getRank(); }
  int size() const override { return pg_->getSize(); }
  std::string backend() const override { return "nccl"; }

  std::unique_ptr<CommOp> all_gather(const at::Tensor& shard, const at::Tensor& full) override {
    check_split("all_gather", full, shard);
    at::Tensor out = full, in = shard;
    const uint64_t s = next_seq();
    return std::make_unique<NcclOp>(pg_->_allgather_base(out, in), "all-gather #" + std::to_string(s));
  }
  std::unique_ptr<CommOp> reduce_scatter(const at::Tensor& full, const at::Tensor& shard) override {
    check_split("reduce_scatter", full, shard);
    at::Tensor out = shard, in = full;
    const uint64_t s = next_seq();
    return std::make_unique<NcclOp>(pg_->_reduce_scatter_base(out, in),
                                    "reduce-scatter #" + std::to_string(s));
  }
  std::unique_ptr<CommOp> all_reduce(const at::Tensor& t) override {
    std::vector<at::Tensor> v{t};
    const uint64_t s = next_seq();
    return std::make_unique<NcclOp>(pg_->allreduce(v), "all-reduce #" + std::to_string(s));
  }
  std::string abort() override { return abort_group(*pg_, 0); }

  std::unique_ptr<CommOp> broadcast(const at::Tensor& t, int root) override {
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    const uint64_t s = next_seq();
    return std::make_unique<NcclOp>(pg_->broadcast(v, o), "broadcast #" + std::to_string(s));
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg_;
};


}  // namespace

CommGroup make_nccl_comms(int world, int first_rank, int local, const std::string& store_host,
                          int store_port, bool is_store_server, double timeout_s,
                          const NodeGroups* groups) {
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  CommGroup group;
  bool nonblocking = false;
  auto kv = open_job_store(world, local, store_host, store_port, is_store_server, timeout_s);
  group.store = kv;
  for (int l = 0; l < local; ++l) {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    const char* blocking = std::getenv("XY_NCCL_BLOCKING");
    if (!(blocking && std::string(blocking) == "1")) nonblocking = set_nonblocking(*opts, 0);
    auto rank_store = store_for_local_rank(*kv, store_host, store_port, timeout_s);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("nccl", rank_store);
    // The communicator is created lazily by the first collective, on the device current then
    // (the rank's parameter-shard thread sets its device): all local ranks meet there.
    group.comms.push_back(std::make_shared<NcclComm>(
        c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, first_rank + l, world, opts)));
    register_for_abort(group.comms.back());
    // Node sharding: the shard group (this node's ranks) and the replica group (local index l on
    // every node), each its own NCCL communicator, created lazily like the first.
    if (groups) {
      group.shard.push_back(std::make_shared<NcclComm>(c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl/shard/" + std::to_string(groups->node), rank_store),
          l, local, opts)));
      group.replica.push_back(std::make_shared<NcclComm>(c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl/replica/" + std::to_string(l), rank_store),
          groups->node, groups->nodes, opts)));
      register_for_abort(group.shard.back());
      register_for_abort(group.replica.back());
    }
  }
  std::printf("xy: NCCL communicators: %s\n",
              nonblocking ? "non-blocking (a stalled collective is aborted: ncclCommAbort)"
                          : "blocking (XY_NCCL_BLOCKING=1, or this LibTorch cannot configure them)");
  return group;
}

}  // namespace xy
