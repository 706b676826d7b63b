// The parameter-shard actor: owns one rank's shard of every unit; all-gathers units ahead of use
// (prefetch within a byte budget), releases them, reduce-scatters gradients into the fp32 shard.
//
// Collectives must be issued in the same order on every rank, whatever the timing. So every
// collective goes through one FIFO queue and is issued from its front only: a gather waits at the
// front until the optimizer has published the unit version it needs (`updated`), and everything
// behind it waits too. The queue's contents are a function of the trainer's message sequence alone.
//
//   gather(u) ──> [queued] ──version ready──> [issued] ──wait──> delivered ──release──> (dropped)
#include <cmath>
#include <deque>
#include <map>

#include "actors/actors.hpp"

namespace xy {
namespace {

struct Gathered {
  at::Tensor full;                 // [padded_numel] working precision
  int64_t version = -1;
  std::unique_ptr<CommOp> op;      // null once waited (or never issued)
  uint64_t op_id = 0;              // registry id while in flight
  bool issued = false;
};

struct Reduction {
  int unit;
  at::Tensor full, shard;          // full: scratch (this rank's gradient); shard: the sum slice
  std::unique_ptr<CommOp> op;
  uint64_t op_id;
};

struct Queued {
  enum Kind { kGather, kReduce, kFinish } kind;
  int unit = -1;
  int64_t version = 0;
  at::Tensor grad;                 // kReduce
  double loss_sum = 0;             // kFinish
  int64_t loss_count = 0;
  caf::typed_response_promise<StepFacts> finish_rp;
};

struct WaitingGather {
  int unit;
  int64_t version;
  caf::typed_response_promise<at::Tensor> rp;
};

struct ParamShardState {
  std::shared_ptr<NodeContext> ctx;
  int local = 0, rank = 0;
  Comm* comm = nullptr;
  RankShards* sh = nullptr;
  std::vector<int64_t> version;            // per unit: optimizer steps applied to the shard
  std::map<int, Gathered> cache;           // queued, in-flight or delivered gathers
  std::deque<Queued> queue;                // collectives not yet issued, in issue order
  std::deque<Reduction> reductions;        // issued reduce-scatters, oldest first
  std::deque<WaitingGather> waiting;       // trainer requests not yet answerable
  static inline const char* name = "parameter-shard";

  double deadline() const { return ctx->cfg.deadlines.collective_s; }
  int64_t step_of(int64_t version) const { return version + 1; }

  int64_t cached_bytes() const {
    int64_t b = 0;
    for (const auto& [u, g] : cache) b += g.full.numel() * g.full.element_size();
    return b;
  }

  // Queue a gather of `unit` at `version` unless one is already cached/queued at that version.
  void want(int unit, int64_t ver, bool is_prefetch) {
    auto it = cache.find(unit);
    if (it != cache.end()) {
      if (it->second.version >= ver) return;
      if (!it->second.issued) {  // a queued stale gather: upgrade its version in place
        it->second.version = ver;
        for (auto& q : queue)
          if (q.kind == Queued::kGather && q.unit == unit) q.version = ver;
        return;
      }
      finish_gather(it->second);
      cache.erase(it);
    }
    const UnitLayout& u = ctx->layout.units[unit];
    const int64_t bytes = u.padded_numel * c10::elementSize(ctx->working_dtype);
    if (is_prefetch &&
        cached_bytes() + bytes > ctx->cfg.actors.gather_budget_mb * (int64_t{1} << 20))
      return;
    Gathered g;
    g.full = at::empty({u.padded_numel}, at::TensorOptions().dtype(ctx->working_dtype));
    g.version = ver;
    cache.emplace(unit, std::move(g));
    Queued q;
    q.kind = Queued::kGather;
    q.unit = unit;
    q.version = ver;
    queue.push_back(std::move(q));
  }

  void finish_gather(Gathered& g) {
    if (g.op) {
      g.op->wait();
      g.op.reset();
      ctx->registry.end(g.op_id);
    }
  }

  void finish_reduction(Reduction& r) {
    r.op->wait();
    ctx->registry.end(r.op_id);
    sh->grad[r.unit].add_(r.shard.to(at::kFloat));
  }

  // Issues queued collectives from the front while their preconditions hold.
  void pump() {
    while (!queue.empty()) {
      Queued& q = queue.front();
      if (q.kind == Queued::kGather) {
        if (version[q.unit] < q.version) return;  // waits for the optimizer's `updated`
        Gathered& g = cache.at(q.unit);
        const uint64_t seq = comm->seq() + 1;
        g.op_id = ctx->registry.begin("all-gather", rank, q.unit, seq, step_of(q.version), deadline());
        g.op = comm->all_gather(sh->working[q.unit], g.full);
        g.issued = true;
      } else if (q.kind == Queued::kReduce) {
        Reduction r;
        r.unit = q.unit;
        r.full = q.grad.contiguous();
        r.shard = at::empty({ctx->layout.units[q.unit].shard_numel}, r.full.options());
        const uint64_t seq = comm->seq() + 1;
        r.op_id = ctx->registry.begin("reduce-scatter", rank, q.unit, seq, step_of(version[q.unit]),
                                      deadline());
        r.op = comm->reduce_scatter(r.full, r.shard);
        reductions.push_back(std::move(r));
        // Bound the memory of in-flight gradients: keep at most two reductions open.
        while (reductions.size() > 2) {
          finish_reduction(reductions.front());
          reductions.pop_front();
        }
      } else {
        do_finish(q);
      }
      queue.pop_front();
    }
  }

  void do_finish(Queued& q) {
    while (!reductions.empty()) {
      finish_reduction(reductions.front());
      reductions.pop_front();
    }
    double sumsq = 0;
    for (const auto& g : sh->grad) sumsq += g.to(at::kDouble).pow(2).sum().item<double>();
    at::Tensor t = at::empty({3}, at::kDouble);
    auto a = t.accessor<double, 1>();
    a[0] = sumsq;
    a[1] = q.loss_sum;
    a[2] = static_cast<double>(q.loss_count);
    const uint64_t seq = comm->seq() + 1;
    uint64_t id = ctx->registry.begin("all-reduce", rank, -1, seq, step_of(version[0]), deadline());
    comm->all_reduce(t)->wait();
    ctx->registry.end(id);
    StepFacts f;
    f.grad_norm = std::sqrt(a[0]);
    f.loss = a[2] > 0 ? a[1] / a[2] : 0.0;
    f.finite = std::isfinite(a[0]);
    q.finish_rp.deliver(f);
  }

  // Answers waiting trainer requests whose gather has been issued.
  void serve() {
    while (!waiting.empty()) {
      WaitingGather& w = waiting.front();
      auto it = cache.find(w.unit);
      if (it == cache.end() || !it->second.issued) return;
      finish_gather(it->second);
      w.rp.deliver(it->second.full);
      waiting.pop_front();
    }
  }
};

param_shard_actor::behavior_type param_shard_fn(
    param_shard_actor::stateful_pointer<ParamShardState> self, std::shared_ptr<NodeContext> ctx,
    int local) {
  auto& s = self->state;
  s.ctx = ctx;
  s.local = local;
  s.rank = ctx->first_rank + local;
  s.comm = ctx->comms[local].get();
  s.sh = ctx->shards[local].get();
  s.version.assign(ctx->layout.units.size(), ctx->start_step);
  const int units = static_cast<int>(ctx->layout.units.size());
  return {
      [=](gather_atom, int32_t unit, int32_t dir, int64_t ver) -> caf::typed_response_promise<at::Tensor> {
        auto& s = self->state;
        auto rp = self->make_response_promise<at::Tensor>();
        try {
          s.want(unit, ver, false);
          for (int k = 1; k <= s.ctx->cfg.actors.prefetch_layers; ++k) {
            const int next = unit + dir * k;
            if (next < 0 || next >= units) break;
            s.want(next, ver, true);
          }
          s.waiting.push_back({unit, ver, rp});
          s.pump();
          s.serve();
        } catch (const std::exception& e) {
          s.ctx->fail(std::string("rank ") + std::to_string(s.rank) + ": gather of unit " +
                      std::to_string(unit) + ": " + e.what());
          rp.deliver(caf::make_error(caf::sec::runtime_error, e.what()));
        }
        return rp;
      },
      [=](release_atom, int32_t unit) {
        auto& s = self->state;
        auto it = s.cache.find(unit);
        if (it != s.cache.end() && it->second.issued && !it->second.op) s.cache.erase(it);
      },
      [=](reduce_atom, int32_t unit, at::Tensor grad) {
        auto& s = self->state;
        Queued q;
        q.kind = Queued::kReduce;
        q.unit = unit;
        q.grad = std::move(grad);
        s.queue.push_back(std::move(q));
        try {
          s.pump();
          s.serve();
        } catch (const std::exception& e) {
          s.ctx->fail("rank " + std::to_string(s.rank) + ": reduce-scatter of unit " +
                      std::to_string(unit) + ": " + e.what());
        }
      },
      [=](finish_atom, double loss_sum, int64_t count) -> caf::typed_response_promise<StepFacts> {
        auto& s = self->state;
        Queued q;
        q.kind = Queued::kFinish;
        q.loss_sum = loss_sum;
        q.loss_count = count;
        q.finish_rp = self->make_response_promise<StepFacts>();
        auto rp = q.finish_rp;
        s.queue.push_back(std::move(q));
        try {
          s.pump();
          s.serve();
        } catch (const std::exception& e) {
          s.ctx->fail("rank " + std::to_string(s.rank) + ": end of step: " + e.what());
          rp.deliver(caf::make_error(caf::sec::runtime_error, e.what()));
        }
        return rp;
      },
      [=](updated_atom, int32_t unit, int64_t ver) {
        auto& s = self->state;
        s.version[unit] = ver;
        try {
          s.pump();
          s.serve();
        } catch (const std::exception& e) {
          s.ctx->fail("rank " + std::to_string(s.rank) + ": gather after update of unit " +
                      std::to_string(unit) + ": " + e.what());
        }
      },
  };
}

}  // namespace

param_shard_actor spawn_param_shard(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                    int local_rank) {
  return sys.spawn<caf::detached>(param_shard_fn, std::move(ctx), local_rank);
}

}  // namespace xy
