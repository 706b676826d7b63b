// Training throughput benchmark: runs the engine on random tokens as configured and prints the
// median step time, tokens/s, MFU, the step time split, and memory peaks.
//
//   tokens/s = world * grad_accum * micro_batch * seq_len / median step time (steps after warm-up)
//   MFU      = 6 * parameters * tokens/s / (world * peak)     (attention and recompute not counted,
//              as the peer counts; peak = 989e12 bf16 FLOP/s per H100 SXM unless --peak-tflops)
// usage: train_bench --config FILE [--steps N] [--warmup W] [--peak-tflops P] [--offload-params]
//                    [--watchdog-pairs N]   (the watchdog's overhead instead: N on/off pairs)
//        (--offload-params sets actors.offload_params: the working shards in pinned host memory)
#include <cxxopts.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>

#include "actors/engine.hpp"

#ifdef XY_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

double peak_rss_gib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / (1024.0 * 1024.0);
  return 0;
}

// The watchdog's cost: pairs of runs in this one process (no process start-up or memory layout
// differences between the two), on-off then off-on in turn so that a drift cancels; per run the
// mean step time after the warm-up; the overhead is the mean of the pairs' on/off ratios - 1.
int watchdog_pairs(xy::Config cfg, const xy::RunOptions& ro, int pairs, int64_t warmup) {
  std::vector<double> ratios;
  double on_sum = 0, off_sum = 0;
  for (int p = 0; p < pairs; ++p) {
    double mean[2] = {0, 0};  // [off, on]
    for (int k = 0; k < 2; ++k) {
      const bool on = (p % 2 == 0) == (k == 0);
      cfg.deadlines.watchdog = on;
      xy::RunOptions o = ro;
      o.quiet = true;
      const xy::TrainResult r = xy::run_training(cfg, o);
      if (r.exit_code != 0) {
        std::fprintf(stderr, "train_bench: %s\n", r.error.c_str());
        return r.exit_code;
      }
      double sum = 0;
      int64_t n = 0;
      for (size_t i = static_cast<size_t>(warmup); i < r.steps.size(); ++i, ++n) sum += r.steps[i].step_s;
      mean[on] = sum / std::max<int64_t>(1, n);
      std::printf("pair %2d  watchdog %-3s  mean step %.4f s over %lld steps\n", p + 1, on ? "on" : "off",
                  mean[on], static_cast<long long>(n));
      std::fflush(stdout);
    }
    ratios.push_back(mean[1] / mean[0]);
    on_sum += mean[1];
    off_sum += mean[0];
  }
  double m = 0, v = 0;
  for (double x : ratios) m += x / ratios.size();
  for (double x : ratios) v += (x - m) * (x - m) / std::max<size_t>(1, ratios.size() - 1);
  const double se = std::sqrt(v / ratios.size());
  std::printf("on/off per pair:");
  for (double x : ratios) std::printf(" %.4f", x);
  std::printf("\nRESULT watchdog overhead %+.2f%% (standard error %.2f%%, %zu pairs in one process; "
              "mean step on %.4f s, off %.4f s; target <= 1%%)\n",
              100 * (m - 1), 100 * se, ratios.size(), on_sum / pairs, off_sum / pairs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options opts("train_bench", "Training throughput on random tokens.");
  opts.add_options()("config", "config file", cxxopts::value<std::string>())(
      "steps", "steps", cxxopts::value<int64_t>()->default_value("8"))(
      "warmup", "steps left out of the median", cxxopts::value<int64_t>()->default_value("3"))(
      "peak-tflops", "peak FLOP/s per device for MFU", cxxopts::value<double>()->default_value("989"))(
      "offload-params", "parameter offload (actors.offload_params = true)")(
      "placement", "optimizer.placement: cpu, gpu, auto or a fraction", cxxopts::value<std::string>())(
      "gpu-memory-gb", "topology.gpu_memory_gb: play a smaller GPU", cxxopts::value<double>())(
      "micro-batch", "train.micro_batch", cxxopts::value<int64_t>())(
      "precision", "train.precision", cxxopts::value<std::string>())(
      "delayed", "optimizer.delayed_update: 0 or 1", cxxopts::value<int>())(
      "watchdog-pairs", "instead: N pairs of runs in this process, watchdog on and off in turn",
      cxxopts::value<int>()->default_value("0"));
  auto args = opts.parse(argc, argv);
  xy::Config cfg = xy::load_config(args["config"].as<std::string>());
  cfg.train.steps = args["steps"].as<int64_t>();
  cfg.train.log_every = 1;
  if (args.count("offload-params")) cfg.actors.offload_params = true;
  if (args.count("placement")) cfg.optimizer.placement = args["placement"].as<std::string>();
  if (args.count("gpu-memory-gb")) cfg.topology.gpu_memory_gb = args["gpu-memory-gb"].as<double>();
  if (args.count("micro-batch")) cfg.train.micro_batch = args["micro-batch"].as<int64_t>();
  if (args.count("precision")) cfg.train.precision = args["precision"].as<std::string>();
  if (args.count("delayed")) cfg.optimizer.delayed_update = args["delayed"].as<int>() != 0;
  if (cfg.train.precision == "fp16" && cfg.train.loss_scaling == "none") cfg.train.loss_scaling = "dynamic";
  cfg.optimizer.warmup_steps = std::min(cfg.optimizer.warmup_steps, cfg.train.steps);
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = 32000;
  const int world = cfg.topology.world_size();
  const int64_t per_step = int64_t{world} * cfg.train.grad_accum * cfg.train.micro_batch;
  const int64_t tokens = (per_step * (cfg.train.steps + 2)) * cfg.data.seq_len + 1;
  std::mt19937 rng(1);
  std::vector<int32_t> ids(tokens);
  for (auto& t : ids) t = static_cast<int32_t>(rng() % cfg.model.vocab_size);
  xy::RunOptions ro;
  ro.data = std::make_shared<xy::TokenSamples>(std::move(ids), cfg.data.seq_len, cfg.model.vocab_size);
  ro.checkpoint_at_end = false;
  if (const int pairs = args["watchdog-pairs"].as<int>(); pairs > 0)
    return watchdog_pairs(cfg, ro, pairs, args["warmup"].as<int64_t>());
  const xy::TrainResult r = xy::run_training(cfg, ro);
  if (r.exit_code != 0) {
    std::fprintf(stderr, "train_bench: %s\n", r.error.c_str());
    return r.exit_code;
  }
  const int64_t warm = std::min<int64_t>(args["warmup"].as<int64_t>(), static_cast<int64_t>(r.steps.size()) - 1);
  std::vector<xy::StepRecord> s(r.steps.begin() + warm, r.steps.end());
  std::sort(s.begin(), s.end(), [](auto& a, auto& b) { return a.step_s < b.step_s; });
  const xy::StepRecord& med = s[s.size() / 2];
  const double tok_s = per_step * cfg.data.seq_len / med.step_s;
  const int64_t params = xy::build_layout(cfg.model, 1, {}).total_numel();
  const double mfu = 6.0 * params * tok_s / (world * args["peak-tflops"].as<double>() * 1e12);
  std::printf("\nRESULT model=%s params=%lld world=%d seq=%lld micro_batch=%lld grad_accum=%lld "
              "precision=%s device=%s offload_params=%d placement=%s delayed=%d gpu_memory_gb=%g\n",
              cfg.model.preset.c_str(), static_cast<long long>(params), world,
              static_cast<long long>(cfg.data.seq_len), static_cast<long long>(cfg.train.micro_batch),
              static_cast<long long>(cfg.train.grad_accum), cfg.train.precision.c_str(),
              cfg.topology.device.c_str(), cfg.actors.offload_params ? 1 : 0, cfg.optimizer.placement.c_str(),
              cfg.optimizer.delayed_update ? 1 : 0, cfg.topology.gpu_memory_gb);
  std::printf("RESULT median step %.3f s | %.0f tokens/s | MFU %.1f%% | split: compute %.3f s, wait "
              "for the optimizer %.3f s, exposed gathers %.3f s, end of step (reduce + norm) %.3f s, "
              "wait batch %.3f s | host peak RSS %.1f GiB | engine host state %.1f GiB\n",
              med.step_s, tok_s, 100 * mfu, med.compute_s, med.wait_optimizer_s,
              med.exposed_gather_s(), med.wait_finish_s,
              med.wait_batch_s, peak_rss_gib(), r.host_bytes / 1073741824.0);
  double gpu_peak_gib = 0;
#ifdef XY_WITH_CUDA
  if (cfg.topology.device == "cuda")
    gpu_peak_gib = c10::cuda::CUDACachingAllocator::getDeviceStats(0)
                       .reserved_bytes[0].peak / 1073741824.0;
#endif
  std::printf("RESULT GPU 0 peak reserved memory %.1f GiB; peak allocated %.2f GiB, the plan predicted %.2f GiB "
              "(%+.1f%%)\n",
              gpu_peak_gib, r.device_peak_bytes / 1073741824.0, r.predicted_peak_bytes / 1073741824.0,
              r.device_peak_bytes > 0 ? 100.0 * (static_cast<double>(r.predicted_peak_bytes) / r.device_peak_bytes - 1) : 0.0);
  std::printf("{\"bench\": \"xy\", \"model\": \"%s\", \"world\": %d, \"seq\": %lld, \"mb\": %lld, "
              "\"step_s\": %.4f, \"tokens_per_s\": %.1f, \"mfu\": %.4f, \"peak_rss_gib\": %.2f}\n",
              cfg.model.preset.c_str(), world, static_cast<long long>(cfg.data.seq_len),
              static_cast<long long>(cfg.train.micro_batch), med.step_s, tok_s, mfu, peak_rss_gib());
  return 0;
}
