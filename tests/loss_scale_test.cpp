// Dynamic loss scaling: an injected overflow at a chosen layer skips the step, is named, lowers
// the scale, and the scale recovers; repeated overflow ends with the promised error and history;
// without overflow, scaling by a power of two changes nothing.
#include <gtest/gtest.h>

#include "actors/engine.hpp"
#include "health/faults.hpp"
#include "test_util.hpp"

#include <filesystem>

using namespace xy;

namespace {
TrainResult run(Config cfg, const std::string& fault) {
  fault::configure(fault);
  RunOptions ro;
  ro.data = test::random_samples(6000, cfg.data.seq_len, cfg.model.vocab_size);
  ro.quiet = true;
  ro.checkpoint_at_end = false;
  TrainResult r = run_training(cfg, ro);
  fault::configure("");
  return r;
}

Config scaled(int64_t steps) {
  Config c = test::tiny_config(1, steps);
  c.train.loss_scaling = "dynamic";
  c.train.initial_loss_scale = 1024;
  c.train.loss_scale_window = 2;
  c.train.loss_scale_hysteresis = 1;
  c.train.min_loss_scale = 256;
  return c;
}
}  // namespace

TEST(LossScale, InjectedOverflowIsSkippedNamedAndTheScaleRecovers) {
  TrainResult r = run(scaled(8), "overflow:unit=2,step=3");
  ASSERT_EQ(r.exit_code, kExitOk) << r.error;
  for (const auto& s : r.steps)
    std::printf("step %lld: loss scale %g%s\n", static_cast<long long>(s.step), s.loss_scale,
                s.skipped ? " (skipped: overflow)" : "");
  ASSERT_EQ(r.steps.size(), 8u);
  EXPECT_TRUE(r.steps[2].skipped);
  EXPECT_EQ(r.steps[2].overflow_units, std::vector<int>{2});
  for (int i : {0, 1, 3, 4, 5, 6, 7}) EXPECT_FALSE(r.steps[i].skipped) << "step " << i + 1;
  // 1024 (steps 1-2: the window doubles it after step 2) ... halved by the overflow at step 3,
  // doubled again after two good steps.
  EXPECT_EQ(r.steps[0].loss_scale, 1024);
  EXPECT_EQ(r.steps[2].loss_scale, 2048);
  EXPECT_EQ(r.steps[3].loss_scale, 1024);
  EXPECT_EQ(r.steps[5].loss_scale, 2048);
}

TEST(LossScale, RepeatedOverflowEndsWithTheScaleHistory) {
  TrainResult r = run(scaled(20), "overflow:unit=1");
  std::printf("exit %d: %s\n", r.exit_code, r.error.c_str());
  EXPECT_EQ(r.exit_code, kExitError);
  EXPECT_NE(r.error.find("gradient overflow in layers.0 (unit 1) with the loss scale already at its "
                         "minimum 256"), std::string::npos);
  EXPECT_NE(r.error.find("scale 1024 -> 512"), std::string::npos);
  EXPECT_NE(r.error.find("scale 512 -> 256"), std::string::npos);
}

TEST(LossScale, PowerOfTwoScalingIsExactWithoutOverflow) {
  Config plain = test::tiny_config(1, 6);
  Config s = scaled(6);
  s.train.loss_scale_window = 1000;
  TrainResult a = run(plain, ""), b = run(s, "");
  ASSERT_EQ(a.exit_code, kExitOk) << a.error;
  ASSERT_EQ(b.exit_code, kExitOk) << b.error;
  double worst = 0;
  for (size_t i = 0; i < a.steps.size(); ++i)
    worst = std::max(worst, std::abs(a.steps[i].loss - b.steps[i].loss) / a.steps[i].loss);
  std::printf("loss scale 1024 vs none over 6 steps: worst loss relative difference %.3g\n", worst);
  EXPECT_LT(worst, 1e-6);
}

// The scaler's state is in the checkpoint: resuming after an overflow continues with the same
// scales and bit-identical losses.
TEST(LossScale, ResumeContinuesTheScalerExactly) {
  Config c = scaled(8);
  c.checkpoint.every_steps = 4;
  c.checkpoint.dir = (std::filesystem::temp_directory_path() / "xy_loss_scale_resume").string();
  std::filesystem::remove_all(c.checkpoint.dir);
  fault::configure("overflow:unit=2,step=3");
  RunOptions ro;
  ro.data = test::random_samples(6000, c.data.seq_len, c.model.vocab_size);
  ro.quiet = true;
  TrainResult full = run_training(c, ro);
  fault::configure("");
  ASSERT_EQ(full.exit_code, kExitOk) << full.error;
  ro.resume = c.checkpoint.dir + "/step-00000004";
  TrainResult resumed = run_training(c, ro);
  ASSERT_EQ(resumed.exit_code, kExitOk) << resumed.error;
  ASSERT_EQ(resumed.steps.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    std::printf("step %lld: scale %g / %g, loss %.9g / %.9g\n",
                static_cast<long long>(resumed.steps[i].step), full.steps[4 + i].loss_scale,
                resumed.steps[i].loss_scale, full.steps[4 + i].loss, resumed.steps[i].loss);
    EXPECT_EQ(resumed.steps[i].loss_scale, full.steps[4 + i].loss_scale);
    EXPECT_EQ(resumed.steps[i].loss, full.steps[4 + i].loss);
  }
}
