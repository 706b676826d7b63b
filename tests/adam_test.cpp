// The fused CPU AdamW kernel against torch::optim::AdamW over random tensors of awkward lengths,
// for several steps, with and without weight decay, on 1 and several threads.
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include "actors/adam.hpp"
#include "actors/thread_pool.hpp"
#include "test_util.hpp"

using namespace xy;

namespace {

void check(int64_t n, bool decay, int threads) {
  at::manual_seed(n);
  at::Tensor p0 = at::randn({n});
  AdamHyper h;
  h.lr = 1e-2;
  h.beta1 = 0.9;
  h.beta2 = 0.95;
  h.eps = 1e-8;
  h.weight_decay = decay ? 0.1 : 0.0;

  at::Tensor ref = p0.clone().requires_grad_(true);
  torch::optim::AdamW opt({ref}, torch::optim::AdamWOptions(h.lr).betas({h.beta1, h.beta2})
                                     .eps(h.eps).weight_decay(h.weight_decay));
  at::Tensor p = p0.clone(), m = at::zeros({n}), v = at::zeros({n}), out = at::empty({n});
  ThreadPool pool(threads);
  for (int64_t step = 1; step <= 5; ++step) {
    at::Tensor g = at::randn({n});
    ref.mutable_grad() = g.clone();
    opt.step();
    h.step = step;
    adamw_parallel(pool, p.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(),
                   g.data_ptr<float>(), n, h, decay, out.data_ptr<float>(), WorkingType::kFloat32);
  }
  const double err = test::rel_err(p, ref.detach());
  const double err_out = test::max_abs_err(out, p);
  std::printf("n=%lld decay=%d threads=%d: max relative error %.3g (working copy %.3g)\n",
              static_cast<long long>(n), decay, threads, err, err_out);
  EXPECT_LE(err, 1e-6);
  EXPECT_EQ(err_out, 0.0);
}

}  // namespace

TEST(CpuAdam, MatchesTorchAdamW) {
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1023}, (int64_t{1} << 20) + 3})
    for (bool decay : {false, true})
      for (int threads : {1, 3}) check(n, decay, threads);
}

TEST(CpuAdam, GradScaleAndBf16WorkingCopy) {
  const int64_t n = 4099;
  at::Tensor p = at::randn({n}), m = at::zeros({n}), v = at::zeros({n});
  at::Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
  at::Tensor g = at::randn({n});
  at::Tensor g_scaled = g * 0.25f;
  at::Tensor out = at::empty({n}, at::kBFloat16);
  AdamHyper h;
  h.grad_scale = 0.25;
  adamw_fused(p.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), g.data_ptr<float>(), n,
              h, true, out.data_ptr(), WorkingType::kBFloat16);
  h.grad_scale = 1.0;
  adamw_fused(p2.data_ptr<float>(), m2.data_ptr<float>(), v2.data_ptr<float>(),
              g_scaled.data_ptr<float>(), n, h, true, nullptr, WorkingType::kNone);
  const double err = test::rel_err(p, p2);
  std::printf("grad_scale vs pre-scaled gradient: relative error %.3g\n", err);
  EXPECT_LE(err, 1e-7);
  EXPECT_TRUE(at::equal(out, p.to(at::kBFloat16)));
}
