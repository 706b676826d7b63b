// Learning-rate schedules: warm-up then cosine / linear / constant down to min_lr, and DeepSpeed's
// WarmupLR / WarmupDecayLR (docs/CONFIG.md, [optimizer]). LibTorch-free.
#pragma once

#include <cstdint>

#include "io/config.hpp"

namespace xy {

// The learning rate of the `step`-th applied optimizer step (1-based) of a `total_steps` run.
double learning_rate(const OptimizerConfig& o, int64_t step, int64_t total_steps);

}  // namespace xy
