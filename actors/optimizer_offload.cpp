// The optimizer-offload actor: fp32 master, m and v of one rank's shards in host memory, stepped
// with the fused CPU AdamW kernel on the node's thread pool, unit by unit, first unit first. After
// each unit it writes the working copy and tells the parameter-shard the unit's new version, so the
// next step's forward of unit u can start as soon as u is updated.
#include "actors/actors.hpp"
#include "optim/adam.hpp"

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

void step_unit(OptimizerState& s, int u, const StepOrder& o) {
  const OptimizerConfig& oc = s.ctx->cfg.optimizer;
  const UnitLayout& unit = s.ctx->layout.units[u];
  const int64_t base = unit.shard_begin(s.sh->shard), end = unit.shard_end(s.sh->shard);
  AdamHyper h;
  h.lr = o.lr;
  h.beta1 = oc.beta1;
  h.beta2 = oc.beta2;
  h.eps = oc.eps;
  h.weight_decay = oc.weight_decay;
  h.step = o.adam_step;
  h.grad_scale = o.grad_scale;
  float* p = s.sh->master[u].data_ptr<float>();
  float* m = s.sh->m[u].data_ptr<float>();
  float* v = s.sh->v[u].data_ptr<float>();
  const at::Tensor& grad = s.sh->grad[u];
  const char* g = static_cast<const char*>(grad.data_ptr());
  const size_t gsize = grad.element_size();
  const GradType gt = grad.scalar_type() == at::kBFloat16 ? GradType::kBFloat16
                      : grad.scalar_type() == at::kHalf   ? GradType::kFloat16
                                                          : GradType::kFloat32;
  // On a device the kernel writes the working copy into a pinned staging buffer, uploaded after
  // (with parameter offload, or on CPU ranks, straight into the host working copy).
  at::Tensor& dst = s.uploads(u) ? s.sh->staging[s.next_staging] : s.sh->working_of(u, o.step);
  char* out = static_cast<char*>(dst.data_ptr());
  const size_t esize = dst.element_size();
  const WorkingType wt = working_type(dst.scalar_type());
  // One kernel call per parameter range inside this rank's slice (decay differs by parameter).
  for (const ParamSpec& ps : unit.params) {
    const int64_t b = std::max(base, ps.offset), e = std::min(end, ps.offset + ps.numel);
    if (b >= e) continue;
    const int64_t i = b - base;
    adamw_parallel(*s.ctx->adam_pool, p + i, m + i, v + i, g + i * gsize, e - b, h, ps.decay,
                   out + i * esize, wt, AdamIsa::kBest, gt);
  }
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
        for (int u = 0; u < units; ++u) {
          DeviceEventPtr uploaded;
          try {
            OpScope scope(&s.ctx->registry, "adam", s.rank, u, 0, order.step,
                          s.ctx->cfg.deadlines.optimizer_s);
            fault::maybe("adam", s.rank, order.step, u);  // fault injection (health/faults.hpp)
            // The upload that last read this staging buffer must be done before it is rewritten.
            const int k = s.next_staging;
            if (s.staged[k]) s.staged[k]->synchronize();
            // Parameter offload: the buffer about to be rewritten may still be read by a copy to
            // the device (an older version of the same parity).
            if (s.offloaded(u)) s.sh->wait_reads(u, order.step);
            if (order.skip) {  // the new version is the current one, recast from the master
              if (s.uploads(u))
                s.sh->staging[k].narrow(0, 0, s.sh->master[u].numel()).copy_(s.sh->master[u]);
              else  // (with the delayed update the other buffer holds an older version)
                s.sh->working_of(u, order.step).copy_(s.sh->master[u]);
            }
            if (!order.skip) step_unit(s, u, order);
            s.sh->grad[u].zero_();
            if (s.uploads(u)) {
              c10::StreamGuard guard(s.st.h2d);
              at::Tensor& w = s.sh->working_of(u, order.step);
              w.copy_(s.sh->staging[k].narrow(0, 0, w.numel()), /*non_blocking=*/true);
              uploaded = s.staged[k] = DeviceEvent::record(s.st.h2d);
              s.next_staging = 1 - k;
            }
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
