// The optimizer-offload actor: fp32 master, m and v of one rank's shards, stepped unit by unit:
// first unit first (the next step's forward needs it first), or with the delayed update last unit
// first (the next step's forward reads the version before; its backward, last unit first, lands
// each unit's gradient once that unit's update has read the previous one). Where the placement
// plan puts part of a unit's state on the GPU (optimizer.placement), that part [0, d) is stepped by the device AdamW, enqueued on the rank's
// host-to-device stream, while the host part [d, n) is stepped by the fused CPU AdamW on the node's
// thread pool: both at once, the same arithmetic. After each unit it writes the working copy and
// tells the parameter-shard the unit's new version (with the event that ends its device work), so
// the next step's forward of unit u can start as soon as u is updated.
//
// The gradients it reads have landed: the trainer sends the step's order after the end-of-step
// all-reduce, whose result the parameter-shard copies to the host on the reduce stream after every
// landing copy (the host waits for that copy).
#include "actors/actors.hpp"
#include "optim/adam.hpp"
#ifdef XY_WITH_CUDA
#include "optim/adam_device.hpp"
#endif

#include <algorithm>

namespace xy {
namespace {

struct OptimizerState {
  std::shared_ptr<NodeContext> ctx;
  int local = 0, rank = 0;
  RankShards* sh = nullptr;
  param_shard_actor shard;
  RankStreams st;
  // Units whose working copy lives on the device (the plan's): the rank's two pinned staging
  // buffers (RankShards::staging) are used in turn, and the upload that last read each is kept.
  DeviceEventPtr staged[2];
  int next_staging = 0;
  int64_t version = 0;
  static inline const char* name = "optimizer-offload";
  // Unit u's working copy lives on the device: its new copy is uploaded after its update.
  bool uploads(int u) const { return ctx->plan.uploads(static_cast<size_t>(u)); }
  // ... in pinned host memory (parameter offload), read by copies to the device.
  bool offloaded(int u) const { return ctx->plan.units[static_cast<size_t>(u)].working == Where::kPinnedHost; }
};

WorkingType working_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return WorkingType::kFloat32;
    case at::kBFloat16: return WorkingType::kBFloat16;
    case at::kHalf: return WorkingType::kFloat16;
    default: throw std::invalid_argument("unsupported working dtype");
  }
}

AdamHyper hyper(const OptimizerConfig& oc, const StepOrder& o) {
  AdamHyper h;
  h.lr = o.lr;
  h.beta1 = oc.beta1;
  h.beta2 = oc.beta2;
  h.eps = oc.eps;
  h.weight_decay = oc.weight_decay;
  h.step = o.adam_step;
  h.grad_scale = o.grad_scale;
  return h;
}

// The host part [d, n) of unit u's shard, with the CPU AdamW. `out`: where its new working copy
// goes (element 0 = shard element d).
void step_host(OptimizerState& s, int u, const StepOrder& o, at::Tensor out_t) {
  const UnitLayout& unit = s.ctx->layout.units[u];
  const int64_t d = s.ctx->plan.units[u].device_elems;
  const int64_t base = unit.shard_begin(s.sh->shard) + d, end = unit.shard_end(s.sh->shard);
  const AdamHyper h = hyper(s.ctx->cfg.optimizer, o);
  float* p = s.sh->master[u].data_ptr<float>();
  float* m = s.sh->m[u].data_ptr<float>();
  float* v = s.sh->v[u].data_ptr<float>();
  const at::Tensor& grad = s.sh->grad[u];
  const char* g = static_cast<const char*>(grad.data_ptr());
  const size_t gsize = grad.element_size();
  const GradType gt = grad.scalar_type() == at::kBFloat16 ? GradType::kBFloat16
                      : grad.scalar_type() == at::kHalf   ? GradType::kFloat16
                                                          : GradType::kFloat32;
  char* out = static_cast<char*>(out_t.data_ptr());
  const size_t esize = out_t.element_size();
  const WorkingType wt = working_type(out_t.scalar_type());
  // One kernel call per parameter range inside this rank's slice (decay differs by parameter).
  for (const ParamSpec& ps : unit.params) {
    const int64_t b = std::max(base, ps.offset), e = std::min(end, ps.offset + ps.numel);
    if (b >= e) continue;
    const int64_t i = b - base;
    adamw_parallel(*s.ctx->adam_pool, p + i, m + i, v + i, g + i * gsize, e - b, h, ps.decay,
                   out + i * esize, wt, AdamIsa::kBest, gt);
  }
}

#ifdef XY_WITH_CUDA
// The GPU part [0, d) of unit u's shard, with the device AdamW enqueued on the host-to-device
// stream (or its recast from the master on a skipped step); its new working copy goes into
// `working` (the device copy, or with parameter offload the pinned host copy, through a device
// buffer). Elements past the unit's end (the last rank's padding) are left alone, as on the host.
// `working` undefined (the plan's deferred_write): the master, m and v only (a skipped step:
// nothing); the parameter-shard recasts the working copy from the master later.
void step_device(OptimizerState& s, int u, const StepOrder& o, const at::Tensor& working) {
  const UnitLayout& unit = s.ctx->layout.units[u];
  const int64_t d = s.ctx->plan.units[u].device_elems;
  const int64_t base = unit.shard_begin(s.sh->shard);
  const int64_t real = std::min(d, std::max<int64_t>(0, unit.shard_end(s.sh->shard) - base));
  if (real <= 0) return;
  c10::StreamGuard guard(s.st.h2d);
  const bool none = !working.defined();
  at::Tensor out = none ? at::Tensor() : working.narrow(0, 0, real);
  const bool via = !none && !working.is_cuda();  // parameter offload: the device writes a buffer, copied down
  at::Tensor dev_out = via ? at::empty({real}, at::TensorOptions(working.scalar_type()).device(s.st.device)) : out;
  at::Tensor master = s.sh->master_dev[u].narrow(0, 0, real);
  if (o.skip) {
    if (!none) recast_device(master, dev_out, s.st.h2d);
  } else {
    std::vector<ElemRange> no_decay;
    for (const ParamSpec& ps : unit.params) {
      const int64_t b = std::max(base, ps.offset), e = std::min(base + real, ps.offset + ps.numel);
      if (b < e && !ps.decay) no_decay.push_back({b - base, e - base});
    }
    at::Tensor m = s.sh->m_dev[u].narrow(0, 0, real), v = s.sh->v_dev[u].narrow(0, 0, real);
    AdamHyper h = hyper(s.ctx->cfg.optimizer, o);
    adamw_device(master, m, v, s.sh->grad_gpu[u].narrow(0, 0, real), dev_out, h, no_decay, s.st.h2d);
  }
  if (via) {
    out.copy_(dev_out, /*non_blocking=*/true);
    dev_out.record_stream(s.st.h2d);
  }
}
#endif

// Unit u's update: the GPU part enqueued first, the host part meanwhile on the CPU, then the host
// part's new working copy uploaded where the working copy lives on the GPU. Returns the event that
// ends the unit's device work (null on CPU ranks).
DeviceEventPtr update_unit(OptimizerState& s, int u, const StepOrder& order) {
  const UnitPlacement& up = s.ctx->plan.units[u];
  const int64_t d = up.device_elems, n = up.shard_numel, h = n - d;
  at::Tensor& w = s.sh->working_of(u, order.step);
  // The upload that last read this staging buffer must be done before it is rewritten.
  const int k = s.next_staging;
  if (s.uploads(u) && s.staged[k]) s.staged[k]->synchronize();
  // The host buffer about to be rewritten may still be read by a copy to the device: with parameter
  // offload the working copy (an older version of the same parity), with deferred writes (the
  // delayed update, working copy on the GPU) next_host, which the parameter-shard uploads.
  const bool deferred = up.deferred_write;
  if (s.offloaded(u) || deferred) s.sh->wait_reads(u, order.step);
#ifdef XY_WITH_CUDA
  if (d > 0) step_device(s, u, order, deferred ? at::Tensor() : w);
#endif
  // The host part's working copy: into a pinned staging buffer uploaded after (working copy on the
  // GPU), or into next_host for the parameter-shard to write in later (deferred writes), else
  // straight into the host working copy (parameter offload, CPU ranks).
  at::Tensor out = s.uploads(u) ? s.sh->staging[k].narrow(0, 0, h) : deferred ? s.sh->next_host[u] : w.narrow(0, d, h);
  if (h > 0) {
    if (order.skip)  // the new version is the current one, recast from the master
      out.copy_(s.sh->master[u]);  // (with the delayed update the other buffer holds an older version)
    else
      step_host(s, u, order, out);
  }
  if (!s.st.on_device()) {
    s.sh->grad[u].zero_();  // CPU ranks accumulate micro-batches into it
    return nullptr;
  }
  c10::StreamGuard guard(s.st.h2d);
  if (s.uploads(u)) {
    w.narrow(0, d, h).copy_(out, /*non_blocking=*/true);
    s.staged[k] = DeviceEvent::record(s.st.h2d);
    s.next_staging = 1 - k;
  }
  return s.uploads(u) || d > 0 ? DeviceEvent::record(s.st.h2d) : nullptr;
}

optimizer_actor::behavior_type optimizer_fn(optimizer_actor::stateful_pointer<OptimizerState> self,
                                            std::shared_ptr<NodeContext> ctx, int local,
                                            param_shard_actor shard) {
  auto& s = self->state;
  s.ctx = ctx;
  s.local = local;
  s.rank = ctx->first_rank + local;
  s.sh = ctx->shards[local].get();
  s.shard = shard;
  s.version = ctx->start_step;
  s.st = ctx->streams[local];
  return {
      [=](step_atom, StepOrder order) {
        auto& s = self->state;
        const int units = static_cast<int>(s.ctx->layout.units.size());
        const bool last_first = s.ctx->cfg.optimizer.delayed_update;
        for (int k = 0; k < units; ++k) {
          const int u = last_first ? units - 1 - k : k;
          DeviceEventPtr uploaded;
          try {
            OpScope scope(&s.ctx->registry, "adam", s.rank, u, 0, order.step,
                          s.ctx->cfg.deadlines.optimizer_s);
            fault::maybe("adam", s.rank, order.step, u);  // fault injection (health/faults.hpp)
            uploaded = update_unit(s, u, order);
          } catch (const std::exception& e) {
            s.ctx->fail("rank " + std::to_string(s.rank) + ": CPU Adam on unit " +
                        std::to_string(u) + ": " + e.what());
          }
          self->send(s.shard, UnitUpdated{static_cast<int32_t>(u), order.step, uploaded});
        }
        s.version = order.step;
      },
      [=](sync_atom) -> int64_t { return self->state.version; },
  };
}

}  // namespace

optimizer_actor spawn_optimizer(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx,
                                int local_rank, param_shard_actor shard) {
  return sys.spawn<caf::detached>(optimizer_fn, std::move(ctx), local_rank, std::move(shard));
}

}  // namespace xy
