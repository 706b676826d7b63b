// The trainer actor (one per rank, its own thread): runs the step schedule of docs/ARCHITECTURE.md.
//
//   for each micro-batch:
//     forward, unit by unit: gather(u) -> compute (no autograd; keep only the block's input) -> release(u)
//     head: gather -> loss + backward -> reduce(head grad)
//     backward, last block first: gather(u) -> recompute from the saved input + backward
//                                 -> reduce(u's grad) -> release(u)
//     embedding backward -> reduce
//   (tied embeddings: the embedding unit stays gathered from its forward to its backward; the
//    head reads it as its LM head, and the head's part of its gradient joins the embedding's
//    before the one reduce of unit 0)
//   finish: global gradient norm and loss (one all-reduce) -> clip -> step order to the optimizer
//
// Gradients are scaled at the loss by micro_batch / T (T: the samples of a step over every rank,
// sum of micro_batch x grad_accum), so that the reduce-scatter's sum is the mean over the global
// batch also when nodes run different micro-batches (mixed GPUs): each sample weighs the same.
// With the same split everywhere this is 1 / (world * grad_accum).
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <thread>

#include <ATen/Parallel.h>

#include "actors/actors.hpp"
#include "actors/context.hpp"
#include "health/faults.hpp"
#include "health/metrics.hpp"
#include "io/batch_split.hpp"
#include "optim/loss_scale.hpp"
#include "optim/schedule.hpp"

namespace xy {
namespace {

using Seconds = std::chrono::duration<double>;

class Trainer {
 public:
  Trainer(caf::blocking_actor* self, std::shared_ptr<NodeContext> ctx, int local,
          prefetcher_actor prefetcher, param_shard_actor shard, optimizer_actor optimizer,
          checkpoint_actor checkpoint, std::vector<optimizer_actor> node_optimizers)
      : self_(self), ctx_(std::move(ctx)), local_(local), rank_(ctx_->first_rank + local),
        prefetcher_(std::move(prefetcher)), shard_(std::move(shard)),
        optimizer_(std::move(optimizer)), checkpoint_(std::move(checkpoint)),
        node_optimizers_(std::move(node_optimizers)), streams_(ctx_->streams[local]),
        scaler_(ctx_->cfg.train, ctx_->start_scaler) {}

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
    GatheredUnit g = ask<GatheredUnit>(
        shard_, &rec_.wait_gather_s,
        GatherRequest{static_cast<int32_t>(unit), static_cast<int32_t>(dir), version});
    wait_for(g.ready, streams_.compute);
    rec_.wait_optimizer_s += g.waited_for_optimizer_s;
    return g.full;
  }
  // Done with `p` (gathered `unit`): its memory must outlive the work queued on the compute stream.
  void release(int unit, const at::Tensor& p) {
    if (streams_.on_device()) p.record_stream(streams_.compute);
    self_->send(shard_, ReleaseRequest{static_cast<int32_t>(unit)});
  }
  void reduce(int unit, at::Tensor grad) {
    UnitGrad g{static_cast<int32_t>(unit), std::move(grad), DeviceEvent::record(streams_.compute),
               current_step_, last_micro_batch_};
    self_->send(shard_, std::move(g));
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
  // The parameters a micro-batch of `step` computes with: after step - 1 optimizer steps; with
  // the delayed update, after step - 2 (the optimizer applies step - 1 meanwhile).
  int64_t version_for(int64_t step) const {
    return ctx_->cfg.optimizer.delayed_update ? std::max(ctx_->start_step, step - 2) : step - 1;
  }
  // The batch's tokens, ready on the compute stream.
  at::Tensor ready_tokens(const Batch& b);
  // Forward over the units before the head (embedding, blocks), each gathered in turn without
  // autograd: the head's input. With `saved`, each block's input is kept for the backward
  // (activation checkpointing); without, nothing is kept (an evaluation's forward).
  // With tied embeddings the embedding unit is not released: it is returned in `*embed` (the
  // caller releases it), for the head.
  at::Tensor forward_units(int64_t step, int64_t version, const at::Tensor& inputs,
                           std::vector<at::Tensor>* saved, at::Tensor* embed);
  // The head's loss and backward, then the backward over the blocks from their saved inputs
  // (recomputed) and the embedding; each unit's gradient goes to the parameter-shard as it is
  // made. Returns the loss (a 0-d fp32 tensor on the device). `prefetch_after`: the embedding's
  // gather prefetches the next forward's first blocks (false at the end of a step whose successor
  // reads newer parameters: they would be gathered again).
  at::Tensor backward_units(int64_t step, int64_t version, const at::Tensor& inputs,
                            const at::Tensor& labels, at::Tensor x, std::vector<at::Tensor>& saved,
                            const at::Tensor& embed, bool prefetch_after);
  at::Tensor micro_batch(int64_t step, const Batch& b, bool prefetch_after);
  void propose_split(int64_t step, const std::vector<double>& node_compute);
  // Every held-out set ([eval]) after step `step`: forward only, through the same gathers as
  // training; its mean token loss over every rank's samples (one all-reduce in the collective
  // order). Every rank evaluates the same number of micro-batches.
  void evaluate(int64_t step);
  void log(const StepRecord& r) const;
  // Seconds to the end (eta_seconds over this node's step records).
  double eta_s() const;
  // The step's line in metrics.jsonl (global rank 0).
  void record_metrics(const StepRecord& r) const;

  caf::blocking_actor* self_;
  std::shared_ptr<NodeContext> ctx_;
  int local_, rank_;
  prefetcher_actor prefetcher_;
  param_shard_actor shard_;
  optimizer_actor optimizer_;
  checkpoint_actor checkpoint_;
  std::vector<optimizer_actor> node_optimizers_;
  StepRecord rec_;
  Clock::time_point last_checkpoint_ = Clock::now();
  RankStreams streams_;
  LossScaler scaler_;
  int64_t current_step_ = 0;
  bool last_micro_batch_ = true;  // the micro-batch being computed is the step's last
  int64_t samples_done_ = 0;
  std::vector<double> node_compute_;  // node 0's rank 0: the nodes' measured compute per sample, summed
};

at::Tensor Trainer::ready_tokens(const Batch& b) {
  // On a device the prefetcher has copied the batch up on the host-to-device stream: compute waits
  // for that copy, and the tensors are marked as used on the compute stream so that the caching
  // allocator does not reuse their memory before this step's kernels have read them.
  TORCH_CHECK(b.tokens.device() == streams_.device && b.labels.device() == streams_.device,
              "the batch is on ", b.tokens.device(), ", not on the rank's ", streams_.device);
  wait_for(b.ready, streams_.compute);
  if (streams_.on_device()) {
    b.tokens.record_stream(streams_.compute);
    b.labels.record_stream(streams_.compute);
  }
  return b.tokens.narrow(1, 0, b.tokens.size(1) - 1);
}

at::Tensor Trainer::forward_units(int64_t step, int64_t version, const at::Tensor& inputs,
                                  std::vector<at::Tensor>* saved, at::Tensor* embed) {
  const Llama& model = *ctx_->model;
  const int head = static_cast<int>(ctx_->layout.units.size()) - 1;
  const double deadline_c = deadline(step, ctx_->cfg.deadlines.compute_s);
  at::NoGradGuard no_grad;
  at::Tensor x;
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
        if (saved) (*saved)[u] = x;
        x = model.block_forward(u, p, x);
      }
    }
    rec_.compute_s += Seconds(Clock::now() - t0).count();
    if (u == 0 && model.tied()) *embed = p;  // kept for the head: one gather, released by the caller
    else release(u, p);
  }
  return x;
}

at::Tensor Trainer::backward_units(int64_t step, int64_t version, const at::Tensor& inputs,
                                   const at::Tensor& labels, at::Tensor x,
                                   std::vector<at::Tensor>& saved, const at::Tensor& embed,
                                   bool prefetch_after) {
  const Llama& model = *ctx_->model;
  const int head = static_cast<int>(ctx_->layout.units.size()) - 1;
  const double deadline_c = deadline(step, ctx_->cfg.deadlines.compute_s);
  // The loss scale (1 without loss scaling) and the mean over the global batch, at the loss.
  // T / micro_batch is the integer world x grad_accum when every node runs the same split, so the
  // scale is that of 1 / (world x grad_accum) bit for bit.
  const double grad_scale =
      scaler_.scale() /
      (static_cast<double>(step_samples(ctx_->cfg)) / node_micro_batch(ctx_->cfg, ctx_->node_index));
  at::Tensor p = gather(head, -1, version, step);
  status(step, "backward", head);
  auto t0 = Clock::now();
  HeadResult hr;
  {
    OpScope scope(&ctx_->registry, "backward", rank_, head, 0, step, deadline_c);
    hr = model.head_backward(p, x, labels, grad_scale, embed);
  }
  x = at::Tensor();
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
  // Tied: the embedding unit is still held from the forward, so this gather is answered from the
  // parameter-shard's cache (no second all-gather; the message sequence is that of untied runs).
  // Direction 0: no prefetch.
  p = gather(0, prefetch_after ? +1 : 0, version, step);
  status(step, "backward", 0);
  t0 = Clock::now();
  at::Tensor gemb;
  {
    OpScope scope(&ctx_->registry, "backward", rank_, 0, 0, step, deadline_c);
    gemb = model.embed_backward(p, inputs, gx);
    if (hr.grad_embed.defined()) gemb.add_(hr.grad_embed);  // the LM head's use of the matrix
  }
  hr.grad_embed = at::Tensor();
  rec_.compute_s += Seconds(Clock::now() - t0).count();
  reduce(0, gemb);
  release(0, p);
  return hr.loss;
}

// One micro-batch's forward and backward. Returns its loss (a 0-d fp32 tensor on the device:
// reading it would synchronise, so it is summed there and read once per step).
at::Tensor Trainer::micro_batch(int64_t step, const Batch& b, bool prefetch_after) {
  const int64_t version = version_for(step);
  current_step_ = step;
  const at::Tensor inputs = ready_tokens(b);
  std::vector<at::Tensor> saved(ctx_->layout.units.size());  // each block's input
  at::Tensor embed;  // tied embeddings: the gathered embedding unit, until its backward
  at::Tensor x = forward_units(step, version, inputs, &saved, &embed);
  return backward_units(step, version, inputs, b.labels, std::move(x), saved, embed, prefetch_after);
}

// Mixed GPUs: the nodes' compute per sample, measured in the steps after the first (warm-up) two
// of this run, and a split of the global batch that balances it (io/batch_split.hpp), printed and
// logged by the job's rank 0 when it differs from the configured one.
void Trainer::propose_split(int64_t step, const std::vector<double>& node_compute) {
  constexpr int64_t kFirst = 2, kLast = 4;  // measured steps, after the run's start
  const int64_t k = step - ctx_->start_step;
  if (rank_ != 0 || ctx_->nodes < 2 || k < kFirst || k > kLast) return;
  if (node_compute.size() != static_cast<size_t>(ctx_->nodes)) return;
  node_compute_.resize(node_compute.size(), 0.0);
  for (size_t n = 0; n < node_compute.size(); ++n) node_compute_[n] += node_compute[n];
  if (k != kLast) return;
  const Config& cfg = ctx_->cfg;
  std::vector<NodeSplit> nodes(ctx_->nodes);
  for (int n = 0; n < ctx_->nodes; ++n)
    nodes[n] = NodeSplit{cfg.topology.nodes[n].devices, node_micro_batch(cfg, n), node_grad_accum(cfg, n),
                         node_compute_[n] / (kLast - kFirst + 1)};
  const std::string line = split_proposal(nodes);
  if (line.empty()) return;
  if (!ctx_->quiet) {
    std::printf("xy: %s\n", line.c_str());
    std::fflush(stdout);
  }
  if (ctx_->metrics) {
    std::vector<int64_t> now;
    std::vector<double> seconds;
    for (const NodeSplit& n : nodes) now.push_back(n.micro_batch), seconds.push_back(n.seconds_per_sample);
    const std::vector<int64_t> mb = balanced_micro_batches(nodes);
    ctx_->metrics->event({{"event", "batch_split"}, {"step", step}, {"compute_per_sample_s", seconds},
                          {"micro_batch", now}, {"balanced_micro_batch", mb},
                          {"step_compute_s", step_compute(nodes, now)},
                          {"balanced_step_compute_s", step_compute(nodes, mb)}});
  }
}

namespace {
// 1234567 -> "1.23M"; seconds -> "1h02m" / "3m05s" / "12s".
std::string si(double x) {
  char b[32];
  const char* units[] = {"", "k", "M", "G", "T"};
  int u = 0;
  while (x >= 1000 && u < 4) x /= 1000, ++u;
  std::snprintf(b, sizeof b, u == 0 ? "%.0f%s" : "%.3g%s", x, units[u]);
  return b;
}
std::string duration_text(double s) {
  char b[32];
  const long long t = static_cast<long long>(s + 0.5);
  if (t >= 3600) std::snprintf(b, sizeof b, "%lldh%02lldm", t / 3600, t % 3600 / 60);
  else if (t >= 60) std::snprintf(b, sizeof b, "%lldm%02llds", t / 60, t % 60);
  else std::snprintf(b, sizeof b, "%llds", t);
  return b;
}
}  // namespace

double Trainer::eta_s() const {
  std::lock_guard<std::mutex> lock(ctx_->result_mu);
  return eta_seconds(ctx_->result.steps, ctx_->cfg.train.steps);
}

void Trainer::record_metrics(const StepRecord& r) const {
  const int64_t per_step = tokens_per_step(*ctx_);
  const double rss = rss_gib();
  double gpu = 0;
  if (streams_.on_device()) gpu = device_reserved_gib(streams_.device);
  const double params = static_cast<double>(ctx_->layout.total_numel());
  nlohmann::json j = {
      {"step", r.step}, {"loss", r.loss}, {"grad_norm", r.grad_norm}, {"lr", r.lr},
      {"loss_scale", r.loss_scale}, {"skipped", r.skipped}, {"overflow_units", r.overflow_units},
      {"tokens", r.step * per_step}, {"tokens_target", ctx_->cfg.train.steps * per_step},
      {"tokens_per_s", r.tokens_per_s}, {"step_s", r.step_s}, {"compute_s", r.compute_s},
      {"wait_optimizer_s", r.wait_optimizer_s}, {"exposed_comm_s", r.exposed_gather_s()},
      {"end_of_step_s", r.wait_finish_s}, {"wait_batch_s", r.wait_batch_s},
      {"host_rss_gib", rss}, {"gpu_mem_gib", gpu}, {"eta_s", eta_s()}};
  // Model FLOPs utilisation as the benchmark counts it: 6 * parameters * tokens/s over the job's
  // peak (attention and recompute not counted); unknown (null) where the device's peak is.
  if (ctx_->peak_flops > 0)
    j["mfu"] = 6.0 * params * r.tokens_per_s / (ctx_->world * ctx_->peak_flops);
  else
    j["mfu"] = nullptr;
  ctx_->metrics->step(j);
}

void Trainer::evaluate(int64_t step) {
  const Config& cfg = ctx_->cfg;
  const Llama& model = *ctx_->model;
  const int head = static_cast<int>(ctx_->layout.units.size()) - 1;
  // The parameters the next step computes with (after `step` optimizer steps; with the delayed
  // update, after step - 1), so that training goes on exactly as without the evaluation; after
  // the last step, the final parameters.
  const int64_t version = step >= cfg.train.steps ? step : version_for(step + 1);
  // Every rank runs as many forwards (they gather alike): by default the smallest node's micro-batch.
  int64_t mb = cfg.eval.micro_batch;
  if (mb <= 0) {
    mb = node_micro_batch(cfg, 0);
    for (int n = 1; n < ctx_->nodes; ++n) mb = std::min(mb, node_micro_batch(cfg, n));
  }
  const int64_t len = cfg.data.seq_len;
  const double deadline_c = deadline(step, cfg.deadlines.compute_s);
  for (const EvalSet& set : ctx_->eval_sets) {
    const auto t0 = Clock::now();
    // The set's first samples, as many as every rank can take alike; rank r takes r, r + world, ...
    const int64_t per_rank = std::min(cfg.eval.samples, set.samples->size()) / ctx_->world;
    const auto dev = at::TensorOptions().device(streams_.device);
    at::Tensor sums = at::zeros({2}, dev.dtype(at::kDouble));  // [token loss sum, tokens]
    for (int64_t first = 0; first < per_rank; first += mb) {
      const int64_t n = std::min(mb, per_rank - first);
      at::Tensor ids = at::empty({n, len + 1}, at::kLong);
      for (int64_t i = 0; i < n; ++i)
        set.samples->copy_sample(rank_ + (first + i) * ctx_->world, ids.data_ptr<int64_t>() + i * (len + 1));
      ids = ids.to(streams_.device);
      const at::Tensor inputs = ids.narrow(1, 0, len);
      at::Tensor labels = ids.narrow(1, 1, len);
      if (const int32_t masked = set.samples->masked_label(); masked >= 0)
        labels = labels.masked_fill(labels == masked, -100);  // cross-entropy's ignore_index
      at::Tensor embed;  // tied embeddings: the LM head's matrix, held from the forward
      at::Tensor x = forward_units(step, version, inputs, nullptr, &embed);
      at::NoGradGuard no_grad;
      at::Tensor p = gather(head, +1, version, step);
      status(step, "eval", head);
      {
        OpScope scope(&ctx_->registry, "forward", rank_, head, 0, step, deadline_c);
        const at::Tensor logits = model.head_forward(p, x, embed);
        const at::Tensor loss_sum = at::cross_entropy_loss(
            logits.reshape({-1, logits.size(-1)}).to(at::kFloat), labels.reshape({-1}), {},
            at::Reduction::Sum);
        sums[0] += loss_sum.to(at::kDouble);
        sums[1] += (labels != -100).sum().to(at::kDouble);
      }
      release(head, p);
      if (embed.defined()) release(0, embed);
    }
    const std::vector<double> total = ask<std::vector<double>>(shard_, nullptr, SumRequest{sums});
    EvalRecord e;
    e.name = set.name;
    e.step = step;
    e.tokens = total.at(1);
    e.loss = total.at(1) > 0 ? total.at(0) / total.at(1) : 0.0;
    e.samples = per_rank * ctx_->world;
    e.seconds = Seconds(Clock::now() - t0).count();
    if (rank_ == 0) {
      if (!ctx_->quiet)
        std::printf("eval %-10s | step %5lld | loss %.4f | ppl %.2f | %lld samples, %.0f tokens in %.1f s\n",
                    e.name.c_str(), static_cast<long long>(step), e.loss, std::exp(e.loss),
                    static_cast<long long>(e.samples), e.tokens, e.seconds);
      std::fflush(stdout);
      if (ctx_->metrics)
        ctx_->metrics->eval({{"eval", e.name}, {"step", step}, {"loss", e.loss}, {"ppl", std::exp(e.loss)},
                             {"tokens", e.tokens}, {"samples", e.samples}, {"seconds", e.seconds}});
    }
    if (local_ == 0) {
      std::lock_guard<std::mutex> lock(ctx_->result_mu);
      ctx_->result.evals.push_back(e);
    }
  }
}

void Trainer::log(const StepRecord& r) const {
  // compute | waiting for the optimizer's update of a unit | exposed communication (gathers not
  // hidden by prefetch, and the end-of-step reduction) | waiting for data.
  const double per_step = static_cast<double>(tokens_per_step(*ctx_));
  std::printf("step %5lld | loss %.4f | grad norm %.3f | lr %.2e | %8.0f tok/s | %6.0f ms"
              " (compute %.0f, wait optimizer %.0f, exposed comm %.0f + end of step %.0f, batch %.0f)"
              " | tokens %s of %s, ETA %s\n",
              static_cast<long long>(r.step), r.loss, r.grad_norm, r.lr, r.tokens_per_s,
              r.step_s * 1e3, r.compute_s * 1e3, r.wait_optimizer_s * 1e3,
              r.exposed_gather_s() * 1e3, r.wait_finish_s * 1e3,
              r.wait_batch_s * 1e3, si(per_step * r.step).c_str(),
              si(per_step * ctx_->cfg.train.steps).c_str(), duration_text(eta_s()).c_str());
  if (scaler_.on()) std::printf("             loss scale %g\n", r.loss_scale);
  std::fflush(stdout);
}

void Trainer::run() {
  const Config& cfg = ctx_->cfg;
  const int64_t steps = cfg.train.steps;
  const int64_t step_tokens = tokens_per_step(*ctx_);
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
    const int64_t accum = node_grad_accum(cfg, ctx_->node_index);
    for (int64_t k = 0; k < accum; ++k) {
      last_micro_batch_ = k + 1 == accum;
      Batch b;
      {
        OpScope scope(&ctx_->registry, "batch", rank_, -1, 0, step, deadline(step, cfg.deadlines.batch_s));
        b = ask<Batch>(prefetcher_, &rec_.wait_batch_s, next_atom::value);
      }
      samples_done_ = b.first_sample + b.tokens.size(0);
      // The step's last gather prefetches only what the next step reads at the same version (the
      // first steps of the delayed update); decided from the micro-batch index, the same on
      // every rank, so the collective sequence stays the same everywhere.
      const bool prefetch_after =
          k + 1 < accum || version_for(step + 1) == version_for(step);
      loss_sum += micro_batch(step, b, prefetch_after);
    }
    status(step, "optimizer", -1);
    // The time cadence is decided by node 0's first rank and agreed by all (in the all-reduce).
    const bool time_due = cfg.checkpoint.every_minutes > 0 && rank_ == 0 &&
                          Seconds(Clock::now() - last_checkpoint_).count() >=
                              cfg.checkpoint.every_minutes * 60;
    // The reported loss is the mean over the global batch's samples: each micro-batch's mean
    // weighs its micro_batch (exact in double, so a uniform split reports as before).
    const int64_t mb = node_micro_batch(cfg, ctx_->node_index);
    const StepFacts facts = ask<StepFacts>(shard_, &rec_.wait_finish_s,
                                           FinishRequest{loss_sum.to(at::kDouble) * static_cast<double>(mb),
                                                         accum * mb, time_due, rec_.compute_s / (accum * mb)});
    propose_split(step, facts.node_compute);
    StepOrder order;
    order.step = step;
    order.skip = !facts.finite;
    order.adam_step = order.skip ? adam_step : ++adam_step;
    order.lr = learning_rate(cfg.optimizer, order.adam_step > 0 ? order.adam_step : 1, steps);
    const double clip = cfg.optimizer.grad_clip;
    const double used_scale = scaler_.scale();
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
    if (scaler_.on()) scaler_.update(!facts.finite, step, where);  // throws at the minimum

    rec_.loss = facts.loss;
    rec_.grad_norm = norm;
    rec_.loss_scale = used_scale;
    rec_.lr = order.lr;
    rec_.step_s = Seconds(Clock::now() - t_step).count();
    rec_.tokens_per_s = step_tokens / rec_.step_s;
    last_loss = facts.loss;
    if (local_ == 0) {  // before the metrics line and the step line, whose ETA reads it
      std::lock_guard<std::mutex> lock(ctx_->result_mu);
      ctx_->result.steps.push_back(rec_);
    }
    if (ctx_->metrics && rank_ == 0) record_metrics(rec_);
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
    const bool eval_due = (cfg.eval.every_steps > 0 && step % cfg.eval.every_steps == 0) ||
                          (cfg.eval.at_end && step == steps);
    if (eval_due && !ctx_->eval_sets.empty()) evaluate(step);
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
