// optimizer.placement on CUDA: the optimizer state on the host ("cpu"), half of every shard on the
// GPU ("0.5"), all of it on the GPU ("gpu") and "auto" train the same model. The two AdamW kernels
// have the same arithmetic (the device kernel is the CPU's vector path bit for bit; the CPU's
// scalar tail of each call lacks the fused multiply-add and differs in the last bit), so losses and
// parameters agree to rounding: within 1e-6 relative over 20 steps, in fp32, with the delayed
// update, with gradient accumulation and parameter offload, and in fp16 through skipped steps.
// A checkpoint written under one placement resumes under another. Labelled gpu.
//
// Parameters are compared with AdamW's eps = 1e-3: with eps = 1e-8 an element whose gradient is
// ~0 takes +-lr steps on its rounding alone (m / sqrt(v) of noise), under any two runs that differ
// in the last bit anywhere; eps = 1e-3 keeps each update proportional to its gradient and shows the
// placements exact. Losses are compared at the default eps.
#include <gtest/gtest.h>

#include <c10/core/impl/VirtualGuardImpl.h>

#include <execinfo.h>
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "actors/engine.hpp"
#include "test_util.hpp"

using namespace xy;

namespace {

// A crash prints where it happened: the faulting address, the instruction pointer and the return
// addresses found on the stack, each with the mapping (file and offset) it falls in, for addr2line
// (the unwinder alone stopped at the signal frame on the GPU machine); then the unwound frames.
void print_mapped(const char* what, uintptr_t a) {
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  char line[512];
  while (maps && std::fgets(line, sizeof line, maps)) {
    unsigned long lo = 0, hi = 0, off = 0;
    char perms[8] = {0}, path[400] = {0};
    if (std::sscanf(line, "%lx-%lx %7s %lx %*s %*s %399s", &lo, &hi, perms, &off, path) >= 4 && a >= lo && a < hi &&
        perms[2] == 'x') {
      std::fprintf(stderr, "  %s %#lx = %s +%#lx\n", what, static_cast<unsigned long>(a), path,
                   static_cast<unsigned long>(a - lo + off));
      break;
    }
  }
  if (maps) std::fclose(maps);
}

void on_fatal_signal(int sig, siginfo_t* info, void* context) {
  const auto* uc = static_cast<const ucontext_t*>(context);
  const auto rip = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  const auto* rsp = reinterpret_cast<const uintptr_t*>(uc->uc_mcontext.gregs[REG_RSP]);
  std::fprintf(stderr, "placement_gpu_test: signal %d, address %p, ip %#lx\n", sig, info->si_addr,
               static_cast<unsigned long>(rip));
  print_mapped("ip", rip);
  for (int i = 0; i < 64; ++i) print_mapped("stack", rsp[i]);
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
  _exit(128 + sig);
}

bool install_handler() {
  struct sigaction sa {};
  sa.sa_sigaction = on_fatal_signal;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGABRT, &sa, nullptr);
  return true;
}
const bool kHandlerInstalled = install_handler();

TrainResult run(Config cfg, const std::string& placement, const std::string& resume = "",
                bool checkpoint = false) {
  cfg.topology.device = "cuda";
  cfg.optimizer.placement = placement;
  RunOptions ro;
  ro.data = test::random_samples(20000, cfg.data.seq_len, cfg.model.vocab_size);
  ro.quiet = true;
  ro.checkpoint_at_end = checkpoint;
  ro.keep_params = true;
  ro.resume = resume;
  return run_training(cfg, ro);
}

double worst_loss(const TrainResult& a, const TrainResult& b, size_t from = 0) {
  if (a.steps.empty() || a.steps.size() < from || b.steps.size() != a.steps.size() - from) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < b.steps.size(); ++i)
    worst = std::max(worst, std::abs(a.steps[from + i].loss - b.steps[i].loss) / a.steps[from + i].loss);
  return worst;
}

// max |a - b| / max |a| over every parameter.
double worst_param(const TrainResult& a, const TrainResult& b) {
  if (a.final_params.empty() || a.final_params.size() != b.final_params.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t u = 0; u < a.final_params.size(); ++u) {
    diff = std::max(diff, (a.final_params[u] - b.final_params[u]).abs().max().item<double>());
    scale = std::max(scale, a.final_params[u].abs().max().item<double>());
  }
  return diff / scale;
}

int skipped(const TrainResult& r) {
  int n = 0;
  for (const auto& s : r.steps) n += s.skipped;
  return n;
}

// Every placement against "cpu" on the same configuration.
void expect_placements_agree(Config cfg, const char* what) {
  TrainResult ref = run(cfg, "cpu");
  ASSERT_EQ(ref.exit_code, 0) << ref.error;
  ASSERT_EQ(ref.steps.size(), static_cast<size_t>(cfg.train.steps));
  Config exact = cfg;
  exact.optimizer.eps = 1e-3;
  TrainResult ref_exact = run(exact, "cpu");
  ASSERT_EQ(ref_exact.exit_code, 0) << ref_exact.error;
  for (const char* placement : {"0.5", "gpu", "auto"}) {
    TrainResult r = run(cfg, placement);
    ASSERT_EQ(r.exit_code, 0) << placement << ": " << r.error;
    TrainResult r_exact = run(exact, placement);
    ASSERT_EQ(r_exact.exit_code, 0) << placement << ": " << r_exact.error;
    const double loss = worst_loss(ref, r), param = worst_param(ref_exact, r_exact);
    std::printf("%s, placement %s vs cpu over %zu steps: losses %.3g, parameters %.3g (eps 1e-3); %d and %d "
                "steps skipped\n",
                what, placement, r.steps.size(), loss, param, skipped(r), skipped(ref));
    EXPECT_LE(loss, 1e-6) << placement;
    EXPECT_LE(param, 1e-6) << placement;
    EXPECT_EQ(skipped(r), skipped(ref)) << placement;
  }
}

}  // namespace

Config fp32_config(int world, int64_t grad_accum = 1) {
  Config cfg = test::tiny_config(world, 20, grad_accum);
  cfg.train.precision = "fp32";
  return cfg;
}

TEST(Placement, Fp32PlacementsAgree) { expect_placements_agree(fp32_config(1), "fp32"); }

TEST(Placement, DelayedUpdatePlacementsAgree) {
  Config cfg = fp32_config(1);
  cfg.optimizer.delayed_update = true;
  expect_placements_agree(cfg, "fp32, delayed update");
}

TEST(Placement, AccumulationAndParameterOffloadPlacementsAgree) {
  Config cfg = fp32_config(1, /*grad_accum=*/2);
  cfg.actors.offload_params = true;
  expect_placements_agree(cfg, "fp32, grad_accum 2, parameter offload");
}

TEST(Placement, Fp16WithSkippedStepsPlacementsAgree) {
  Config cfg = test::tiny_config(1, 20);
  cfg.train.precision = "fp16";
  cfg.train.loss_scaling = "dynamic";
  cfg.train.initial_loss_scale = 16777216;  // 2^24: the first steps overflow and are skipped
  expect_placements_agree(cfg, "fp16");
}

TEST(Placement, TwoLocalRanksPlacementsAgree) {
  const auto gpus = c10::impl::VirtualGuardImpl(c10::kCUDA).deviceCount();
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs, this machine has " << gpus;
  Config cfg = fp32_config(2);
  cfg.optimizer.delayed_update = true;
  expect_placements_agree(cfg, "fp32, 2 GPUs, delayed update");
}

// The checkpoint a 20-step run writes at step 10 under one placement, resumed under another, ends
// where the 20 steps under the first end.
TEST(Placement, CheckpointsResumeAcrossPlacements) {
  const std::vector<std::pair<std::string, std::string>> pairs{{"0.5", "cpu"}, {"cpu", "gpu"}, {"gpu", "0.5"}};
  for (const auto& [first_s, second_s] : pairs) {
    const char* first = first_s.c_str();
    const char* second = second_s.c_str();
    std::fprintf(stderr, "resume: %s then %s\n", first, second);
    Config cfg = fp32_config(1);
    cfg.optimizer.eps = 1e-3;
    cfg.checkpoint.every_steps = 10;
    // A fresh directory per run of the test, removed with rm at the end: on the GPU machine this test
    // crashed (SIGSEGV, not explained yet: bench/RESULTS.md) around std::filesystem calls on a
    // checkpoint directory that a previous iteration had filled.
    cfg.checkpoint.dir = "/tmp/xy_placement_resume_" + std::to_string(getpid()) + "_" + first_s + "_" + second_s;
    std::printf("20 steps under %s, checkpoint at step 10\n", first);
    std::fflush(stdout);
    TrainResult whole = run(cfg, first);
    ASSERT_EQ(whole.exit_code, 0) << whole.error;
    const std::string step10 = cfg.checkpoint.dir + "/step-00000010";
    std::printf("resumed under %s\n", second);
    std::fflush(stdout);
    TrainResult b = run(cfg, second, step10);
    ASSERT_EQ(b.exit_code, 0) << b.error;
    const double loss = worst_loss(whole, b, 10), param = worst_param(whole, b);
    std::printf("checkpoint of %s at step 10 resumed under %s: steps 11-20 losses %.3g, final parameters %.3g "
                "vs 20 steps under %s\n", first, second, loss, param, first);
    EXPECT_LE(loss, 1e-6);
    EXPECT_LE(param, 1e-6);
    EXPECT_EQ(std::system(("rm -rf " + cfg.checkpoint.dir).c_str()), 0);
  }
}
