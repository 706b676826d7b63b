// Dynamic loss scaling for fp16, as DeepSpeed's DynamicLossScaler (delayed shift = hysteresis,
// consecutive hysteresis off): an overflow halves the scale once `hysteresis` overflows have been
// seen; a window of good steps after the last overflow doubles it; an overflow at the minimum is
// fatal, with the recent history. LibTorch-free; the trainer owns one per rank.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include "io/config.hpp"

namespace xy {

// What a checkpoint keeps of the scaler (iter 0 = scaling off or never updated).
struct LossScalerState {
  double scale = 1;
  int64_t iter = 0, last_overflow = -1, cur_hysteresis = 0;
};

class LossScaler {
 public:
  LossScaler() = default;
  // On per train.loss_scaling ("dynamic", or "auto" with fp16), continuing `resumed` if it was
  // ever updated.
  LossScaler(const TrainConfig& t, const std::optional<LossScalerState>& resumed);

  bool on() const { return on_; }
  double scale() const { return scale_; }  // 1 when off
  // Records the outcome of step `step` (overflow in `where`); throws std::runtime_error when an
  // overflow hits the minimum scale.
  void update(bool overflow, int64_t step, const std::string& where);
  LossScalerState state() const;

 private:
  void remember(std::string e);

  bool on_ = false;
  double scale_ = 1, min_scale_ = 1;
  int64_t window_ = 1000, hysteresis_ = 2, cur_hysteresis_ = 2;
  int64_t iter_ = 0, last_overflow_ = -1;
  std::deque<std::string> history_;  // the most recent events, for the fatal error
};

}  // namespace xy
