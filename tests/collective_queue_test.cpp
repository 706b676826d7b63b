// The parameter-shard's ordering rules (actors/collective_queue.hpp) against a fake communicator
// that records the collectives issued: a gather waits for its unit's update and nothing overtakes
// it; a reduced gradient lands only once the optimizer is done with the previous step's gradient;
// and two ranks fed the same trainer messages, with the optimizer's `updated` messages arriving at
// different points, issue the same collective sequence (the deadlock-freedom invariant). Message
// orders are pinned explicitly (no threads, no timing), the way CAF's own tests pin them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "actors/collective_queue.hpp"

using namespace xy;

namespace {

// Records what the queue asks for and checks each call against what the test has fed it so far
// (`published`: the versions the optimizer has announced).
struct FakeComm : CollectiveRunner {
  std::vector<int64_t> published;                      // per unit
  std::vector<std::string> issued;                     // the collectives, in issue order
  std::vector<std::string> landed;                     // "unit/step" in landing order
  std::map<uint64_t, std::pair<int, int64_t>> grads;   // id -> unit, step
  std::map<uint64_t, std::pair<int, int64_t>> requests;  // id -> unit, version
  std::set<uint64_t> open;                             // reduce-scatters issued, not landed
  std::set<int> in_flight;                             // gathers issued, not waited
  std::map<int, int64_t> gathered;                     // unit -> version of its last all-gather
  std::set<uint64_t> answered;                         // gather and finish requests answered
  std::set<uint64_t> held;                             // gather requests answered late (held)

  void all_gather(int unit, int64_t version) override {
    EXPECT_GE(published.at(unit), version) << "all-gather of unit " << unit << " at version "
                                           << version << " before the unit's update";
    issued.push_back("all-gather " + std::to_string(unit) + "@" + std::to_string(version));
    in_flight.insert(unit);
    gathered[unit] = version;
  }
  void wait_gather(int unit) override { EXPECT_EQ(in_flight.erase(unit), 1u) << "unit " << unit; }
  void drop_gather(int unit) override {
    EXPECT_EQ(in_flight.count(unit), 0u) << "dropped unit " << unit << " while in flight";
  }
  void reduce_scatter(uint64_t id) override {
    const auto [unit, step] = grads.at(id);
    issued.push_back("reduce-scatter " + std::to_string(unit) + " (step " + std::to_string(step) + ")");
    open.insert(id);
  }
  void land(uint64_t id) override {
    EXPECT_EQ(open.erase(id), 1u) << "landed a gradient never reduce-scattered";
    const auto [unit, step] = grads.at(id);
    EXPECT_GE(published.at(unit), step - 1)
        << "a step-" << step << " gradient of unit " << unit << " landed before the optimizer"
        << " published version " << step - 1;
    landed.push_back(std::to_string(unit) + "/" + std::to_string(step));
  }
  void all_reduce(uint64_t id) override {
    EXPECT_TRUE(open.empty()) << "all-reduce with gradients not landed";
    issued.push_back("all-reduce");
    answered.insert(id);
  }
  void deliver(uint64_t request, int unit, bool was_held) override {
    if (was_held) held.insert(request);
    const auto [want_unit, version] = requests.at(request);
    EXPECT_EQ(unit, want_unit);
    EXPECT_EQ(in_flight.count(unit), 0u) << "answered before the gather was waited for";
    EXPECT_TRUE(gathered.count(unit) && gathered[unit] >= version)
        << "answered request for unit " << unit << "@" << version << " with an older gather";
    answered.insert(request);
  }
};

// One rank: the queue and its fake communicator, fed through the message entry points.
struct Rank {
  FakeComm comm;
  CollectiveQueue queue;
  uint64_t next_id = 0;

  Rank(int units, int64_t unit_bytes, int64_t budget, int prefetch, int64_t start = 0)
      : queue(std::vector<int64_t>(units, unit_bytes), budget, prefetch, start, &comm) {
    comm.published.assign(units, start);
  }
  uint64_t gather(int unit, int dir, int64_t version) {
    const uint64_t id = ++next_id;
    comm.requests[id] = {unit, version};
    queue.gather(id, unit, dir, version);
    return id;
  }
  uint64_t reduce(int unit, int64_t step) {
    const uint64_t id = ++next_id;
    comm.grads[id] = {unit, step};
    queue.reduce(id, unit, step);
    ++sent;
    most_unlanded = std::max(most_unlanded, sent - comm.landed.size());
    return id;
  }
  size_t sent = 0;           // gradients the trainer has sent
  size_t most_unlanded = 0;  // the most of them not landed at once (on the device meanwhile)
  uint64_t finish() {
    const uint64_t id = ++next_id;
    queue.finish(id);
    return id;
  }
  void updated(int unit, int64_t version) {
    comm.published.at(unit) = version;
    queue.updated(unit, version);
  }
  bool answered(uint64_t id) const { return comm.answered.count(id) > 0; }
};

using Seq = std::vector<std::string>;
constexpr int64_t kLarge = int64_t{1} << 40;

TEST(CollectiveQueue, AGatherWaitsForItsUnitsUpdate) {
  Rank r(3, 1, kLarge, /*prefetch=*/1);
  const uint64_t g = r.gather(0, +1, 1);  // step 2 reads version 1; the optimizer has not run yet
  EXPECT_EQ(r.comm.issued, Seq{});
  EXPECT_FALSE(r.answered(g));
  r.updated(1, 1);  // the prefetch of unit 1 is ready, but it is queued behind unit 0's gather
  EXPECT_EQ(r.comm.issued, Seq{});
  r.updated(0, 1);
  EXPECT_EQ(r.comm.issued, (Seq{"all-gather 0@1", "all-gather 1@1"}));
  EXPECT_TRUE(r.answered(g));
  // A request for a unit already gathered at that version issues nothing new.
  r.queue.release(0);
  const uint64_t g1 = r.gather(1, +1, 1);  // prefetches unit 2, which is still at version 0
  EXPECT_TRUE(r.answered(g1));
  EXPECT_EQ(r.comm.issued.size(), 2u);
  r.updated(2, 1);
  EXPECT_EQ(r.comm.issued.back(), "all-gather 2@1");
}

TEST(CollectiveQueue, NothingOvertakesAGatherThatWaits) {
  Rank r(3, 1, kLarge, /*prefetch=*/0);
  const uint64_t g = r.gather(0, +1, 1);
  r.reduce(2, 1);  // (a gradient of the previous step, sent late)
  const uint64_t f = r.finish();
  EXPECT_EQ(r.comm.issued, Seq{});
  EXPECT_EQ(r.queue.queued(), 3u);
  r.updated(0, 1);
  EXPECT_EQ(r.comm.issued, (Seq{"all-gather 0@1", "reduce-scatter 2 (step 1)", "all-reduce"}));
  EXPECT_TRUE(r.answered(g));
  EXPECT_TRUE(r.answered(f));
}

// The delayed update: step 2's gradients may land only after the optimizer has applied step 1 to
// their unit (it still reads step 1's gradient shard until then); the end-of-step all-reduce waits
// for every one of them.
TEST(CollectiveQueue, AGradientLandsOnlyAfterThePreviousStepsUpdate) {
  Rank r(2, 1, kLarge, /*prefetch=*/1);
  r.reduce(1, 2);
  r.reduce(0, 2);
  const uint64_t f = r.finish();
  EXPECT_EQ(r.comm.issued, (Seq{"reduce-scatter 1 (step 2)", "reduce-scatter 0 (step 2)"}));
  EXPECT_EQ(r.comm.landed, Seq{});
  r.updated(1, 1);  // unit 0's gradient still may not land, so neither may the all-reduce
  EXPECT_EQ(r.comm.landed, Seq{});
  EXPECT_FALSE(r.answered(f));
  r.updated(0, 1);
  EXPECT_EQ(r.comm.landed, (Seq{"1/2", "0/2"}));
  EXPECT_EQ(r.comm.issued.back(), "all-reduce");
  EXPECT_TRUE(r.answered(f));
  EXPECT_EQ(r.queue.open_reductions(), 0u);
}

// In-flight gradients are bounded: past two open reductions the oldest lands, when it may.
TEST(CollectiveQueue, AtMostTwoReductionsStayOpenWhenTheyMayLand) {
  Rank r(4, 1, kLarge, 1);
  for (int u = 3; u >= 1; --u) r.reduce(u, 1);  // step 1 reads version 0: lands at once
  EXPECT_EQ(r.queue.open_reductions(), 2u);
  EXPECT_EQ(r.comm.landed, Seq{"3/1"});

  Rank d(4, 1, kLarge, 1);
  for (int u = 3; u >= 1; --u) d.reduce(u, 2);  // delayed update: version 1 not published yet
  EXPECT_EQ(d.queue.open_reductions(), 2u);      // the third waits, not issued
  EXPECT_EQ(d.queue.queued(), 1u);
  EXPECT_EQ(d.comm.landed, Seq{});
}

// The delayed update, the optimizer behind the backward: a gradient that would be the third open
// one waits for the update that lets the oldest land, and so does the trainer's next gather
// request, even for a unit gathered already: the backward pauses, gradients do not pile up.
TEST(CollectiveQueue, AGradientThatMustWaitHoldsTheBackward) {
  Rank d(5, 1, kLarge, /*prefetch=*/2);
  const uint64_t g3 = d.gather(3, -1, 0);  // step 2's backward (reads version 0), prefetches 2, 1
  EXPECT_TRUE(d.answered(g3));
  d.reduce(3, 2);
  const uint64_t g2 = d.gather(2, -1, 0);
  EXPECT_TRUE(d.answered(g2));
  d.reduce(2, 2);
  const uint64_t g1 = d.gather(1, -1, 0);  // unit 1 was prefetched; answered
  EXPECT_TRUE(d.answered(g1));
  d.reduce(1, 2);  // two open, neither may land before version 1 of units 3 and 2: waits
  const uint64_t g0 = d.gather(0, 0, 0);
  EXPECT_FALSE(d.answered(g0)) << "the backward went on with two gradients open that may not land";
  EXPECT_EQ(d.queue.open_reductions(), 2u);
  d.updated(4, 1);  // the optimizer, last unit first (delayed update)
  EXPECT_FALSE(d.answered(g0));
  d.updated(3, 1);  // unit 3's gradient may land: unit 1's reduce-scatter is issued, the gather answered
  EXPECT_EQ(d.comm.landed, Seq{"3/2"});
  EXPECT_EQ(d.comm.issued.back(), "reduce-scatter 1 (step 2)");
  EXPECT_TRUE(d.answered(g0));
  EXPECT_TRUE(d.comm.held.count(g0)) << "the wait is the optimizer's (the step line counts it so)";
  EXPECT_FALSE(d.comm.held.count(g1));
  EXPECT_EQ(d.most_unlanded, 3u);
}

TEST(CollectiveQueue, PrefetchesStayWithinTheBudgetAndTheRequestedUnitIsAlwaysGathered) {
  Rank r(5, 10, /*budget=*/25, /*prefetch=*/3);
  r.gather(0, +1, 0);  // 0 and 1 held (20 bytes); 2 would make 30
  EXPECT_EQ(r.comm.issued, (Seq{"all-gather 0@0", "all-gather 1@0"}));
  r.queue.release(0);
  r.gather(1, +1, 0);  // 1 is held; 2 fits (20), 3 would not
  EXPECT_EQ(r.comm.issued.back(), "all-gather 2@0");
  EXPECT_EQ(r.comm.issued.size(), 3u);

  Rank tiny(2, 10, /*budget=*/5, /*prefetch=*/1);
  const uint64_t g = tiny.gather(0, +1, 0);
  EXPECT_EQ(tiny.comm.issued, Seq{"all-gather 0@0"});
  EXPECT_TRUE(tiny.answered(g));
}

// ---- the same collective order on every rank ---------------------------------------------------

// A trainer message, as trainer.cpp sends them per micro-batch: forward gather/release unit by
// unit, the head, the backward last block first (gather, reduce, release), the embedding; finish.
// The embedding's gather prefetches the next forward's blocks, except at the end of a step whose
// successor reads a newer version (`old_end_prefetch`: it always does, as the trainer used to).
struct Msg {
  enum Kind { kGather, kRelease, kReduce, kFinish } kind;
  int unit = -1, dir = 0;
  int64_t version = 0, step = 0;
};

std::vector<Msg> trainer_program(int units, int64_t steps, int accum, bool delayed,
                                 bool old_end_prefetch = false) {
  const int head = units - 1;
  std::vector<Msg> p;
  for (int64_t step = 1; step <= steps; ++step) {
    const int64_t v = delayed ? std::max<int64_t>(0, step - 2) : step - 1;
    const int64_t v_next = delayed ? std::max<int64_t>(0, step - 1) : step;
    for (int k = 0; k < accum; ++k) {
      for (int u = 0; u < head; ++u) {
        p.push_back({Msg::kGather, u, +1, v, step});
        p.push_back({Msg::kRelease, u});
      }
      p.push_back({Msg::kGather, head, -1, v, step});
      p.push_back({Msg::kReduce, head, 0, 0, step});
      p.push_back({Msg::kRelease, head});
      for (int u = head - 1; u >= 1; --u) {
        p.push_back({Msg::kGather, u, -1, v, step});
        p.push_back({Msg::kReduce, u, 0, 0, step});
        p.push_back({Msg::kRelease, u});
      }
      const bool prefetch = old_end_prefetch || k + 1 < accum || v_next == v;
      p.push_back({Msg::kGather, 0, prefetch ? +1 : 0, v, step});
      p.push_back({Msg::kReduce, 0, 0, 0, step});
      p.push_back({Msg::kRelease, 0});
    }
    p.push_back({Msg::kFinish, -1, 0, 0, step});
  }
  return p;
}

// Runs the program on one rank. The arrival order is pinned by `optimizer_next`: whenever both a
// trainer message and an optimizer `updated` could arrive next, it says which does. Causality is
// kept as in the engine: the trainer waits for the answer to each gather and finish before sending
// more, and the optimizer's updates of step s (unit 0 first) follow the answer to step s's finish.
// `last_first`: the optimizer updates the last unit first (as with the delayed update).
// `most_unlanded`, if given: the most gradients sent and not landed at once.
template <class Choice>
Seq run_rank(const std::vector<Msg>& program, int units, int64_t unit_bytes, int64_t budget,
             int prefetch, Choice optimizer_next, std::string* trace, bool last_first = false,
             size_t* most_unlanded = nullptr) {
  Rank r(units, unit_bytes, budget, prefetch);
  size_t pc = 0;
  uint64_t awaiting = 0;                    // the trainer's unanswered request (0: none)
  int64_t awaiting_finish_step = 0;         // its step, when it is a finish
  std::deque<std::pair<int, int64_t>> optimizer;  // updates not yet delivered
  for (;;) {
    if (awaiting && r.answered(awaiting)) {
      if (awaiting_finish_step)  // the step order: the optimizer updates every unit in turn
        for (int k = 0; k < units; ++k) optimizer.push_back({last_first ? units - 1 - k : k, awaiting_finish_step});
      awaiting = 0;
      awaiting_finish_step = 0;
    }
    const bool trainer_can = pc < program.size() && !awaiting;
    const bool optimizer_can = !optimizer.empty();
    if (!trainer_can && !optimizer_can) break;
    if (optimizer_can && (!trainer_can || optimizer_next())) {
      *trace += "U";
      r.updated(optimizer.front().first, optimizer.front().second);
      optimizer.pop_front();
      continue;
    }
    *trace += "T";
    const Msg& m = program[pc++];
    switch (m.kind) {
      case Msg::kGather: awaiting = r.gather(m.unit, m.dir, m.version); break;
      case Msg::kRelease: r.queue.release(m.unit); break;
      case Msg::kReduce: r.reduce(m.unit, m.step); break;
      case Msg::kFinish:
        awaiting = r.finish();
        awaiting_finish_step = m.step;
        break;
    }
  }
  EXPECT_EQ(pc, program.size()) << "the trainer never got an answer (deadlock) in order " << *trace;
  EXPECT_EQ(awaiting, 0u) << "order " << *trace;
  EXPECT_EQ(r.queue.queued(), 0u) << "order " << *trace;
  if (most_unlanded) *most_unlanded = std::max(*most_unlanded, r.most_unlanded);
  return r.comm.issued;
}

struct OrderCase {
  bool delayed;
  int accum;
};
void PrintTo(const OrderCase& c, std::ostream* os) {
  *os << (c.delayed ? "delayed update" : "exact update") << ", grad_accum " << c.accum;
}

class SameOrderOnEveryRank : public ::testing::TestWithParam<OrderCase> {};

TEST_P(SameOrderOnEveryRank, WhateverWhenTheUpdatesArrive) {
  const auto [delayed, accum] = GetParam();
  const int units = 5, prefetch = 2;
  const int64_t steps = 4, bytes = 10, budget = 35;  // the budget skips some prefetches
  const auto program = trainer_program(units, steps, accum, delayed);

  // Rank 0: every update arrives as soon as it can; rank 1: only when the trainer waits for one.
  // The optimizer goes last unit first with the delayed update (actors/optimizer_offload.cpp).
  std::string eager_trace, lazy_trace;
  size_t most_unlanded = 0;
  const Seq eager = run_rank(program, units, bytes, budget, prefetch, [] { return true; }, &eager_trace,
                             delayed, &most_unlanded);
  const Seq lazy = run_rank(program, units, bytes, budget, prefetch, [] { return false; }, &lazy_trace,
                            delayed, &most_unlanded);
  ASSERT_NE(eager_trace, lazy_trace) << "the two pinned orders must differ";
  EXPECT_EQ(eager, lazy);

  // The sequence is the whole step: every gradient reduce-scattered, one all-reduce a step.
  EXPECT_EQ(std::count(eager.begin(), eager.end(), "all-reduce"), steps);
  EXPECT_EQ(std::count_if(eager.begin(), eager.end(),
                          [](const std::string& s) { return s.rfind("reduce-scatter", 0) == 0; }),
            steps * accum * units);

  // More ranks: pseudo-random but fixed interleavings (seeded; the same on every run).
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    const uint32_t odds = 1 + seed % 4;  // an update comes first with probability 1/odds
    std::string trace;
    const Seq other = run_rank(program, units, bytes, budget, prefetch,
                               [&] { return rng() % odds == 0; }, &trace, delayed, &most_unlanded);
    ASSERT_EQ(other, eager) << "rank with seed " << seed << " (order " << trace
                            << ") issued another sequence than the rank with order " << eager_trace;
  }
  // Whenever the optimizer's updates come, at most three gradients are on the device at once (two
  // open reductions and one waiting): what optim/placement.cpp prices.
  std::printf("%s: at most %zu gradients not landed at once over 202 interleavings\n",
              delayed ? "delayed update" : "exact update", most_unlanded);
  EXPECT_LE(most_unlanded, 3u);
}

INSTANTIATE_TEST_SUITE_P(CollectiveQueue, SameOrderOnEveryRank,
                         ::testing::Values(OrderCase{false, 1}, OrderCase{false, 2},
                                           OrderCase{true, 1}, OrderCase{true, 2}),
                         [](const ::testing::TestParamInfo<OrderCase>& i) {
                           return std::string(i.param.delayed ? "Delayed" : "Exact") + "Accum" +
                                  std::to_string(i.param.accum);
                         });

// ZeRO-3's gathers and no more: per micro-batch every unit is gathered for the forward, and again
// for the backward except the head (held from its prefetch in the forward to its backward): 2 x
// units - 1. The step's last gather (the embedding's backward) must not prefetch blocks at a
// version the next step does not read; it used to, so every such step gathered `prefetch` units
// that the next step threw away (the delayed update's first step reads the same version as the
// second: that prefetch is used and stays).
TEST(CollectiveQueue, TheStepsLastGatherPrefetchesNothingTheNextStepRegathers) {
  const int units = 5, prefetch = 2;
  const int64_t steps = 3;
  for (const bool delayed : {false, true}) {
    for (const int accum : {1, 2}) {
      auto gathers = [&](bool old_end_prefetch) {
        std::string trace;
        const Seq s = run_rank(trainer_program(units, steps, accum, delayed, old_end_prefetch),
                               units, 1, kLarge, prefetch, [] { return true; }, &trace, delayed);
        return std::count_if(s.begin(), s.end(),
                             [](const std::string& x) { return x.rfind("all-gather", 0) == 0; });
      };
      const int64_t now = gathers(false), before = gathers(true);
      const int64_t zero3 = steps * accum * (2 * units - 1);
      const int64_t wasted = (delayed ? steps - 1 : steps) * prefetch;
      std::printf("%s update, grad_accum %d: %lld all-gathers (ZeRO-3: %lld); always prefetching "
                  "at the step's end: %lld\n", delayed ? "delayed" : "exact", accum,
                  static_cast<long long>(now), static_cast<long long>(zero3),
                  static_cast<long long>(before));
      EXPECT_EQ(now, zero3);
      EXPECT_EQ(before, zero3 + wasted);
    }
  }
}

}  // namespace
