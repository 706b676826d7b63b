// The data-plane interface: the collectives the engine needs, behind one abstract class, so that
// Gloo (CPU ranks, via LibTorch's c10d) and NCCL (GPU ranks) are interchangeable.
//
// Thread rules: one Comm belongs to one rank and is driven by one thread at a time (the rank's
// parameter-shard actor). Every collective is asynchronous: it returns a CommOp at once, and
// wait() blocks until it is complete. Collectives must be issued in the same order on every rank;
// each gets the next sequence number (seq()), which the watchdog uses to name who has not joined.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace xy {

class CommOp {
 public:
  virtual ~CommOp() = default;
  // Blocks until the collective is complete and its outputs may be read. Throws std::runtime_error
  // (with the operation and sequence number) if the collective failed.
  virtual void wait() = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "gloo", "nccl"

  // full[r*n : (r+1)*n] = shard of rank r, for n = shard.numel(); full.numel() == n * size().
  // Both contiguous, same dtype. `full` must not be read before wait().
  virtual std::unique_ptr<CommOp> all_gather(const at::Tensor& shard, const at::Tensor& full) = 0;
  // shard = sum over ranks r of their full[rank*n : (rank+1)*n]. `full` is used as scratch and
  // must stay alive and untouched until wait() returns.
  virtual std::unique_ptr<CommOp> reduce_scatter(const at::Tensor& full, const at::Tensor& shard) = 0;
  // In-place sum over ranks.
  virtual std::unique_ptr<CommOp> all_reduce(const at::Tensor& t) = 0;
  // In-place copy of root's tensor to every rank.
  virtual std::unique_ptr<CommOp> broadcast(const at::Tensor& t, int root) = 0;

  // Collectives issued so far on this communicator (the next one gets seq() + 1).
  uint64_t seq() const { return seq_; }

  // Ends the communicator's collectives in flight so that nothing waits on them any more (NCCL:
  // ncclCommAbort through the process group; the communicator is unusable after). Returns a word
  // on what was done, for the log. May be called from any thread, once, before the process exits.
  virtual std::string abort() { return backend() + ": nothing to abort"; }

 protected:
  uint64_t next_seq() { return ++seq_; }
  // Throws std::invalid_argument unless full.numel() == shard.numel() * size() (`what` names the
  // collective in the message).
  void check_split(const char* what, const at::Tensor& full, const at::Tensor& shard) const {
    if (full.numel() != shard.numel() * size())
      throw std::invalid_argument(std::string(what) + ": full has " + std::to_string(full.numel()) +
                                  " elements, expected " + std::to_string(shard.numel() * size()));
  }

 private:
  uint64_t seq_ = 0;
};

// The job's key-value store (the rendezvous): an in-memory store when every rank is in this
// process, else a TCP store served by node 0. Thread-safe. get() blocks until the key exists or the
// store's timeout passes (then throws std::runtime_error naming the key).
class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;
  virtual void set(const std::string& key, const std::string& value) = 0;
  virtual std::string get(const std::string& key) = 0;
  // Adds delta to an integer counter (created at 0) and returns the new value.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // True if `key` exists; never blocks on a missing key.
  virtual bool check(const std::string& key) = 0;
};

// The communicators of this node's ranks and the job's store.
struct CommGroup {
  std::shared_ptr<KeyValueStore> store;
  std::vector<std::shared_ptr<Comm>> comms;  // per local rank: every rank of the job
  // Node sharding only (NodeGroups given), per local rank: the shard group (this node's ranks;
  // rank = local index) and the replica group (the rank of the same local index on every node;
  // rank = node index).
  std::vector<std::shared_ptr<Comm>> shard, replica;
};

// Node sharding's groups (topology.shard = "node"): this node's index, the number of nodes; every
// node has the same number of local ranks.
struct NodeGroups {
  int node = 0, nodes = 1;
};

// Creates the Gloo communicators of the `local` ranks of this process, global ranks
// [first_rank, first_rank + local), in a job of `world` ranks. With `store_host` empty every rank
// must be local (in-memory store); otherwise node 0 serves a TCP store on store_host:store_port
// (is_store_server) and the others connect to it. Gloo binds to `bind_host`.
// The guard installed by set_rendezvous_guard(), if any, runs on the store before the process
// groups rendezvous; what it throws is thrown from here.
// With `groups`, each local rank also joins its shard and replica groups (CommGroup).
CommGroup make_gloo_comms(int world, int first_rank, int local, const std::string& bind_host,
                          const std::string& store_host, int store_port, bool is_store_server,
                          double timeout_s, const NodeGroups* groups = nullptr);

// Installs `guard` (the job's secret handshake) to run on the store of the next TCP-store
// rendezvous of this process, before any process group connects; the call consumes it.
void set_rendezvous_guard(std::function<void(KeyValueStore&)> guard);
// Takes the installed guard (empty if none); for the communicators' implementations.
std::function<void(KeyValueStore&)> take_rendezvous_guard();

// A connection of its own to the job's TCP store at host:port (the control plane's, so that its
// heartbeats never queue behind another actor's blocking get). get() gives up after timeout_s.
std::shared_ptr<KeyValueStore> connect_store(const std::string& host, int port, double timeout_s);

#ifdef XY_WITH_CUDA
// The same for NCCL (one communicator per local device; local rank l uses CUDA device l), through
// LibTorch's c10d ProcessGroupNCCL, with the rendezvous as for Gloo.
CommGroup make_nccl_comms(int world, int first_rank, int local, const std::string& store_host,
                          int store_port, bool is_store_server, double timeout_s,
                          const NodeGroups* groups = nullptr);
#endif

// Communicators that abort_communicators() ends: make_*_comms register theirs.
void register_for_abort(const std::shared_ptr<Comm>& comm);
// Aborts every registered communicator still alive (the watchdog, before it ends the process after
// a stall: a collective stuck on the device is cancelled instead of left behind). Gives up after
// `limit_s` (an abort that itself hangs) and returns one line per communicator for the log.
std::vector<std::string> abort_communicators(double limit_s = 10);

// Shorthand for tests: `world` ranks, all in this process, on 127.0.0.1.
std::vector<std::shared_ptr<Comm>> make_local_gloo_comms(int world, const std::string& host,
                                                         double timeout_s);

}  // namespace xy
