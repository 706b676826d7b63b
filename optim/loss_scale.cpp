#include "optim/loss_scale.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace xy {
namespace {
std::string fmt(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", x);
  return b;
}
}  // namespace

LossScaler::LossScaler(const TrainConfig& t, const std::optional<LossScalerState>& resumed) {
  on_ = t.loss_scaling == "dynamic" || (t.loss_scaling == "auto" && t.precision == "fp16");
  if (!on_) return;
  scale_ = t.initial_loss_scale;
  min_scale_ = t.min_loss_scale;
  window_ = t.loss_scale_window;
  hysteresis_ = cur_hysteresis_ = t.loss_scale_hysteresis;
  if (resumed && resumed->iter > 0) {  // resumed: continue its state
    scale_ = resumed->scale;
    iter_ = resumed->iter;
    last_overflow_ = resumed->last_overflow;
    cur_hysteresis_ = resumed->cur_hysteresis;
  }
}

void LossScaler::update(bool overflow, int64_t step, const std::string& where) {
  const std::string at = "step " + std::to_string(step) + ": ";
  if (overflow) {
    if (hysteresis_ == 1 || cur_hysteresis_ == 1) {
      if (scale_ <= min_scale_) {
        std::string h;
        for (const auto& e : history_) h += "\n  " + e;
        throw std::runtime_error(
            at + "gradient overflow in " + where + " with the loss scale already at its minimum " +
            fmt(min_scale_) + ": it cannot be lowered further. Recent loss-scale history:" + h +
            "\nLook for bad data or a too high learning rate, or train in bf16.");
      }
      const double before = scale_;
      scale_ = std::max(scale_ / 2, min_scale_);
      remember(at + "overflow in " + where + "; scale " + fmt(before) + " -> " + fmt(scale_));
    } else {
      --cur_hysteresis_;
      remember(at + "overflow in " + where + "; scale " + fmt(scale_) + " kept (hysteresis " +
               std::to_string(cur_hysteresis_) + " left)");
    }
    last_overflow_ = iter_;
  } else if ((iter_ - last_overflow_) % window_ == 0) {
    cur_hysteresis_ = hysteresis_;
    scale_ *= 2;
    remember(at + std::to_string(window_) + " good steps; scale -> " + fmt(scale_));
  }
  ++iter_;
}

LossScalerState LossScaler::state() const {
  return on_ ? LossScalerState{scale_, iter_, last_overflow_, cur_hysteresis_} : LossScalerState{};
}

void LossScaler::remember(std::string e) {
  history_.push_back(std::move(e));
  while (history_.size() > 12) history_.pop_front();
}

}  // namespace xy
