// The trainer actor (one per rank, its own thread): runs the step schedule of DESIGN.md.
//
//   for each micro-batch:
//     forward, unit by unit: gather(u) -> compute (no autograd; keep only the block's input) -> release(u)
//     head: gather -> loss + backward -> reduce(head grad)
//     backward, last block first: gather(u) -> recompute from the saved input + backward
//                                 -> reduce(u's grad) -> release(u)
//     embedding backward -> reduce
//   finish: global gradient norm and loss (one all-reduce) -> clip -> step order to the optimizer
//
// Gradients are scaled by 1 / (world * grad_accum) at the loss, so that the reduce-scatter's sum
// is the mean over the global batch.
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <cstdio>
#include <optional>
#include <thread>

#include <ATen/Parallel.h>

#include "actors/actors.hpp"
#include "health/faults.hpp"

namespace xy {
namespace {

using Seconds = std::chrono::duration<double>;

// Dynamic loss scaling, DeepSpeed's DynamicLossScaler (delayed shift = hysteresis, consecutive
// hysteresis off): an overflow halves the scale once `hysteresis` overflows have been seen; a
// window of good steps after the last overflow doubles it; an overflow at the minimum is fatal.
struct LossScaler {
  bool on = false;
  double scale = 1, min_scale = 1;
  int64_t window = 1000, hysteresis = 2, cur_hysteresis = 2;
  int64_t iter = 0, last_overflow = -1;
  std::deque<std::string> history;  // the most recent events, for the fatal error

  // Records the outcome of a step; throws std::runtime_error when an overflow hits the minimum.
  void update(bool overflow, int64_t step, const std::string& where) {
    if (overflow) {
      if (hysteresis == 1 || cur_hysteresis == 1) {
        if (scale <= min_scale) {
          std::string h;
          for (const auto& e : history) h += "\n  " + e;
          throw std::runtime_error(
              "step " + std::to_string(step) + ": gradient overflow in " + where +
              " with the loss scale already at its minimum " + fmt(min_scale) +
              ": it cannot be lowered further. Recent loss-scale history:" + h +
              "\nLook for bad data or a too high learning rate, or train in bf16.");
        }
        const double before = scale;
        scale = std::max(scale / 2, min_scale);
        remember("step " + std::to_string(step) + ": overflow in " + where + "; scale " +
                 fmt(before) + " -> " + fmt(scale));
      } else {
        --cur_hysteresis;
        remember("step " + std::to_string(step) + ": overflow in " + where + "; scale " +
                 fmt(scale) + " kept (hysteresis " + std::to_string(cur_hysteresis) + " left)");
      }
      last_overflow = iter;
    } else if ((iter - last_overflow) % window == 0) {
      cur_hysteresis = hysteresis;
      scale *= 2;
      remember("step " + std::to_string(step) + ": " + std::to_string(window) +
               " good steps; scale -> " + fmt(scale));
    }
    ++iter;
  }
  static std::string fmt(double x) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", x);
    return b;
  }
  LossScalerState state() const {
    return on ? LossScalerState{scale, iter, last_overflow, cur_hysteresis} : LossScalerState{};
  }
  void remember(std::string e) {
    history.push_back(std::move(e));
    while (history.size() > 12) history.pop_front();
  }
};

class Trainer {
 public:
  Trainer(caf::blocking_actor* self, std::shared_ptr<NodeContext> ctx, int local,
          prefetcher_actor prefetcher, param_shard_actor shard, optimizer_actor optimizer,
          checkpoint_actor checkpoint, std::vector<optimizer_actor> node_optimizers)
      : self_(self), ctx_(std::move(ctx)), local_(local), rank_(ctx_->first_rank + local),
        prefetcher_(std::move(prefetcher)), shard_(std::move(shard)),
        optimizer_(std::move(optimizer)), checkpoint_(std::move(checkpoint)),
        node_optimizers_(std::move(node_optimizers)), streams_(ctx_->streams[local]) {
    const TrainConfig& t = ctx_->cfg.train;
    scaler_.on = t.loss_scaling == "dynamic" || (t.loss_scaling == "auto" && t.precision == "fp16");
    if (scaler_.on) {
      scaler_.scale = t.initial_loss_scale;
      scaler_.min_scale = t.min_loss_scale;
      scaler_.window = t.loss_scale_window;
      scaler_.hysteresis = scaler_.cur_hysteresis = t.loss_scale_hysteresis;
      if (ctx_->start_scaler && ctx_->start_scaler->iter > 0) {  // resumed: continue its state
        scaler_.scale = ctx_->start_scaler->scale;
        scaler_.iter = ctx_->start_scaler->iter;
        scaler_.last_overflow = ctx_->start_scaler->last_overflow;
        scaler_.cur_hysteresis = ctx_->start_scaler->cur_hysteresis;
      }
    }
  }

  void run();

 private:
  template <class T, class Dest, class... Ts>
  T ask(const Dest& dest, double* wait_s, Ts&&... xs) {
    const auto t0 = Clock::now();
    T out;
    std::string err;
    self_->request(dest, caf::infinite, std::forward<Ts>(xs)...)
        .receive([&](T& x) { out = std::move(x); },
                 [&](caf::error& e) { err = self_->system().render(e); });
    if (!err.empty()) throw std::runtime_error(err);
    if (wait_s) *wait_s += Seconds(Clock::now() - t0).count();
    return out;
  }

  // The full parameters of `unit`, usable on the compute stream.
  at::Tensor gather(int unit, int dir, int64_t version, int64_t step) {
    OpScope scope(&ctx_->registry, "wait-gather", rank_, unit, 0, step, deadline(step, ctx_->cfg.deadlines.collective_s));
    GatheredUnit g = ask<GatheredUnit>(shard_, &rec_.wait_gather_s, gather_atom::value,
                                       static_cast<int32_t>(unit), static_cast<int32_t>(dir), version);
    wait_for(g.ready, streams_.compute);
    rec_.wait_optimizer_s += g.waited_for_optimizer_s;
    return g.full;
  }
  // Done with `p` (gathered `unit`): its memory must outlive the work queued on the compute stream.
  void release(int unit, const at::Tensor& p) {
    if (streams_.on_device()) p.record_stream(streams_.compute);
    self_->send(shard_, release_atom::value, static_cast<int32_t>(unit));
  }
  void reduce(int unit, at::Tensor grad) {
    UnitGrad g{static_cast<int32_t>(unit), std::move(grad), DeviceEvent::record(streams_.compute),
               current_step_};
    self_->send(shard_, reduce_atom::value, std::move(g));
  }
  void status(int64_t step, const char* phase, int unit) {
    RankStatus s;
    s.rank = rank_;
    s.step = step;
    s.phase = phase;
    s.unit = unit;
    ctx_->registry.set_status(s);
  }
  double deadline(int64_t step, double base) const {
    return step <= 1 ? base * ctx_->cfg.deadlines.first_step_factor : base;
  }
  at::Tensor micro_batch(int64_t step, const Batch& b);
  void log(const StepRecord& r) const;

  caf::blocking_actor* self_;
  std::shared_ptr<NodeContext> ctx_;
  int local_, rank_;
  prefetcher_actor prefetcher_;
  param_shard_actor shard_;
  optimizer_actor optimizer_;
  checkpoint_actor checkpoint_;
  std::vector<optimizer_actor> node_optimizers_;
  StepRecord rec_;
  LossScaler scaler_;
  Clock::time_point last_checkpoint_ = Clock::now();
  RankStreams streams_;
  int64_t current_step_ = 0;
  int64_t samples_done_ = 0;
};

// One micro-batch's forward and backward. Returns its loss (a 0-d fp32 tensor on the device:
// reading it would synchronise, so it is summed there and read once per step).
at::Tensor Trainer::micro_batch(int64_t step, const Batch& b) {
  const Llama& model = *ctx_->model;
  const int units = static_cast<int>(ctx_->layout.units.size());
  const int head = units - 1;
  // Parameters after step - 1 optimizer steps; with the delayed update, after step - 2 (the
  // optimizer applies step - 1 meanwhile).
  const int64_t version = ctx_->cfg.optimizer.delayed_update
                              ? std::max(ctx_->start_step, step - 2) : step - 1;
  current_step_ = step;
  const double deadline_c = deadline(step, ctx_->cfg.deadlines.compute_s);
  // The loss scale (1 without loss scaling) and the mean over the global batch, at the loss.
  const double grad_scale = scaler_.scale / (ctx_->world * ctx_->cfg.train.grad_accum);
  // On a device the prefetcher has copied the batch up on the host-to-device stream: compute waits
  // for that copy, and the tensors are marked as used on the compute stream so that the caching
  // allocator does not reuse their memory before this step's kernels have read them.
  const at::Tensor tokens = b.tokens, labels = b.labels;
  TORCH_CHECK(tokens.device() == streams_.device && labels.device() == streams_.device,
              "the batch is on ", tokens.device(), ", not on the rank's ", streams_.device);
  wait_for(b.ready, streams_.compute);
  if (streams_.on_device()) {
    tokens.record_stream(streams_.compute);
    labels.record_stream(streams_.compute);
  }
  const at::Tensor inputs = tokens.narrow(1, 0, tokens.size(1) - 1);

  std::vector<at::Tensor> saved(units);  // each block's input (activation checkpoint)
  at::Tensor x;
  {
    at::NoGradGuard no_grad;
    for (int u = 0; u < head; ++u) {
      at::Tensor p = gather(u, +1, version, step);
      status(step, "forward", u);
      const auto t0 = Clock::now();
      {
        OpScope scope(&ctx_->registry, "forward", rank_, u, 0, step, deadline_c);
        fault::maybe("compute", rank_, step, u);  // fault injection (health/faults.hpp)
        if (u == 0) {
          x = model.embed_forward(p, inputs);
        } else {
          saved[u] = x;
          x = model.block_forward(u, p, x);
        }
      }
      rec_.compute_s += Seconds(Clock::now() - t0).count();
      release(u, p);
    }
  }
  at::Tensor p = gather(head, -1, version, step);
  status(step, "backward", head);
  auto t0 = Clock::now();
  HeadResult hr;
  {
    OpScope scope(&ctx_->registry, "backward", rank_, head, 0, step, deadline_c);
    hr = model.head_backward(p, x, labels, grad_scale);
  }
  rec_.compute_s += Seconds(Clock::now() - t0).count();
  reduce(head, hr.grad_flat);
  release(head, p);
  at::Tensor gx = hr.grad_x;
  for (int u = head - 1; u >= 1; --u) {
    p = gather(u, -1, version, step);
    status(step, "backward", u);
    t0 = Clock::now();
    std::pair<at::Tensor, at::Tensor> g;
    {
      OpScope scope(&ctx_->registry, "backward", rank_, u, 0, step, deadline_c);
      g = model.block_backward(u, p, saved[u], gx);
    }
    rec_.compute_s += Seconds(Clock::now() - t0).count();
    saved[u] = at::Tensor();
    gx = g.first;
    if (fault::maybe("gradient", rank_, step, u)) g.second.fill_(INFINITY);  // drills
    reduce(u, g.second);
    release(u, p);
  }
  p = gather(0, +1, version, step);
  status(step, "backward", 0);
  t0 = Clock::now();
  at::Tensor gemb;
  {
    OpScope scope(&ctx_->registry, "backward", rank_, 0, 0, step, deadline_c);
    gemb = model.embed_backward(p, inputs, gx);
  }
  rec_.compute_s += Seconds(Clock::now() - t0).count();
  reduce(0, gemb);
  release(0, p);
  return hr.loss;
}

void Trainer::log(const StepRecord& r) const {
  // compute | waiting for the optimizer's update of a unit | exposed communication (gathers not
  // hidden by prefetch, and the end-of-step reduction) | waiting for data.
  std::printf("step %5lld | loss %.4f | grad norm %.3f | lr %.2e | %8.0f tok/s | %6.0f ms"
              " (compute %.0f, wait optimizer %.0f, exposed comm %.0f + end of step %.0f, batch %.0f)\n",
              static_cast<long long>(r.step), r.loss, r.grad_norm, r.lr, r.tokens_per_s,
              r.step_s * 1e3, r.compute_s * 1e3, r.wait_optimizer_s * 1e3,
              r.exposed_gather_s() * 1e3, r.wait_finish_s * 1e3,
              r.wait_batch_s * 1e3);
  if (scaler_.on) std::printf("             loss scale %g\n", r.loss_scale);
  std::fflush(stdout);
}

void Trainer::run() {
  const Config& cfg = ctx_->cfg;
  const int64_t steps = cfg.train.steps;
  const int64_t tokens_per_step =
      int64_t{ctx_->world} * cfg.train.grad_accum * cfg.train.micro_batch * ctx_->data->seq_len();
  int64_t adam_step = ctx_->start_adam_step;
  double last_loss = 0;
  samples_done_ = ctx_->start_positions[local_];
  for (int64_t step = ctx_->start_step + 1; step <= steps; ++step) {
    if (ctx_->failed) throw std::runtime_error("stopping after an error elsewhere");
    rec_ = StepRecord{};
    rec_.step = step;
    fault::maybe("step", rank_, step);  // fault injection: stop-node, kill-node
    const auto t_step = Clock::now();
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(streams_.device));
    for (int64_t k = 0; k < cfg.train.grad_accum; ++k) {
      Batch b;
      {
        OpScope scope(&ctx_->registry, "batch", rank_, -1, 0, step, deadline(step, cfg.deadlines.batch_s));
        b = ask<Batch>(prefetcher_, &rec_.wait_batch_s, next_atom::value);
      }
      samples_done_ = b.first_sample + b.tokens.size(0);
      loss_sum += micro_batch(step, b);
    }
    status(step, "optimizer", -1);
    // The time cadence is decided by node 0's first rank and agreed by all (in the all-reduce).
    const bool time_due = cfg.checkpoint.every_minutes > 0 && rank_ == 0 &&
                          Seconds(Clock::now() - last_checkpoint_).count() >=
                              cfg.checkpoint.every_minutes * 60;
    const StepFacts facts = ask<StepFacts>(shard_, &rec_.wait_finish_s, finish_atom::value,
                                           loss_sum, cfg.train.grad_accum, time_due);
    StepOrder order;
    order.step = step;
    order.skip = !facts.finite;
    order.adam_step = order.skip ? adam_step : ++adam_step;
    order.lr = learning_rate(cfg.optimizer, order.adam_step > 0 ? order.adam_step : 1, steps);
    const double clip = cfg.optimizer.grad_clip;
    const double used_scale = scaler_.scale;
    const double norm = facts.grad_norm / used_scale;  // of the unscaled gradient
    // As torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1; the
    // optimizer also divides by the loss scale.
    const double coef = clip > 0 ? clip / (norm + 1e-6) : 1.0;
    order.grad_scale = (coef < 1.0 ? coef : 1.0) / used_scale;
    self_->send(optimizer_, step_atom::value, order);
    std::string where;
    for (int32_t u : facts.overflow_units)
      where += (where.empty() ? "" : ", ") + ctx_->layout.units[u].name + " (unit " + std::to_string(u) + ")";
    if (where.empty()) where = "an unknown unit";
    if (!facts.finite) {
      rec_.skipped = true;
      rec_.overflow_units.assign(facts.overflow_units.begin(), facts.overflow_units.end());
      if (rank_ == 0)
        std::printf("step %lld: gradient overflow in %s; loss scale %g; step skipped\n",
                    static_cast<long long>(step), where.c_str(), used_scale);
    }
    if (scaler_.on) scaler_.update(!facts.finite, step, where);  // throws at the minimum

    rec_.loss = facts.loss;
    rec_.grad_norm = norm;
    rec_.loss_scale = used_scale;
    rec_.lr = order.lr;
    rec_.step_s = Seconds(Clock::now() - t_step).count();
    rec_.tokens_per_s = tokens_per_step / rec_.step_s;
    last_loss = facts.loss;
    if (local_ == 0) {
      std::lock_guard<std::mutex> lock(ctx_->result_mu);
      ctx_->result.steps.push_back(rec_);
    }
    const bool print = rank_ == 0 && !ctx_->quiet &&
                       (step == 1 || step == steps || step % std::max<int64_t>(1, cfg.train.log_every) == 0);
    if (print) log(rec_);

    const bool save_now = ((cfg.checkpoint.every_steps > 0 && step % cfg.checkpoint.every_steps == 0) ||
                           facts.checkpoint) &&
                          step != steps;
    if (save_now) last_checkpoint_ = Clock::now();
    if (save_now && local_ == 0) {
      // The snapshot needs every local rank's optimizer to have applied this step. Another rank's
      // step order may not have reached its optimizer yet, so ask until it has; none can be
      // further (their next step needs this rank's next finish).
      for (const auto& o : node_optimizers_)
        while (ask<int64_t>(o, nullptr, sync_atom::value) < step)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
      CheckpointInfo info{step, adam_step, samples_done_, last_loss, scaler_.state()};
      ask<std::string>(checkpoint_, nullptr, save_atom::value, info);
    }
  }
  ask<int64_t>(optimizer_, nullptr, sync_atom::value);
  status(steps, "done", -1);
  if (local_ == 0) {
    std::lock_guard<std::mutex> lock(ctx_->result_mu);
    ctx_->result.final_adam_step = adam_step;
    ctx_->result.final_samples = samples_done_;
    ctx_->result.final_loss = last_loss;
    ctx_->result.final_scaler = scaler_.state();
  }
}

void trainer_fn(caf::blocking_actor* self, std::shared_ptr<NodeContext> ctx, int local,
                prefetcher_actor prefetcher, param_shard_actor shard, optimizer_actor optimizer,
                checkpoint_actor checkpoint, std::vector<optimizer_actor> node_optimizers) {
  try {
    if (ctx->cfg.train.threads > 0) at::set_num_threads(ctx->cfg.train.threads);
    // On a device, this thread's current stream is the rank's compute stream for the whole run.
    std::optional<c10::StreamGuard> on_compute;
    if (ctx->on_device) on_compute.emplace(ctx->streams[local].compute);
    Trainer t(self, ctx, local, std::move(prefetcher), std::move(shard), std::move(optimizer),
              std::move(checkpoint), std::move(node_optimizers));
    t.run();
  } catch (const std::exception& e) {
    ctx->fail("rank " + std::to_string(ctx->first_rank + local) + ": " + e.what());
  }
}

}  // namespace

caf::actor spawn_trainer(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx, int local_rank,
                         prefetcher_actor prefetcher, param_shard_actor shard,
                         optimizer_actor optimizer, checkpoint_actor checkpoint,
                         std::vector<optimizer_actor> node_optimizers) {
  return sys.spawn<caf::detached>(trainer_fn, std::move(ctx), local_rank, std::move(prefetcher),
                                  std::move(shard), std::move(optimizer), std::move(checkpoint),
                                  std::move(node_optimizers));
}

}  // namespace xy
