// The node supervisor: builds the node's context (context.cpp), spawns every actor, waits for the
// trainers, takes the final checkpoint and shuts everything down; after a failure, ends ranks
// blocked in collectives and, with several nodes, waits for the peers' verdict.
#include <cstdio>
#include <iostream>

#include "actors/actors.hpp"
#include "actors/context.hpp"
#include "ckpt/checkpoint_io.hpp"
#include "health/control.hpp"
#include "health/metrics.hpp"
#include "io/error_text.hpp"
#include "io/threads.hpp"

namespace xy {

int64_t tokens_per_step(const NodeContext& ctx) {
  return step_samples(ctx.cfg) * ctx.cfg.data.seq_len;  // every node's micro_batch x grad_accum
}

double eta_seconds(const std::vector<StepRecord>& steps, int64_t total_steps) {
  if (steps.empty()) return 0;
  const size_t first = steps.size() > 1 ? 1 : 0;
  const size_t from = std::max(first, steps.size() > 20 ? steps.size() - 20 : size_t{0});
  double sum = 0;
  for (size_t i = from; i < steps.size(); ++i) sum += steps[i].step_s;
  return sum / static_cast<double>(steps.size() - from) * static_cast<double>(total_steps - steps.back().step);
}

namespace {

// A GPU that ran out of memory during training: what the plan kept there and estimated, and what to
// change (docs/PLACEMENT.md). Empty for any other error.
std::string out_of_memory_advice(const NodeContext& ctx, const std::string& line) {
  if (!ctx.on_device || ctx.plan.units.empty() || line.find("out of memory") == std::string::npos) return "";
  const PlacementPlan& p = ctx.plan;
  char share[32];
  std::snprintf(share, sizeof share, "%.2f", p.device_share);
  std::string s = " [xy: the placement plan kept " + bytes_text(static_cast<double>(p.device_bytes)) +
                  " on this GPU and estimated a step at " + bytes_text(static_cast<double>(p.transient_bytes)) +
                  " more, of " + bytes_text(static_cast<double>(p.usable_device_bytes)) + " usable (optimizer.placement = \"" +
                  ctx.cfg.optimizer.placement + "\": " + share + " of the optimizer state on the GPU); ";
  if (p.device_state())
    s += "set optimizer.placement to a smaller share than " + std::string(share) + " (or \"cpu\"), ";
  if (p.units.front().working == Where::kDevice) s += "set actors.offload_params = true, ";
  return s + "or lower train.micro_batch or actors.gather_budget_mb]";
}

}  // namespace

void NodeContext::fail(const std::string& what, int code) {
  failed = true;
  std::lock_guard<std::mutex> lock(result_mu);
  // Actors pass on what() of whatever they caught: never a LibTorch backtrace to the user.
  const std::string line = without_backtrace(what) + out_of_memory_advice(*this, what);
  std::cerr << "xy: error: " << line << std::endl;
  if (result.exit_code == kExitOk) {
    result.exit_code = code;
    result.error = line;
  }
}


TrainResult run_training(const Config& cfg, const RunOptions& opts) {
  auto ctx = std::make_shared<NodeContext>();
  try {
    build_context(*ctx, cfg, opts);
  } catch (const ThreadStartError& e) {  // the system refused a thread (ulimit): not a usage error
    TrainResult r;
    r.exit_code = kExitError;
    r.error = e.what();
    return r;
  } catch (const CheckpointError& e) {
    TrainResult r;
    r.exit_code = kExitError;
    r.error = e.what();
    return r;
  } catch (const PlacementMismatch& e) {
    TrainResult r;
    r.exit_code = kExitError;
    r.error = e.what();
    return r;
  } catch (const std::exception& e) {
    TrainResult r;
    r.exit_code = kExitUsage;
    r.error = without_backtrace(e.what());
    return r;
  }
  int64_t host_bytes = 0, working_bytes = 0;
  for (const auto& sh : ctx->shards) {
    host_bytes += sh->state_bytes();
    working_bytes += sh->working_bytes();
  }
  const int64_t params = ctx->layout.total_numel();
  const double share = static_cast<double>(params) * ctx->local_ranks / ctx->shard_world;
  if (!opts.quiet)
    std::printf("xy: %lld parameters in %zu units; world size %d (node %d of %d: ranks %d-%d, %s); "
                "host state (fp32 master, m, v, gradient landing) %.1f MiB = %.1f bytes/parameter; "
                "working copies %.1f bytes/parameter (%s); process RSS %.1f GiB\n",
                static_cast<long long>(params), ctx->layout.units.size(), ctx->world,
                ctx->node_index, ctx->nodes, ctx->first_rank, ctx->first_rank + ctx->local_ranks - 1,
                ctx->comms.empty() ? "?" : ctx->comms[0]->backend().c_str(), host_bytes / 1048576.0,
                host_bytes / share, working_bytes / share,
                !ctx->on_device                 ? "in host memory on CPU ranks"
                : ctx->plan.units.front().working == Where::kPinnedHost ? "pinned host memory: parameter offload"
                                                : "device memory",
                rss_gib());
  // Where the state is, as planned (and allocated: build_context checked): one line.
  if (!opts.quiet) std::printf("xy: placement %s\n", ctx->plan.summary().c_str());

  // The run's record: node 0 writes it (global rank 0's view of each step, after the all-reduce).
  if (opts.metrics && ctx->node_index == 0) {
    try {
      ctx->metrics = std::make_shared<MetricsLog>(cfg.data.work_dir, ctx->start_step, true);
      ctx->metrics->event({{"event", "start"}, {"step", ctx->start_step},
                           {"resumed_from", ctx->resumed_from}, {"world", ctx->world},
                           {"shard", ctx->node_shard ? "node" : "global"}, {"nodes", ctx->nodes},
                           {"steps", cfg.train.steps},
                           {"placement", {{"device_bytes", ctx->plan.device_bytes},
                                          {"host_bytes", ctx->plan.host_bytes},
                                          {"pinned_bytes", ctx->plan.pinned_bytes},
                                          {"local_ranks", ctx->local_ranks}}}});
    } catch (const std::exception& e) {
      TrainResult r;
      r.exit_code = kExitError;
      r.error = e.what();
      return r;
    }
  }
  if (!ctx->resumed_from.empty() && !opts.quiet)
    std::printf("xy: resumed from %s (step %lld)\n", ctx->resumed_from.c_str(),
                static_cast<long long>(ctx->start_step));
  const auto t0 = Clock::now();
  // CAF cannot recover from a refused thread (its scheduler, a detached actor: std::terminate):
  // room for them is checked first (scheduler workers and clock, the watchdog, checkpoint and
  // status threads, and a trainer, parameter shard and optimizer per local rank).
  try {
    check_threads_available(static_cast<int>(std::max(4u, std::thread::hardware_concurrency())) + 6 +
                                3 * ctx->local_ranks,
                            "the actors of " + std::to_string(ctx->local_ranks) + " local ranks");
  } catch (const ThreadStartError& e) {
    TrainResult r;
    r.exit_code = kExitError;
    r.error = e.what();
    return r;
  }
  {
    caf::actor_system_config sys_cfg;
    caf::actor_system sys{sys_cfg};
    {
      caf::scoped_actor self{sys};
      auto watchdog = spawn_watchdog(sys, ctx);
      auto checkpoint = spawn_checkpoint(sys, ctx);
      auto dataloader = spawn_dataloader(sys, ctx, ctx->start_positions);
      std::vector<prefetcher_actor> prefetchers;
      std::vector<param_shard_actor> shards;
      std::vector<optimizer_actor> optimizers;
      std::vector<caf::actor> trainers;
      for (int l = 0; l < ctx->local_ranks; ++l) {
        prefetchers.push_back(spawn_prefetcher(sys, ctx, l, dataloader));
        shards.push_back(spawn_param_shard(sys, ctx, l));
        optimizers.push_back(spawn_optimizer(sys, ctx, l, shards.back()));
      }
      for (int l = 0; l < ctx->local_ranks; ++l) {
        trainers.push_back(spawn_trainer(sys, ctx, l, prefetchers[l], shards[l], optimizers[l],
                                         checkpoint, l == 0 ? optimizers : std::vector<optimizer_actor>{}));
        self->monitor(trainers.back());
      }
      // Wait for every trainer. After a failure the others may be blocked in a collective with
      // the failed rank, which cannot be joined: give them a grace period, then end the process.
      size_t down = 0;
      auto failed_since = Clock::time_point::max();
      while (down < trainers.size()) {
        self->receive([&](caf::down_msg&) { ++down; },
                      caf::after(std::chrono::milliseconds(500)) >> [&] {
                        std::lock_guard<std::mutex> lock(ctx->result_mu);
                        if (ctx->result.exit_code == kExitOk) return;
                        if (failed_since == Clock::time_point::max()) failed_since = Clock::now();
                        if (Clock::now() - failed_since > std::chrono::seconds(10)) {
                          std::cerr << "xy: ranks did not stop after the error above; exiting\n";
                          for (const auto& line : abort_communicators()) std::cerr << "xy: " << line << "\n";
                          std::fflush(nullptr);
                          std::_Exit(ctx->result.exit_code);
                        }
                      });
      }
      ctx->result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      const bool ok = ctx->result.exit_code == kExitOk;
      if (!ok && ctx->nodes > 1) await_peer_verdict(*ctx);  // a lost peer: its report and kExitPeerLost
      if (ok && opts.checkpoint_at_end) {
        CheckpointInfo info{cfg.train.steps, ctx->result.final_adam_step, ctx->result.final_samples,
                            ctx->result.final_loss, ctx->result.final_scaler};
        self->request(checkpoint, caf::infinite, save_atom::value, info)
            .receive([&](std::string&) {}, [&](caf::error& e) { ctx->fail(sys.render(e)); });
      }
      // Every checkpoint write still in flight ends before anything is torn down.
      std::string dir;
      self->request(checkpoint, caf::infinite, flush_atom::value)
          .receive([&](std::string& d) { dir = d; }, [&](caf::error& e) { ctx->fail(sys.render(e)); });
      if (ok) ctx->result.checkpoint_dir = dir;
      for (const auto& a : {caf::actor_cast<caf::actor>(watchdog), caf::actor_cast<caf::actor>(checkpoint),
                            caf::actor_cast<caf::actor>(dataloader)})
        self->send_exit(a, caf::exit_reason::user_shutdown);
      for (int l = 0; l < ctx->local_ranks; ++l) {
        self->send_exit(prefetchers[l], caf::exit_reason::user_shutdown);
        self->send_exit(shards[l], caf::exit_reason::user_shutdown);
        self->send_exit(optimizers[l], caf::exit_reason::user_shutdown);
      }
    }  // handles and the scoped actor go before the system waits for its actors
  }
  // Every rank is local: assemble the full fp32 parameters (tests, export).
  if (opts.keep_params && ctx->local_ranks == ctx->world && ctx->result.exit_code == kExitOk) {
    // The device AdamW of the last step ran on each rank's host-to-device stream (a non-blocking
    // stream: the copies below, on the current one, would not wait for it).
    for (const auto& st : ctx->streams)
      if (st.on_device()) st.h2d.synchronize();
    for (size_t u = 0; u < ctx->layout.units.size(); ++u) {
      std::vector<at::Tensor> parts;
      for (const auto& sh : ctx->shards) parts.push_back(sh->state_on_host(0, u));
      ctx->result.final_params.push_back(at::cat(parts).narrow(0, 0, ctx->layout.units[u].numel));
    }
  }
  // The GPU's peak against the plan's prediction (docs/PLACEMENT.md: how the estimate is made).
  if (ctx->on_device) {
    int64_t peak = 0, reserved = 0;
    for (const auto& st : ctx->streams) {
      peak = std::max(peak, device_peak_bytes(st.device, false));
      reserved = std::max(reserved, device_peak_bytes(st.device, true));
    }
    ctx->result.predicted_peak_bytes = ctx->plan.predicted_peak();
    ctx->result.device_peak_bytes = peak;
    ctx->result.device_reserved_peak_bytes = reserved;
    if (!opts.quiet)
      std::printf("xy: GPU peak per rank: %s allocated (%s reserved); the plan predicted %s (state %s + a "
                  "step's %s), %+.1f%%\n",
                  bytes_text(static_cast<double>(peak)).c_str(), bytes_text(static_cast<double>(reserved)).c_str(),
                  bytes_text(static_cast<double>(ctx->plan.predicted_peak())).c_str(),
                  bytes_text(static_cast<double>(ctx->plan.device_bytes)).c_str(),
                  bytes_text(static_cast<double>(ctx->plan.transient_bytes)).c_str(),
                  peak > 0 ? 100.0 * (static_cast<double>(ctx->plan.predicted_peak()) / static_cast<double>(peak) - 1) : 0.0);
  }
  if (ctx->metrics) {
    std::lock_guard<std::mutex> lock(ctx->result_mu);
    ctx->metrics->event({{"event", "end"}, {"exit_code", ctx->result.exit_code},
                         {"gpu_peak_bytes", ctx->result.device_peak_bytes},
                         {"gpu_predicted_peak_bytes", ctx->result.predicted_peak_bytes},
                         {"step", ctx->result.steps.empty() ? ctx->start_step : ctx->result.steps.back().step}});
  }
  // Every timed operation ended: one left in flight would, on a longer run, have been reported by
  // the watchdog as stuck (a bug in the code that began it; exit 1 naming it).
  if (ctx->result.exit_code == kExitOk)
    for (const OpRecord& r : ctx->registry.snapshot())
      ctx->fail("internal error: " + r.kind + " of unit " + std::to_string(r.unit) + " at step " +
                std::to_string(r.step) + " on rank " + std::to_string(r.rank) +
                " was begun and never ended (the watchdog would report it as stuck)");
  ctx->result.host_bytes = host_bytes;
  ctx->result.working_bytes = working_bytes;
  ctx->result.resumed_from = ctx->resumed_from;
  ctx->result.checkpoint_pause_s = ctx->last_checkpoint_pause_s;
  ctx->result.checkpoint_write_s = ctx->last_checkpoint_write_s;
  std::lock_guard<std::mutex> lock(ctx->result_mu);
  return ctx->result;
}

}  // namespace xy

