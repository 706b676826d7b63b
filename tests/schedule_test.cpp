// Learning-rate schedules against values computed by hand from their definitions (DeepSpeed's
// WarmupLR / WarmupDecayLR formulas in lr_schedules.py).
#include <gtest/gtest.h>

#include <cmath>

#include "actors/engine.hpp"

using namespace xy;

namespace {
OptimizerConfig opt(const std::string& schedule, const std::string& warmup_type = "log") {
  OptimizerConfig o;
  o.lr = 1e-3;
  o.min_lr = 1e-5;
  o.warmup_steps = 10;
  o.schedule = schedule;
  o.warmup_type = warmup_type;
  return o;
}
}  // namespace

TEST(Schedule, DeepSpeedWarmupDecayLogWarmup) {
  const OptimizerConfig o = opt("warmup_decay");
  const double delta = 1e-3 - 1e-5;
  // Step k (1-based, applied) uses last_batch_iteration = k - 1.
  EXPECT_DOUBLE_EQ(learning_rate(o, 1, 100), 1e-5);  // log(1) = 0
  EXPECT_NEAR(learning_rate(o, 5, 100), 1e-5 + delta * std::log(5.0) / std::log(10.0), 1e-15);
  EXPECT_NEAR(learning_rate(o, 11, 100), 1e-5 + delta * (100.0 - 10) / (100 - 10), 1e-15);  // peak
  EXPECT_NEAR(learning_rate(o, 56, 100), 1e-5 + delta * (100.0 - 55) / 90, 1e-15);
  EXPECT_NEAR(learning_rate(o, 101, 100), 1e-5, 1e-15);  // decayed to min_lr
  std::printf("warmup_decay (log): %.6g %.6g %.6g %.6g\n", learning_rate(o, 1, 100),
              learning_rate(o, 5, 100), learning_rate(o, 11, 100), learning_rate(o, 56, 100));
}

TEST(Schedule, DeepSpeedWarmupLinearAndConstantAfter) {
  const OptimizerConfig o = opt("warmup", "linear");
  EXPECT_NEAR(learning_rate(o, 4, 100), 1e-5 + (1e-3 - 1e-5) * 3.0 / 10, 1e-15);
  EXPECT_NEAR(learning_rate(o, 50, 100), 1e-3, 1e-15);
  EXPECT_NEAR(learning_rate(o, 500, 100), 1e-3, 1e-15);
}

TEST(Schedule, CosineWithLinearWarmup) {
  OptimizerConfig o = opt("cosine");
  EXPECT_NEAR(learning_rate(o, 5, 110), 1e-3 * 5 / 10, 1e-15);
  EXPECT_NEAR(learning_rate(o, 10, 110), 1e-3, 1e-15);
  EXPECT_NEAR(learning_rate(o, 60, 110), 1e-5 + (1e-3 - 1e-5) * 0.5, 1e-15);  // half way: cos = 0
  EXPECT_NEAR(learning_rate(o, 110, 110), 1e-5, 1e-15);
}
