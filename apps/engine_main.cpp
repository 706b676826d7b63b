// xy-node-engine: the commands of xy-node that need LibTorch (train, verify, export, doctor). The
// xy-node launcher (apps/launcher.cpp) executes it for those commands, with the same arguments and
// process id; it runs preprocess and status itself, without loading LibTorch.
#include <cxxopts.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>

#include "ckpt/checkpoint_io.hpp"
#include "actors/engine.hpp"
#include "health/faults.hpp"
#include "apps/commands.hpp"
#include "io/config.hpp"
#include "io/dataset.hpp"
#include "io/hf_config.hpp"

namespace {

int cmd_train(int argc, char** argv) {
  cxxopts::Options opts("xy-node train", "Train a LLaMA-style model as configured.");
  opts.add_options()
      ("c,config", "configuration file (TOML); see docs/CONFIG.md", cxxopts::value<std::string>())
      ("steps", "override train.steps", cxxopts::value<int64_t>())
      ("work-dir", "override data.work_dir (tokenizer, token cache, checkpoints)",
       cxxopts::value<std::string>())
      ("resume", "resume from a checkpoint: 'latest' (in checkpoint.dir) or a directory",
       cxxopts::value<std::string>())
      ("resume-fallback", "if the checkpoint is corrupt or incomplete, resume from the newest "
       "older good one (and say so)")
      ("overwrite-checkpoints", "start fresh even though checkpoint.dir holds another run's "
       "checkpoints: delete them first (without it such a run refuses to start)")
      ("no-verify", "skip the SHA-256 check of checkpoint files when resuming (sizes are still "
       "checked)")
      ("node-index", "this process's entry in [[topology.nodes]] (default: topology.node_index, "
       "or the environment's XY_NODE_INDEX, NODE_RANK (torchrun) or SLURM_NODEID)",
       cxxopts::value<int>())
      ("no-doctor", "skip the preflight checks (xy-node doctor) before training")
      ("restarts", "after a stall (exit 3), a lost node (4), a stuck watchdog (5) or a kill, start "
       "again from 'latest', up to N times (xy-node stays as the supervisor; docs/OPERATIONS.md)",
       cxxopts::value<int>())
      ("restart-backoff", "seconds before the first restart, doubled for each next one (at most "
       "300; default 10)", cxxopts::value<double>())
      ("h,help", "show this help");
  cxxopts::ParseResult args;
  if (const int rc = parse_options(opts, argc, argv, "train", args); rc >= 0) return rc;
  if (!args.count("config")) {
    std::cerr << "xy-node train: --config FILE is required\n" << opts.help();
    return xy::kExitUsage;
  }
  xy::Config cfg;
  try {
    cfg = xy::load_config(args["config"].as<std::string>());
    // The flags override keys, so they take the same ranges (train.steps: an integer >= 1).
    if (args.count("steps")) {
      const int64_t steps = args["steps"].as<int64_t>();
      if (steps < 1)
        throw xy::ConfigError("--steps " + std::to_string(steps) + ": valid: an integer >= 1");
      cfg.train.steps = steps;
    }
    if (args.count("work-dir")) override_work_dir(cfg, args["work-dir"].as<std::string>());
    if (args.count("resume") && args["resume"].as<std::string>().empty())
      throw xy::ConfigError("--resume: valid: 'latest' or a checkpoint directory, not ''");
    // The node index: flag, then the launchers' environment, then the config.
    cfg.topology.node_index = node_index_from(
        cfg, args.count("node-index") ? std::optional<int>(args["node-index"].as<int>()) : std::nullopt);
    // XY_DOCTOR_GPU_TIMEOUT (read by the doctor's GPU probe) is checked even where it is unused.
    if (const std::string p = xy::doctor_environment_problem(); !p.empty()) throw xy::ConfigError(p);
  } catch (const xy::ConfigError& e) {
    std::cerr << "xy-node train: " << e.what() << "\n";
    return xy::kExitUsage;
  }
  // The job's secret: the environment overrides the config; never printed.
  if (const char* s = std::getenv("XY_SECRET")) cfg.control.secret = s;
  std::string from = "XY_FAULT";
  // Fault drills fire in a job's first attempt only: a restarted one (--restarts) must not meet
  // the same fault at the same step again.
  const char* attempt = std::getenv("XY_RESTART_ATTEMPT");
  const bool restarted = attempt && std::string(attempt) != "0";
  try {
    std::string faults = restarted ? std::string() : xy::fault::configure_from_env();
    if (restarted && (std::getenv("XY_FAULT") || !cfg.faults.inject.empty()))
      std::fprintf(stderr, "xy: fault injection off in restart %s\n", attempt);
    if (restarted) cfg.faults.inject.clear();
    if (faults.empty() && !cfg.faults.inject.empty()) {
      from = cfg.source + ": faults.inject";
      xy::fault::configure(cfg.faults.inject);
      faults = cfg.faults.inject;
    }
    if (!faults.empty())
      std::fprintf(stderr, "xy: FAULT INJECTION ACTIVE (%s): %s\n", from.c_str(), faults.c_str());
  } catch (const std::invalid_argument& e) {
    std::cerr << "xy-node train: " << from << ": " << e.what() << "\n";
    return xy::kExitUsage;
  }
  // A fresh run never takes over a directory holding another run's checkpoints (its retention
  // and `latest` would replace them) unless told to; node 0 publishes, so node 0 checks.
  if (!args.count("resume") && cfg.topology.node_index == 0) {
    try {
      xy::prepare_checkpoint_dir_for_fresh_run(cfg.checkpoint.dir, args.count("overwrite-checkpoints") > 0);
    } catch (const std::exception& e) {
      std::cerr << "xy-node train: " << e.what() << "\n";
      return xy::kExitUsage;
    }
  }
  if (cfg.control.doctor && !args.count("no-doctor")) {
    std::ostringstream report;
    const int failed = xy::run_doctor(cfg, cfg.topology.node_index, 30, report, false);
    if (failed > 0) {
      std::cerr << report.str() << "xy-node train: the preflight checks failed (above, each with its "
                   "fix); fix them, or pass --no-doctor (or control.doctor = false) to train anyway\n";
      if (xy::doctor_probe_hung()) {  // a thread is stuck in the GPU driver: no exit handlers
        std::fflush(nullptr);
        std::_Exit(xy::kExitUsage);
      }
      return xy::kExitUsage;
    }
    std::printf("xy: preflight checks passed (xy-node doctor; --no-doctor skips them)\n");
  }

  // The devices this node drives exist (the doctor checks it too, unless skipped): before the data
  // is prepared, one line instead of c10's "Device index out of range" later.
  try {
    xy::check_devices(cfg);
  } catch (const std::exception& e) {
    std::cerr << "xy-node train: " << e.what() << "\n";
    return xy::kExitUsage;
  }
  // load_config took the shape from model.init_from's config.json.
  if (!cfg.model.init_from.empty()) {
    std::printf("xy: model shape from %s/config.json: vocab %lld, hidden %lld, intermediate %lld, "
                "%lld layers, %lld heads (%lld kv)\n",
                cfg.model.init_from.c_str(), static_cast<long long>(cfg.model.vocab_size),
                static_cast<long long>(cfg.model.hidden), static_cast<long long>(cfg.model.intermediate),
                static_cast<long long>(cfg.model.layers), static_cast<long long>(cfg.model.heads),
                static_cast<long long>(cfg.model.kv_heads));
  }
  // A pretrained model's embedding rows mean its own tokenizer's ids: load_config made the
  // folder's tokenizer data.tokenizer when that was empty; without one, say what training a new
  // tokenizer means.
  if (!cfg.model.init_from.empty()) {
    const std::string own = xy::hf_folder_tokenizer(cfg.model.init_from);
    if (!own.empty() && cfg.data.tokenizer == own) {
      std::printf("xy: tokenizer: %s (from model.init_from)\n", own.c_str());
    } else if (own.empty() && cfg.data.tokenizer.empty() && cfg.data.shards.empty()) {
      std::fprintf(stderr, "xy: warning: model.init_from '%s' holds no tokenizer.json or tokenizer.model: "
                   "a new tokenizer is trained from data.inputs, and its token ids will not mean what the "
                   "model learned (set data.tokenizer to the model's tokenizer)\n",
                   cfg.model.init_from.c_str());
    }
  }
  xy::PreparedData data;
  try {
    data = xy::prepare_data(cfg, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "xy-node train: " << e.what() << "\n";
    return xy::kExitError;
  }
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = data.vocab;
  std::printf("xy: %lld tokens -> %lld samples of %lld tokens; initial loss should be about "
              "ln(vocab %lld) = %.3f\n",
              static_cast<long long>(data.tokens), static_cast<long long>(data.samples->size()),
              static_cast<long long>(cfg.data.seq_len), static_cast<long long>(cfg.model.vocab_size),
              std::log(static_cast<double>(cfg.model.vocab_size)));

  xy::RunOptions ro;
  ro.data = data.samples;
  ro.metrics = true;
  ro.tokenizer = data.tokenizer;
  if (cfg.eval.holdout > 0) {
    if (data.eos_id < 0) {
      std::cerr << "xy-node train: eval.holdout needs documents that end with an EOS token; the "
                   "tokenizer '" << data.tokenizer_path << "' has none\n";
      return xy::kExitUsage;
    }
    const auto t0 = std::chrono::steady_clock::now();
    xy::DocumentSplit split = xy::split_by_document(data.samples, data.eos_id, cfg.eval.holdout, cfg.data.seed);
    std::printf("xy: eval.holdout: %lld of %lld documents held out as '%s' (%lld samples), %lld samples "
                "train, %lld straddling both dropped (%.1f s)\n",
                static_cast<long long>(split.held_documents), static_cast<long long>(split.documents),
                cfg.eval.holdout_name.c_str(), static_cast<long long>(split.heldout->size()),
                static_cast<long long>(split.train->size()), static_cast<long long>(split.dropped_samples),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (split.heldout->size() == 0 || split.train->size() == 0) {
      std::cerr << "xy-node train: eval.holdout = " << cfg.eval.holdout << " leaves "
                << split.heldout->size() << " held-out and " << split.train->size()
                << " training samples; both need some (change eval.holdout or data.seq_len)\n";
      return xy::kExitUsage;
    }
    ro.data = split.train;
    ro.eval_sets.push_back({cfg.eval.holdout_name, "eval.holdout", split.heldout});
  }
  try {
    for (auto& set : xy::prepare_eval_sets(cfg, data.tokenizer_path, std::cout)) ro.eval_sets.push_back(set);
  } catch (const std::exception& e) {
    std::cerr << "xy-node train: " << e.what() << "\n";
    return xy::kExitError;
  }
  if (args.count("resume")) ro.resume = args["resume"].as<std::string>();
  ro.resume_fallback = args.count("resume-fallback") > 0;
  ro.verify = args.count("no-verify") == 0;
  const xy::TrainResult r = xy::run_training(cfg, ro);
  if (r.exit_code != xy::kExitOk) {
    std::cerr << "xy-node train: " << r.error << "\n";
    return r.exit_code;
  }
  if (!r.steps.empty()) {
    double tps = 0;
    for (const auto& s : r.steps) tps += s.tokens_per_s;
    tps /= static_cast<double>(r.steps.size());
    // Per-step losses are noisy (one batch each): also report the mean of the last ten.
    const size_t tail = std::min<size_t>(10, r.steps.size());
    double last = 0;
    for (size_t i = r.steps.size() - tail; i < r.steps.size(); ++i) last += r.steps[i].loss;
    last /= static_cast<double>(tail);
    std::printf("xy: done: %zu steps in %.1f s; loss %.4f -> %.4f (mean of the last %zu steps "
                "%.4f; ln(vocab) = %.3f); mean %.0f tokens/s; checkpoint %s\n",
                r.steps.size(), r.seconds, r.steps.front().loss, r.steps.back().loss, tail, last,
                std::log(static_cast<double>(cfg.model.vocab_size)), tps,
                r.checkpoint_dir.empty() ? "(none)" : r.checkpoint_dir.c_str());
  }
  return xy::kExitOk;
}

int dispatch(int argc, char** argv) {
  // The launcher runs these itself; here too, so that this binary is complete on its own.
  if (const int rc = run_light_command(argc, argv); rc >= 0) return rc;
  const std::string cmd = argv[1];
  if (cmd == "train") return cmd_train(argc - 1, argv + 1);
  if (cmd == "verify") return cmd_verify(argc - 1, argv + 1);
  if (cmd == "export") return cmd_export(argc - 1, argv + 1);
  if (cmd == "doctor") return cmd_doctor(argc - 1, argv + 1);
  return unknown_command(cmd);
}

}  // namespace

int main(int argc, char** argv) { return run_guarded(argc, argv, dispatch); }
