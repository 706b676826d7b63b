// The parameter-shard's ordering rules, apart from CAF, tensors and the communicator: which
// collective is issued next, when a gather may be issued and answered, when a reduced gradient may
// land. The parameter-shard actor (actors/param_shard.cpp) feeds it the trainer's and the
// optimizer's messages and carries out what it decides through a CollectiveRunner; the tests
// (tests/collective_queue_test.cpp) drive it with a recording runner and pinned message orders.
//
// The invariant that keeps a job free of deadlocks: every rank issues its collectives in the same
// order. Every collective (all-gather, reduce-scatter, the end-of-step all-reduce) is queued in
// the order the trainer's messages ask for it and issued from the front only; a gather at the
// front waits for the optimizer's update of its unit, and everything behind it waits too. So the
// order depends on the trainer's message sequence (the same on every rank), never on when the
// optimizer's `updated` messages arrive.
//
//   gather(u) ──> [queued] ──version ready──> [in flight] ──wait──> [complete] ──release──> (dropped)
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <stdexcept>
#include <vector>

namespace xy {

// One queued collective.
struct Collective {
  enum Kind { kAllGather, kReduceScatter, kAllReduce, kSum } kind = kAllGather;
  int unit = -1;         // all-gather, reduce-scatter; -1 for the all-reduce
  int64_t version = 0;   // all-gather: the unit version it must gather
  int64_t step = 0;      // reduce-scatter: the gradient's training step
  uint64_t id = 0;       // reduce-scatter: the gradient; all-reduce, sum: the request
};

// Carries out the queue's decisions (the parameter-shard: communicator, streams, tensors, the
// registry of in-flight operations). Every call may throw; the queue's caller reports it.
class CollectiveRunner {
 public:
  virtual ~CollectiveRunner() = default;
  // Before every attempt to issue the queue's front (`behind`: the collective after it, or null).
  // The fault-injection point of the `collective` and `reorder` faults.
  virtual void before_issue(const Collective& front, const Collective* behind) {}
  // A gather of `unit` is queued: its buffer may be allocated now (it counts against the
  // gathered-parameter budget from now on).
  virtual void reserve_gather(int unit) {}
  virtual void all_gather(int unit, int64_t version) = 0;  // issue it (asynchronously)
  virtual void wait_gather(int unit) = 0;                  // until the issued gather is complete
  virtual void drop_gather(int unit) = 0;                  // forget the complete gather of `unit`
  virtual void reduce_scatter(uint64_t grad) = 0;          // issue it (asynchronously)
  // Wait for reduce-scatter `grad` and add its result into the unit's gradient shard.
  virtual void land(uint64_t grad) = 0;
  // The end-of-step all-reduce of request `finish` (every gradient has landed); answers it.
  virtual void all_reduce(uint64_t finish) = 0;
  // An evaluation's all-reduce of request `id` (issued in turn; no gradient is involved); answers it.
  virtual void sum(uint64_t id) { throw std::logic_error("this runner has no sum"); }
  // Answer gather request `request` with the complete gather of `unit`. `held`: the answer waited
  // behind a reduce-scatter that waited for the optimizer (the bound on gradients in flight).
  virtual void deliver(uint64_t request, int unit, bool held) = 0;
};

class CollectiveQueue {
 public:
  // unit_bytes: each unit's gathered size; budget_bytes: most bytes of gathered units held before
  // prefetches are skipped (the requested unit is always gathered); prefetch: units gathered ahead
  // of a request; start_version: every unit's version at the start.
  CollectiveQueue(std::vector<int64_t> unit_bytes, int64_t budget_bytes, int prefetch,
                  int64_t start_version, CollectiveRunner* runner);

  // The messages. Each may issue collectives and answer requests through the runner.
  // The trainer wants `unit` at version >= `version` (request id `request`); the next `prefetch`
  // units in direction `dir` (+1, -1) are gathered ahead at the same version; `dir` 0: none (the
  // last gather of a step, whose prefetches the next step would gather again at a newer version).
  void gather(uint64_t request, int unit, int dir, int64_t version);
  // The trainer no longer uses `unit` (issues nothing).
  void release(int unit);
  // The trainer's gradient `grad` of `unit` from training step `step`: reduce-scatter it in turn.
  void reduce(uint64_t grad, int unit, int64_t step);
  // The end of the trainer's step: once every gradient may land, land them and all-reduce.
  void finish(uint64_t id);
  // An evaluation's sums (request `id`): all-reduced in turn with the other collectives.
  void sum(uint64_t id);
  // The optimizer has published `version` of `unit`.
  void updated(int unit, int64_t version);

  int64_t version(int unit) const { return version_.at(unit); }
  size_t queued() const { return queue_.size(); }          // collectives not yet issued
  size_t open_reductions() const { return reductions_.size(); }  // issued, not landed

 private:
  enum class State { kQueued, kInFlight, kComplete };
  struct Cached {
    int64_t version = 0;
    State state = State::kQueued;
  };
  struct Open {  // an issued reduce-scatter
    int unit;
    int64_t step;
    uint64_t grad;
  };
  struct Waiting {  // a gather request not answered yet
    uint64_t request;
    int unit;
    bool held = false;  // held behind a reduce-scatter that waited for the optimizer
  };
  // Reductions kept open (issued, not landed) before the oldest must land: their gradients stay
  // on the device meanwhile (optim/placement.cpp prices them as a step's transient memory).
  static constexpr size_t kOpenReductions = 2;

  // Queues a reduce-scatter, all-reduce or sum, then issues and answers what may go.
  void push(Collective::Kind kind, uint64_t id, int unit = -1, int64_t step = 0);
  void want(int unit, int64_t version, bool is_prefetch);
  // A reduced gradient of step s may land in the gradient shard once the optimizer is done with
  // step s - 1's gradient there (always, without the delayed update).
  bool can_land(const Open& r) const { return version_[r.unit] >= r.step - 1; }
  void complete(int unit, Cached& c);
  void pump();   // issues from the front while the front's precondition holds
  void serve();  // answers waiting requests, in order, whose gather has been issued

  std::vector<int64_t> unit_bytes_;
  int64_t budget_bytes_;
  int prefetch_;
  CollectiveRunner* runner_;
  std::vector<int64_t> version_;   // per unit: optimizer steps applied to the shard
  std::map<int, Cached> cache_;    // queued, in-flight or complete gathers
  std::deque<Collective> queue_;   // collectives not yet issued, in issue order
  std::deque<Open> reductions_;    // issued reduce-scatters, oldest first
  std::deque<Waiting> waiting_;    // trainer requests not yet answerable
};

}  // namespace xy
