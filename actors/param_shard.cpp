// The parameter-shard actor: owns one rank's shard of every unit; all-gathers units ahead of use
// (prefetch within a byte budget), releases them, reduce-scatters gradients into the fp32 shard.
//
// The order of its collectives (the same on every rank, whatever the timing) is decided by a
// CollectiveQueue (actors/collective_queue.hpp), which knows nothing of CAF or tensors: this actor
// feeds it the trainer's and the optimizer's messages and carries out its decisions as the queue's
// CollectiveRunner (buffers, streams, the communicator, the registry, the answers).
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
#include <optional>

#include "actors/actors.hpp"
#include "actors/collective_queue.hpp"
#ifdef XY_WITH_CUDA
#include "optim/adam_device.hpp"
#endif

namespace xy {
namespace {

struct Gathered {
  at::Tensor full;                 // [padded_numel] working precision
  std::unique_ptr<CommOp> op;      // null once waited (or never issued)
  uint64_t op_id = 0;              // registry id while in flight
  Clock::time_point issued_at;
  DeviceEventPtr ready;            // set when waited
  bool copy = false;               // `full` is a device copy made for this use (not the working copy)
};

struct Reduction {
  int unit;
  int64_t step;                    // the gradient's training step
  bool last = false;               // of the step's last micro-batch
  at::Tensor full, shard;          // full: scratch (this rank's gradient); shard: the sum slice
  std::unique_ptr<CommOp> op;
  uint64_t op_id;
};

struct PendingGather {
  caf::typed_response_promise<GatheredUnit> rp;
  Clock::time_point requested = Clock::now();
};

struct PendingFinish {
  at::Tensor loss_sum;
  int64_t loss_count = 0;
  bool want_checkpoint = false;
  double compute_per_sample = 0;
  caf::typed_response_promise<StepFacts> rp;
};

struct PendingSum {
  at::Tensor values;
  caf::typed_response_promise<std::vector<double>> rp;
};

struct ParamShardState : CollectiveRunner {
  std::shared_ptr<NodeContext> ctx;
  int local = 0, rank = 0;
  Comm* comm = nullptr;     // the shard group's: gathers and reduce-scatters (global: every rank)
  Comm* global = nullptr;   // every rank of the job: the step's facts, evaluation sums
  Comm* replica = nullptr;  // node sharding: the same shard on every node (else null)
  std::vector<std::pair<std::unique_ptr<CommOp>, uint64_t>> replica_ops;  // in flight: op, registry id
  RankShards* sh = nullptr;
  RankStreams st;
  std::optional<CollectiveQueue> queue;    // decides; the members below carry it out
  uint64_t next_id = 0;                    // ids of requests and gradients for the queue
  std::vector<DeviceEventPtr> uploaded;    // per unit: the optimizer's upload of its last version
  // Deferred writes (the plan's deferred_write: the delayed update, working copies on the GPU):
  // per unit, the version its working copy holds; the optimizer's newer one waits in the fp32
  // master (GPU part) and RankShards::next_host (host part) until write_next().
  std::vector<int64_t> written;
  int64_t landed_step = 0;                 // the step of the last gradient landed
  std::map<int, Gathered> gathered;        // per unit the queue holds a gather of
  std::map<uint64_t, UnitGrad> grads;      // received, reduce-scatter not issued yet
  std::map<uint64_t, Reduction> reductions;  // reduce-scatters issued, not landed
  std::map<uint64_t, PendingGather> gather_requests;
  std::map<uint64_t, PendingFinish> finish_requests;
  std::map<uint64_t, PendingSum> sum_requests;
  at::Tensor sumsq;                        // device, grad_accum = 1: squared norm per unit so far
  // Device copies of units made for a use (gathered buffers, parameter offload's uploads) are freed
  // only once the compute stream has passed their use; the host issues a step's work ahead of the
  // GPU, so without a bound it would hold a copy of nearly every unit at once. The compute stream's
  // position at each release; a new copy waits (on the host) until at most kCopiesAhead
  // (optim/placement.hpp) released copies are still in use (FSDP's all-gather rate limit).
  std::deque<DeviceEventPtr> released;
  void limit_copies() {
    while (released.size() > static_cast<size_t>(kCopiesAhead)) {
      released.front()->synchronize();
      released.pop_front();
    }
  }
  static inline const char* name = "parameter-shard";

  double deadline() const { return ctx->cfg.deadlines.collective_s; }
  // The registry's number of the next collective on `c`: the stall analysis matches ranks by one
  // sequence, the shard group's (every collective, under global sharding). Node sharding's other
  // communicators (the job's facts, the all-reduce between nodes) are timed, named, not numbered.
  uint64_t numbered(Comm* c) const { return c == comm ? c->seq() + 1 : 0; }
  int64_t step_now() const { return queue->version(0) + 1; }  // the step unit 0 is read for
  // Also on a node of one micro-batch when another node runs more (see max_grad_accum).
  bool accumulate_on_device() const { return st.on_device() && max_grad_accum(ctx->cfg) > 1; }

  // Every message handler's work runs here: an exception fails the node with one line naming the
  // rank and what was being done, and answers the request being handled (if any) with the error,
  // so that the trainer waiting on it stops instead of waiting forever.
  template <class F, class... Promise>
  void guarded(const std::string& what, F&& f, Promise&... rp) {
    try {
      f();
    } catch (const std::exception& e) {
      ctx->fail("rank " + std::to_string(rank) + ": " + what + ": " + e.what());
      (rp.deliver(caf::make_error(caf::sec::runtime_error, e.what())), ...);
    }
  }

  // ---- CollectiveRunner: what the queue decides ------------------------------------------------

  void before_issue(const Collective& q, const Collective* behind) override {
    // Fault injection (health/faults.hpp): never issue #seq, or issue the next one in its place.
    fault::maybe("collective", rank, step_now(), q.unit, comm->seq() + 1);
    if (behind && fault::reorder(rank, comm->seq() + 1)) {
      const Collective& o = *behind;
      ctx->registry.begin(o.kind == Collective::kAllGather       ? "all-gather"
                          : o.kind == Collective::kReduceScatter ? "reduce-scatter"
                                                                 : "all-reduce",
                          rank, o.unit, comm->seq() + 1, step_now(), deadline());
      fault::block_forever();
    }
  }

  // A job of one GPU: the gathered unit is the working copy itself and the reduced gradient the
  // backward's own (no collective, no copy, no buffer). (A shard group of one GPU under node
  // sharding keeps its numbered collectives: the stall analysis across nodes matches ranks by them.)
  bool alone() const { return st.on_device() && ctx->world == 1; }

  void reserve_gather(int unit) override {
    if (alone()) {
      gathered[unit] = Gathered{};
      return;
    }
    const UnitLayout& u = ctx->layout.units[unit];
    limit_copies();
    Gathered g;
    g.copy = st.on_device();
    {
      c10::StreamGuard guard(st.gather);  // allocated for use on the gather stream
      g.full = at::empty({u.padded_numel},
                         at::TensorOptions().dtype(ctx->working_dtype).device(st.device));
    }
    gathered[unit] = std::move(g);
  }

  void all_gather(int unit, int64_t version) override {
    Gathered& g = gathered.at(unit);
    c10::StreamGuard guard(st.gather);
    wait_for(uploaded[unit], st.gather);
    // Deferred writes: a gather of a version that no landing wrote in (the evaluation after the
    // last step) writes it here. Every read of the version before ended with the last step's
    // backward, which that step's end-of-step all-reduce waited for.
    if (deferred(unit) && written[unit] < version) write_next(unit, version, st.gather);
    at::Tensor shard = sh->working_of(unit, version);
    const bool offloaded = st.on_device() && shard.is_cpu();  // parameter offload: copied up first
    if (offloaded) limit_copies();
    // A collective is timed by the registry from here (a job of one GPU issues none: nothing to time).
    if (!alone()) g.op_id = ctx->registry.begin("all-gather", rank, unit, comm->seq() + 1, version + 1, deadline());
    if (offloaded) {
      shard = upload(shard, unit, version);
      g.copy = true;
    }
    g.issued_at = Clock::now();
    if (alone()) {
      g.full = shard;
      return;
    }
    g.op = comm->all_gather(shard, g.full);
  }

  void wait_gather(int unit) override {
    Gathered& g = gathered.at(unit);
    c10::StreamGuard guard(st.gather);
    if (g.op) {
      g.op->wait();  // Gloo: the host waits; NCCL: the gather stream waits
      g.op.reset();
      ctx->registry.end(g.op_id);
    }
    g.ready = DeviceEvent::record(st.gather);
  }

  void drop_gather(int unit) override { gathered.erase(unit); }

  void deliver(uint64_t request, int unit, bool held) override {
    auto it = gather_requests.find(request);
    if (it == gather_requests.end()) return;
    const Gathered& g = gathered.at(unit);
    // The part of the wait spent on the optimizer: before the gather could be issued (the unit's
    // update), or all of it where the answer was held until a gradient could land.
    const auto waited_until = held ? Clock::now() : g.issued_at;
    const double opt = std::max(0.0, std::chrono::duration<double>(waited_until - it->second.requested).count());
    it->second.rp.deliver(GatheredUnit{g.full, g.ready, opt});
    gather_requests.erase(it);
  }

  void reduce_scatter(uint64_t id) override {
    auto it = grads.find(id);
    UnitGrad grad = std::move(it->second);
    grads.erase(it);
    c10::StreamGuard guard(st.reduce);
    wait_for(grad.ready, st.reduce);
    Reduction r;
    r.unit = grad.unit;
    r.step = grad.step;
    r.last = grad.last;
    r.full = grad.grad.contiguous();
    if (st.on_device()) r.full.record_stream(st.reduce);  // made on the compute stream
    if (alone()) {
      r.shard = r.full;
      reductions.emplace(id, std::move(r));
      return;
    }
    r.shard = at::empty({ctx->layout.units[r.unit].shard_numel}, r.full.options());
    const uint64_t seq = comm->seq() + 1;
    r.op_id = ctx->registry.begin("reduce-scatter", rank, r.unit, seq, r.step, deadline());
    r.op = comm->reduce_scatter(r.full, r.shard);
    reductions.emplace(id, std::move(r));
  }

  void land(uint64_t id) override {
    auto it = reductions.find(id);
    Reduction& r = it->second;
    c10::StreamGuard guard(st.reduce);
    if (r.op) {
      r.op->wait();
      ctx->registry.end(r.op_id);
    }
    // Node sharding: the unit's gradient shard is complete on this node with the step's last
    // micro-batch; it is summed with the other nodes' (the replica group) before anything reads it.
    const bool replicate = replica && r.last;
    if (!st.on_device()) {
      sh->grad[r.unit].add_(r.shard.to(at::kFloat));
      if (replicate) all_reduce_replicas(sh->grad[r.unit], r.unit, r.step);  // waited at the end of the step
    } else if (accumulate_on_device()) {
      sh->grad_dev[r.unit].add_(r.shard.to(at::kFloat));
      if (replicate) all_reduce_replicas(sh->grad_dev[r.unit], r.unit, r.step);
    } else {
      if (replicate) {  // before the shard is squared and copied to the host (stream-ordered)
        all_reduce_replicas(r.shard, r.unit, r.step);
        wait_replicas();
      }
      // One read of the 16-bit shard, summed in fp32 (no fp32 copy of it).
      sumsq[r.unit].add_(at::linalg_vector_norm(r.shard, 2, c10::nullopt, false, at::kFloat).square());
      land_split(r.shard, r.unit, r.step);
    }
    landed_step = r.step;
    reductions.erase(it);
  }

  // A unit's complete gradient shard (device, landing precision) lands where the optimizer reads
  // it (optim/placement.hpp): elements [0, d) in the device AdamW's buffer, once the device AdamW
  // of the previous step is done with it (the unit's last update event); the rest into pinned host
  // memory for the CPU AdamW (asynchronously, on the reduce stream).
  // Deferred writes: before the step's gradient lands, the optimizer's version of the step before
  // is written into the working copy (this step's backward, which the reduce stream waited for,
  // was the last to read the version before that).
  void land_split(const at::Tensor& g, int unit, int64_t step) {
    const int64_t n = g.numel(), d = ctx->plan.units[unit].device_elems;
    if (deferred(unit) && written[unit] < step - 1) write_next(unit, step - 1, st.reduce);
    if (d > 0) {
      wait_for(uploaded[unit], st.reduce);
      sh->grad_gpu[unit].copy_(g.narrow(0, 0, d), /*non_blocking=*/true);
    }
    if (d < n) sh->grad[unit].copy_(g.narrow(0, d, n - d), /*non_blocking=*/true);
  }

  bool deferred(int unit) const { return ctx->plan.units[unit].deferred_write; }
  // Writes the optimizer's `version` of `unit` (its latest: the fp32 master's GPU part recast,
  // next_host's part copied up) into the working copy, on stream `on` (current), after the
  // optimizer's device work on the unit. The caller has ordered `on` after every read of the
  // version before.
  void write_next(int unit, int64_t version, const c10::Stream& on) {
    if (queue->version(unit) != version)
      throw std::logic_error("unit " + std::to_string(unit) + ": writing version " + std::to_string(version) +
                             " of the working copy, but the optimizer's latest is " +
                             std::to_string(queue->version(unit)));
    wait_for(uploaded[unit], on);
    const int64_t d = ctx->plan.units[unit].device_elems, h = ctx->plan.units[unit].shard_numel - d;
    at::Tensor& w = sh->working[unit];
#ifdef XY_WITH_CUDA
    if (d > 0) {
      at::Tensor out = w.narrow(0, 0, d);
      recast_device(sh->master_dev[unit], out, on);
    }
#endif
    if (h > 0) w.narrow(0, d, h).copy_(sh->next_host[unit], /*non_blocking=*/true);
    uploaded[unit] = DeviceEvent::record(on);
    sh->note_read(unit, version, uploaded[unit]);  // the optimizer rewrites next_host after it
    written[unit] = version;
  }

  // Node sharding: all-reduces `grad` (a unit's complete gradient shard) over the replica group,
  // asynchronously; wait_replicas() completes every one issued (on a device: the reduce stream
  // waits). Each rank issues them in the order its gradients land, the same on every node.
  void all_reduce_replicas(const at::Tensor& grad, int unit, int64_t step) {
    const uint64_t op_id = ctx->registry.begin("all-reduce between nodes", rank, unit, numbered(replica), step, deadline());
    replica_ops.emplace_back(replica->all_reduce(grad), op_id);
  }
  void wait_replicas() {
    for (auto& [op, op_id] : replica_ops) {
      op->wait();
      ctx->registry.end(op_id);
    }
    replica_ops.clear();
  }

  // Every gradient of the step has landed: one all-reduce of the step's facts, then the answer.
  void all_reduce(uint64_t id) override {
    PendingFinish& q = finish_requests.at(id);
    c10::StreamGuard guard(st.reduce);
    wait_replicas();
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
        land_split(landing, static_cast<int>(u), landed_step);
        landing.record_stream(st.reduce);
      }
      for (auto& g : sh->grad_dev) g.zero_();  // ordered after the copies on this stream
      per_unit = at::stack(n2);
    } else {
      per_unit = sumsq.to(at::kDouble);
      sumsq.zero_();
    }
    // Node sharding: every node holds the same (all-reduced) shards; node 0's ranks count them.
    if (replica && ctx->node_index != 0) per_unit = at::zeros_like(per_unit);
    // One all-reduce: [|g|^2, loss sum, samples, checkpoint wanted, overflowed(unit 0), ...,
    // overflowed(U-1)], then with several nodes one slot per node: its compute per sample, which
    // only its local rank 0 fills (mixed GPUs: node 0 proposes a balanced split from them).
    at::Tensor nodes = at::zeros({ctx->nodes > 1 ? ctx->nodes : 0}, dev);
    if (ctx->nodes > 1 && local == 0) nodes[ctx->node_index].fill_(q.compute_per_sample);
    at::Tensor t = at::cat({at::stack({per_unit.sum(), q.loss_sum.to(dev).reshape({}),
                                       at::full({}, static_cast<double>(q.loss_count), dev),
                                       at::full({}, q.want_checkpoint ? 1.0 : 0.0, dev)}),
                            at::isfinite(per_unit).logical_not().to(at::kDouble), nodes});
    uint64_t op_id = ctx->registry.begin("all-reduce", rank, -1, numbered(global), step_now(), deadline());
    auto op = global->all_reduce(t);
    op->wait();
    // The copy to the host waits for this stream, so also for every gradient copied to the host.
    at::Tensor h = t.to(at::kCPU);
    ctx->registry.end(op_id);
    auto a = h.accessor<double, 1>();
    StepFacts f;
    f.grad_norm = std::sqrt(a[0]);
    f.loss = a[2] > 0 ? a[1] / a[2] : 0.0;
    f.finite = std::isfinite(a[0]);
    f.checkpoint = a[3] > 0;
    for (int64_t u = 0; u < units; ++u)
      if (a[4 + u] != 0) f.overflow_units.push_back(static_cast<int32_t>(u));
    for (int64_t n = 0; n < nodes.numel(); ++n) f.node_compute.push_back(a[4 + units + n]);
    q.rp.deliver(f);
    finish_requests.erase(id);
  }

  // An evaluation's sums over every rank.
  void sum(uint64_t id) override {
    auto it = sum_requests.find(id);
    at::Tensor t = it->second.values.to(at::kDouble).contiguous();
    const uint64_t op_id = ctx->registry.begin("all-reduce", rank, -1, numbered(global), step_now(), deadline());
    {
      c10::StreamGuard guard(st.reduce);
      if (st.on_device()) {  // the values were computed on the compute stream
        auto ready = DeviceEvent::record(st.compute);
        ready->block(st.reduce);
      }
      global->all_reduce(t)->wait();
    }
    const at::Tensor h = t.to(at::kCPU);
    ctx->registry.end(op_id);
    std::vector<double> out(h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
    it->second.rp.deliver(out);
    sum_requests.erase(it);
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
};

param_shard_actor::behavior_type param_shard_fn(
    param_shard_actor::stateful_pointer<ParamShardState> self, std::shared_ptr<NodeContext> ctx,
    int local) {
  auto& s = self->state;
  s.ctx = ctx;
  s.local = local;
  s.rank = ctx->first_rank + local;
  s.comm = ctx->shard_comms[local].get();
  s.global = ctx->comms[local].get();
  s.replica = ctx->replica_comms.empty() ? nullptr : ctx->replica_comms[local].get();
  s.sh = ctx->shards[local].get();
  s.st = ctx->streams[local];
  std::vector<int64_t> unit_bytes;
  for (const auto& u : ctx->layout.units)
    unit_bytes.push_back(u.padded_numel * c10::elementSize(ctx->working_dtype));
  s.queue.emplace(std::move(unit_bytes), ctx->cfg.actors.gather_budget_mb * (int64_t{1} << 20),
                  ctx->cfg.actors.prefetch_layers, ctx->start_step, &s);
  s.uploaded.resize(ctx->layout.units.size());
  s.written.assign(ctx->layout.units.size(), ctx->start_step);
  if (s.st.on_device())
    s.sumsq = at::zeros({static_cast<int64_t>(ctx->layout.units.size())},
                        at::TensorOptions().dtype(at::kFloat).device(s.st.device));
  return {
      [=](const GatherRequest& r) -> caf::typed_response_promise<GatheredUnit> {
        auto& s = self->state;
        auto rp = self->make_response_promise<GatheredUnit>();
        const uint64_t id = ++s.next_id;
        s.gather_requests[id] = PendingGather{rp};
        s.guarded("gather of unit " + std::to_string(r.unit),
                  [&] { s.queue->gather(id, r.unit, r.dir, r.version); }, rp);
        return rp;
      },
      [=](const ReleaseRequest& r) {
        auto& s = self->state;
        // (The trainer has issued its last use of the unit on the compute stream.)
        if (auto it = s.gathered.find(r.unit); it != s.gathered.end() && it->second.copy)
          s.released.push_back(DeviceEvent::record(s.st.compute));
        s.guarded("release of unit " + std::to_string(r.unit), [&] { s.queue->release(r.unit); });
      },
      [=](UnitGrad grad) {
        auto& s = self->state;
        const int32_t unit = grad.unit;
        const int64_t step = grad.step;
        const uint64_t id = ++s.next_id;
        s.grads.emplace(id, std::move(grad));
        s.guarded("reduce-scatter of unit " + std::to_string(unit), [&] { s.queue->reduce(id, unit, step); });
      },
      [=](FinishRequest r) -> caf::typed_response_promise<StepFacts> {
        auto& s = self->state;
        auto rp = self->make_response_promise<StepFacts>();
        const uint64_t id = ++s.next_id;
        s.finish_requests[id] = PendingFinish{std::move(r.loss_sum), r.samples, r.want_checkpoint,
                                              r.compute_per_sample, rp};
        s.guarded("end of step", [&] { s.queue->finish(id); }, rp);
        return rp;
      },
      [=](SumRequest r) -> caf::typed_response_promise<std::vector<double>> {
        auto& s = self->state;
        auto rp = self->make_response_promise<std::vector<double>>();
        const uint64_t id = ++s.next_id;
        s.sum_requests.emplace(id, PendingSum{std::move(r.values), rp});
        s.guarded("evaluation all-reduce", [&] { s.queue->sum(id); }, rp);
        return rp;
      },
      [=](UnitUpdated m) {
        auto& s = self->state;
        s.uploaded.at(m.unit) = std::move(m.uploaded);
        s.guarded("gather after the update of unit " + std::to_string(m.unit),
                  [&] { s.queue->updated(m.unit, m.version); });
      },
  };
}

}  // namespace

param_shard_actor spawn_param_shard(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                    int local_rank) {
  return sys.spawn<caf::detached>(param_shard_fn, std::move(ctx), local_rank);
}

}  // namespace xy
