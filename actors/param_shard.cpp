// The parameter-shard actor: owns one rank's shard of every unit; all-gathers units ahead of use
// (prefetch within a byte budget), releases them, reduce-scatters gradients into the fp32 shard.
//
// Collectives must be issued in the same order on every rank, whatever the timing. So every
// collective goes through one FIFO queue and is issued from its front only: a gather waits at the
// front until the optimizer has published the unit version it needs (`updated`), and everything
// behind it waits too. The queue's contents are a function of the trainer's message sequence alone.
//
//   gather(u) ──> [queued] ──version ready──> [issued] ──wait──> delivered ──release──> (dropped)
//
// On a device, gathers run on the rank's gather stream and reductions on its reduce stream; the
// trainer's compute stream is ordered after a gather by the event delivered with it, and a
// reduction after the trainer's backward by the event sent with the gradient. A gradient shard
// goes to pinned host memory on the reduce stream as soon as it is reduced (grad_accum = 1), or
// accumulates on the device in fp32 until the end of the step. With parameter offload
// (actors.offload_params) the shards live in pinned host memory and each is copied to the device on
// the host-to-device stream just before its all-gather.
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
  Clock::time_point issued_at;
  DeviceEventPtr ready;            // set when waited
};

struct Reduction {
  int unit;
  int64_t step;                    // the gradient's training step
  at::Tensor full, shard;          // full: scratch (this rank's gradient); shard: the sum slice
  std::unique_ptr<CommOp> op;
  uint64_t op_id;
};

struct Queued {
  enum Kind { kGather, kReduce, kFinish } kind;
  int unit = -1;
  int64_t version = 0;
  UnitGrad grad;                   // kReduce
  at::Tensor loss_sum;             // kFinish
  int64_t loss_count = 0;
  bool want_checkpoint = false;
  caf::typed_response_promise<StepFacts> finish_rp;
};

struct WaitingGather {
  int unit;
  int64_t version;
  caf::typed_response_promise<GatheredUnit> rp;
  Clock::time_point requested = Clock::now();
};

struct ParamShardState {
  std::shared_ptr<NodeContext> ctx;
  int local = 0, rank = 0;
  Comm* comm = nullptr;
  RankShards* sh = nullptr;
  RankStreams st;
  std::vector<int64_t> version;            // per unit: optimizer steps applied to the shard
  std::vector<DeviceEventPtr> uploaded;    // per unit: the optimizer's upload of that version
  std::map<int, Gathered> cache;           // queued, in-flight or delivered gathers
  std::deque<Queued> queue;                // collectives not yet issued, in issue order
  std::deque<Reduction> reductions;        // issued reduce-scatters, oldest first
  std::deque<WaitingGather> waiting;       // trainer requests not yet answerable
  at::Tensor sumsq;                        // device, grad_accum = 1: squared norm per unit so far
  static inline const char* name = "parameter-shard";

  double deadline() const { return ctx->cfg.deadlines.collective_s; }
  int64_t step_of(int64_t version) const { return version + 1; }
  bool accumulate_on_device() const { return st.on_device() && ctx->cfg.train.grad_accum > 1; }

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
    {
      c10::StreamGuard guard(st.gather);  // allocated for use on the gather stream
      g.full = at::empty({u.padded_numel},
                         at::TensorOptions().dtype(ctx->working_dtype).device(st.device));
    }
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
      c10::StreamGuard guard(st.gather);
      g.op->wait();  // Gloo: the host waits; NCCL: the gather stream waits
      g.op.reset();
      ctx->registry.end(g.op_id);
      g.ready = DeviceEvent::record(st.gather);
    }
  }

  // Parameter offload: copies a pinned host shard to the device on the host-to-device stream,
  // ahead of its all-gather on the gather stream (ordered by an event). The device copy is freed
  // when the gather stream is done with it.
  at::Tensor upload(const at::Tensor& host, int unit, int64_t version) {
    at::Tensor dev;
    {
      c10::StreamGuard guard(st.h2d);
      dev = at::empty(host.sizes(), at::TensorOptions().dtype(host.scalar_type()).device(st.device));
      dev.copy_(host, /*non_blocking=*/true);
    }
    auto copied = DeviceEvent::record(st.h2d);
    copied->block(st.gather);
    sh->note_read(unit, version, copied);  // the optimizer waits for it before rewriting `host`
    dev.record_stream(st.gather);
    return dev;
  }

  // A reduced gradient of step s may land in the gradient shard once the optimizer is done with
  // step s - 1's gradient there (always, without the delayed update).
  bool can_land(const Reduction& r) const { return version[r.unit] >= r.step - 1; }

  void finish_reduction(Reduction& r) {
    c10::StreamGuard guard(st.reduce);
    r.op->wait();
    ctx->registry.end(r.op_id);
    if (!st.on_device()) {
      sh->grad[r.unit].add_(r.shard.to(at::kFloat));
    } else if (accumulate_on_device()) {
      sh->grad_dev[r.unit].add_(r.shard.to(at::kFloat));
    } else {
      sumsq[r.unit].add_(r.shard.to(at::kFloat).pow(2).sum());
      sh->grad[r.unit].copy_(r.shard, /*non_blocking=*/true);  // into pinned host memory
    }
  }

  // Issues queued collectives from the front while their preconditions hold.
  void pump() {
    while (!queue.empty()) {
      Queued& q = queue.front();
      // Fault injection (health/faults.hpp): never issue #seq, or issue the next one in its place.
      fault::maybe("collective", rank, step_of(version[0]), q.unit, comm->seq() + 1);
      if (queue.size() > 1 && fault::reorder(rank, comm->seq() + 1)) {
        const Queued& o = queue[1];
        ctx->registry.begin(o.kind == Queued::kGather ? "all-gather" : o.kind == Queued::kReduce ? "reduce-scatter" : "all-reduce",
                            rank, o.unit, comm->seq() + 1, step_of(version[0]), deadline());
        fault::block_forever();
      }
      if (q.kind == Queued::kGather) {
        if (version[q.unit] < q.version) return;  // waits for the optimizer's `updated`
        Gathered& g = cache.at(q.unit);
        c10::StreamGuard guard(st.gather);
        wait_for(uploaded[q.unit], st.gather);
        const uint64_t seq = comm->seq() + 1;
        g.op_id = ctx->registry.begin("all-gather", rank, q.unit, seq, step_of(q.version), deadline());
        at::Tensor shard = sh->working_of(q.unit, q.version);
        if (st.on_device() && shard.is_cpu()) shard = upload(shard, q.unit, q.version);  // offload
        g.op = comm->all_gather(shard, g.full);
        g.issued = true;
        g.issued_at = Clock::now();
      } else if (q.kind == Queued::kReduce) {
        c10::StreamGuard guard(st.reduce);
        wait_for(q.grad.ready, st.reduce);
        Reduction r;
        r.unit = q.unit;
        r.step = q.grad.step;
        r.full = q.grad.grad.contiguous();
        if (st.on_device()) r.full.record_stream(st.reduce);  // made on the compute stream
        r.shard = at::empty({ctx->layout.units[q.unit].shard_numel}, r.full.options());
        const uint64_t seq = comm->seq() + 1;
        r.op_id = ctx->registry.begin("reduce-scatter", rank, q.unit, seq, r.step, deadline());
        r.op = comm->reduce_scatter(r.full, r.shard);
        reductions.push_back(std::move(r));
        // Bound the memory of in-flight gradients: keep at most two reductions open (more while
        // the delayed update's optimizer still reads the gradient shards they go to).
        while (reductions.size() > 2 && can_land(reductions.front())) {
          finish_reduction(reductions.front());
          reductions.pop_front();
        }
      } else {
        for (const auto& r : reductions)
          if (!can_land(r)) return;  // waits for the optimizer's `updated`
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
    c10::StreamGuard guard(st.reduce);
    const auto dev = at::TensorOptions().dtype(at::kDouble).device(st.device);
    const int64_t units = static_cast<int64_t>(ctx->layout.units.size());
    // Per unit: the squared norm of this rank's gradient shard (to find the units that overflowed).
    at::Tensor per_unit;
    if (!st.on_device()) {
      std::vector<at::Tensor> n2;
      for (const auto& g : sh->grad) n2.push_back(g.to(at::kDouble).pow(2).sum());
      per_unit = at::stack(n2);
    } else if (accumulate_on_device()) {
      std::vector<at::Tensor> n2;
      for (size_t u = 0; u < sh->grad_dev.size(); ++u) {
        at::Tensor sq = sh->grad_dev[u].pow(2).sum().to(at::kDouble);
        // The device keeps a converted copy alive until the copy to the host is done.
        at::Tensor landing = sh->grad_dev[u].to(sh->grad[u].scalar_type());
        // An fp32 sum past fp16's range lands as inf: that is an overflow too.
        if (landing.scalar_type() == at::kHalf)
          sq = at::where(at::isfinite(landing).all(), sq, at::full({}, INFINITY, sq.options()));
        n2.push_back(sq);
        sh->grad[u].copy_(landing, /*non_blocking=*/true);
        landing.record_stream(st.reduce);
      }
      for (auto& g : sh->grad_dev) g.zero_();  // ordered after the copies on this stream
      per_unit = at::stack(n2);
    } else {
      per_unit = sumsq.to(at::kDouble);
      sumsq.zero_();
    }
    // One all-reduce: [|g|^2, loss sum, micro-batches, overflowed(unit 0), ..., overflowed(U-1)].
    at::Tensor t = at::cat({at::stack({per_unit.sum(), q.loss_sum.to(dev).reshape({}),
                                       at::full({}, static_cast<double>(q.loss_count), dev),
                                       at::full({}, q.want_checkpoint ? 1.0 : 0.0, dev)}),
                            at::isfinite(per_unit).logical_not().to(at::kDouble)});
    const uint64_t seq = comm->seq() + 1;
    uint64_t id = ctx->registry.begin("all-reduce", rank, -1, seq, step_of(version[0]), deadline());
    auto op = comm->all_reduce(t);
    op->wait();
    // The copy to the host waits for this stream, so also for every gradient copied to the host.
    at::Tensor h = t.to(at::kCPU);
    ctx->registry.end(id);
    auto a = h.accessor<double, 1>();
    StepFacts f;
    f.grad_norm = std::sqrt(a[0]);
    f.loss = a[2] > 0 ? a[1] / a[2] : 0.0;
    f.finite = std::isfinite(a[0]);
    f.checkpoint = a[3] > 0;
    for (int64_t u = 0; u < units; ++u)
      if (a[4 + u] != 0) f.overflow_units.push_back(static_cast<int32_t>(u));
    q.finish_rp.deliver(f);
  }

  // Answers waiting trainer requests whose gather has been issued.
  void serve() {
    while (!waiting.empty()) {
      WaitingGather& w = waiting.front();
      auto it = cache.find(w.unit);
      if (it == cache.end() || !it->second.issued) return;
      finish_gather(it->second);
      // The part of the wait spent before the gather could be issued (the unit's update).
      const double opt = std::max(0.0, std::chrono::duration<double>(it->second.issued_at - w.requested).count());
      w.rp.deliver(GatheredUnit{it->second.full, it->second.ready, opt});
      waiting.pop_front();
    }
  }

  template <class F>
  void guarded(const std::string& what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      ctx->fail("rank " + std::to_string(rank) + ": " + what + ": " + e.what());
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
  s.st = ctx->streams[local];
  s.version.assign(ctx->layout.units.size(), ctx->start_step);
  s.uploaded.resize(ctx->layout.units.size());
  if (s.st.on_device())
    s.sumsq = at::zeros({static_cast<int64_t>(ctx->layout.units.size())},
                        at::TensorOptions().dtype(at::kFloat).device(s.st.device));
  const int units = static_cast<int>(ctx->layout.units.size());
  return {
      [=](gather_atom, int32_t unit, int32_t dir, int64_t ver) -> caf::typed_response_promise<GatheredUnit> {
        auto& s = self->state;
        auto rp = self->make_response_promise<GatheredUnit>();
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
      [=](reduce_atom, UnitGrad grad) {
        auto& s = self->state;
        const int32_t unit = grad.unit;
        Queued q;
        q.kind = Queued::kReduce;
        q.unit = unit;
        q.grad = std::move(grad);
        s.queue.push_back(std::move(q));
        s.guarded("reduce-scatter of unit " + std::to_string(unit), [&] {
          s.pump();
          s.serve();
        });
      },
      [=](finish_atom, at::Tensor loss_sum, int64_t count,
          bool want_checkpoint) -> caf::typed_response_promise<StepFacts> {
        auto& s = self->state;
        Queued q;
        q.kind = Queued::kFinish;
        q.loss_sum = std::move(loss_sum);
        q.loss_count = count;
        q.want_checkpoint = want_checkpoint;
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
      [=](updated_atom, int32_t unit, int64_t ver, DeviceEventPtr uploaded) {
        auto& s = self->state;
        s.version[unit] = ver;
        s.uploaded[unit] = std::move(uploaded);
        s.guarded("gather after the update of unit " + std::to_string(unit), [&] {
          s.pump();
          s.serve();
        });
      },
  };
}

}  // namespace

param_shard_actor spawn_param_shard(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                    int local_rank) {
  return sys.spawn<caf::detached>(param_shard_fn, std::move(ctx), local_rank);
}

}  // namespace xy
