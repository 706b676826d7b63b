#include "optim/schedule.hpp"

#include <algorithm>
#include <cmath>

namespace xy {

double learning_rate(const OptimizerConfig& o, int64_t step, int64_t total_steps) {
  if (o.schedule == "warmup_decay" || o.schedule == "warmup") {
    // DeepSpeed's WarmupLR / WarmupDecayLR: the k-th applied step uses last_batch_iteration k - 1.
    const double it = static_cast<double>(step - 1);
    const double warm = static_cast<double>(std::max<int64_t>(2, o.warmup_steps));
    double gamma = 1.0;
    if (it < warm)
      gamma = o.warmup_type == "linear" ? it / warm : std::log(it + 1) / std::log(warm);
    else if (o.schedule == "warmup_decay")
      gamma = std::max(0.0, (static_cast<double>(total_steps) - it) /
                                std::max(1.0, static_cast<double>(total_steps) - warm));
    return o.min_lr + (o.lr - o.min_lr) * gamma;
  }
  if (o.warmup_steps > 0 && step <= o.warmup_steps)
    return o.lr * static_cast<double>(step) / static_cast<double>(o.warmup_steps);
  if (o.schedule == "constant") return o.lr;
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - o.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  if (o.schedule == "linear") return o.lr - (o.lr - o.min_lr) * progress;
  return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));  // cosine
}

}  // namespace xy
