// The engine on CUDA against the CPU engine: the tiny model in fp32 reproduces the CPU losses
// within 1e-4 relative over 20 steps; in bf16 the loss curve tracks fp32 within 2% (bf16 has an
// 8-bit mantissa: per-step relative differences of ~1e-2 are expected). Labelled gpu.
#include <gtest/gtest.h>

#include <c10/core/impl/VirtualGuardImpl.h>

#include "actors/engine.hpp"
#include "test_util.hpp"

using namespace xy;

namespace {
TrainResult run(Config cfg, const std::string& device, const std::string& precision) {
  cfg.topology.device = device;
  cfg.train.precision = precision;
  RunOptions ro;
  ro.data = test::random_samples(20000, cfg.data.seq_len, cfg.model.vocab_size);
  ro.quiet = true;
  ro.checkpoint_at_end = false;
  return run_training(cfg, ro);
}
}  // namespace

TEST(Gpu, Fp32MatchesTheCpuEngine) {
  Config cfg = test::tiny_config(1, 20);
  TrainResult cpu = run(cfg, "cpu", "fp32");
  TrainResult gpu = run(cfg, "cuda", "fp32");
  ASSERT_EQ(cpu.exit_code, 0) << cpu.error;
  ASSERT_EQ(gpu.exit_code, 0) << gpu.error;
  double worst = 0;
  for (size_t i = 0; i < cpu.steps.size(); ++i)
    worst = std::max(worst, std::abs(gpu.steps[i].loss - cpu.steps[i].loss) / cpu.steps[i].loss);
  std::printf("fp32 CUDA vs CPU over %zu steps: worst loss relative difference %.3g (last %.6f vs %.6f)\n",
              cpu.steps.size(), worst, gpu.steps.back().loss, cpu.steps.back().loss);
  EXPECT_LT(worst, 1e-4);
}

TEST(Gpu, Bf16TracksFp32) {
  Config cfg = test::tiny_config(1, 20);
  TrainResult f32 = run(cfg, "cuda", "fp32");
  TrainResult b16 = run(cfg, "cuda", "bf16");
  ASSERT_EQ(f32.exit_code, 0) << f32.error;
  ASSERT_EQ(b16.exit_code, 0) << b16.error;
  double worst = 0;
  for (size_t i = 0; i < f32.steps.size(); ++i)
    worst = std::max(worst, std::abs(b16.steps[i].loss - f32.steps[i].loss) / f32.steps[i].loss);
  std::printf("bf16 vs fp32 on CUDA over %zu steps: worst loss relative difference %.3g\n",
              f32.steps.size(), worst);
  EXPECT_LT(worst, 2e-2);
}

TEST(Gpu, TwoLocalRanksMatchOne) {
  const auto gpus = c10::impl::VirtualGuardImpl(c10::kCUDA).deviceCount();
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs, this machine has " << gpus;
  Config one = test::tiny_config(1, 10), two = test::tiny_config(2, 10);
  one.train.micro_batch = 4;  // the same global batch
  TrainResult a = run(one, "cuda", "fp32");
  TrainResult b = run(two, "cuda", "fp32");
  ASSERT_EQ(a.exit_code, 0) << a.error;
  if (b.exit_code != 0 && b.error.find("device") != std::string::npos)
    GTEST_SKIP() << "needs 2 GPUs: " << b.error;
  ASSERT_EQ(b.exit_code, 0) << b.error;
  double worst = 0;
  for (size_t i = 0; i < a.steps.size(); ++i)
    worst = std::max(worst, std::abs(a.steps[i].loss - b.steps[i].loss) / a.steps[i].loss);
  std::printf("2 GPUs vs 1 GPU (same global batch): worst loss relative difference %.3g\n", worst);
  EXPECT_LT(worst, 1e-4);
}
