// The parameter-shard's ordering rules (see collective_queue.hpp for why they keep ranks in step).
#include "actors/collective_queue.hpp"

#include <utility>

namespace xy {

CollectiveQueue::CollectiveQueue(std::vector<int64_t> unit_bytes, int64_t budget_bytes,
                                 int prefetch, int64_t start_version, CollectiveRunner* runner)
    : unit_bytes_(std::move(unit_bytes)), budget_bytes_(budget_bytes), prefetch_(prefetch),
      runner_(runner), version_(unit_bytes_.size(), start_version) {}

void CollectiveQueue::gather(uint64_t request, int unit, int dir, int64_t version) {
  want(unit, version, false);
  const int units = static_cast<int>(unit_bytes_.size());
  for (int k = 1; dir != 0 && k <= prefetch_; ++k) {
    const int next = unit + dir * k;
    if (next < 0 || next >= units) break;
    want(next, version, true);
  }
  waiting_.push_back({request, unit, false});
  pump();
  serve();
}

void CollectiveQueue::release(int unit) {
  auto it = cache_.find(unit);
  if (it == cache_.end() || it->second.state != State::kComplete) return;
  runner_->drop_gather(unit);
  cache_.erase(it);
}

void CollectiveQueue::reduce(uint64_t grad, int unit, int64_t step) {
  push(Collective::kReduceScatter, grad, unit, step);
}

void CollectiveQueue::finish(uint64_t id) { push(Collective::kAllReduce, id); }

void CollectiveQueue::sum(uint64_t id) { push(Collective::kSum, id); }

void CollectiveQueue::push(Collective::Kind kind, uint64_t id, int unit, int64_t step) {
  Collective c;
  c.kind = kind;
  c.id = id;
  c.unit = unit;
  c.step = step;
  queue_.push_back(c);
  pump();
  serve();
}

void CollectiveQueue::updated(int unit, int64_t version) {
  version_.at(unit) = version;
  pump();
  serve();
}

// Queues a gather of `unit` at `version` unless one is already cached or queued at that version.
void CollectiveQueue::want(int unit, int64_t version, bool is_prefetch) {
  auto it = cache_.find(unit);
  if (it != cache_.end()) {
    if (it->second.version >= version) return;
    if (it->second.state == State::kQueued) {  // a queued stale gather: upgrade it in place
      it->second.version = version;
      for (auto& q : queue_)
        if (q.kind == Collective::kAllGather && q.unit == unit) q.version = version;
      return;
    }
    complete(unit, it->second);
    runner_->drop_gather(unit);
    cache_.erase(it);
  }
  const int64_t bytes = unit_bytes_.at(unit);
  if (is_prefetch) {
    int64_t held = 0;
    for (const auto& [u, c] : cache_) held += unit_bytes_[u];
    if (held + bytes > budget_bytes_) return;
  }
  runner_->reserve_gather(unit);
  cache_.emplace(unit, Cached{version, State::kQueued});
  Collective c;
  c.kind = Collective::kAllGather;
  c.unit = unit;
  c.version = version;
  queue_.push_back(c);
}

void CollectiveQueue::complete(int unit, Cached& c) {
  if (c.state != State::kInFlight) return;
  runner_->wait_gather(unit);
  c.state = State::kComplete;
}

void CollectiveQueue::pump() {
  while (!queue_.empty()) {
    const Collective& q = queue_.front();
    runner_->before_issue(q, queue_.size() > 1 ? &queue_[1] : nullptr);
    if (q.kind == Collective::kAllGather) {
      if (version_[q.unit] < q.version) return;  // waits for the optimizer's `updated`
      runner_->all_gather(q.unit, q.version);
      cache_.at(q.unit).state = State::kInFlight;
    } else if (q.kind == Collective::kReduceScatter) {
      // The gradients on the device are bounded: past kOpenReductions open reductions the oldest
      // lands. Where it may not land yet (the delayed update's optimizer still reads its unit's
      // gradient shard) this reduce-scatter waits for the optimizer's `updated`, and the trainer's
      // requests behind it wait with it (serve()): the backward pauses instead of piling up
      // gradients on the device while the optimizer is behind.
      if (reductions_.size() >= kOpenReductions && !can_land(reductions_.front())) return;
      runner_->reduce_scatter(q.id);
      reductions_.push_back({q.unit, q.step, q.id});
      while (reductions_.size() > kOpenReductions && can_land(reductions_.front())) {
        runner_->land(reductions_.front().grad);
        reductions_.pop_front();
      }
    } else if (q.kind == Collective::kSum) {
      runner_->sum(q.id);
    } else {
      for (const auto& r : reductions_)
        if (!can_land(r)) return;  // waits for the optimizer's `updated`
      while (!reductions_.empty()) {
        runner_->land(reductions_.front().grad);
        reductions_.pop_front();
      }
      runner_->all_reduce(q.id);
    }
    queue_.pop_front();
  }
}

void CollectiveQueue::serve() {
  // A reduce-scatter that waits at the front (pump() stopped there) holds every request behind it,
  // even one whose unit is gathered already: the trainer makes no more gradients meanwhile.
  if (!queue_.empty() && queue_.front().kind == Collective::kReduceScatter) {
    for (auto& w : waiting_) w.held = true;
    return;
  }
  while (!waiting_.empty()) {
    const Waiting& w = waiting_.front();
    auto it = cache_.find(w.unit);
    if (it == cache_.end() || it->second.state == State::kQueued) return;
    complete(w.unit, it->second);
    runner_->deliver(w.request, w.unit, w.held);
    waiting_.pop_front();
  }
}

}  // namespace xy
