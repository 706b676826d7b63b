// The fused CPU AdamW kernel against torch::optim::AdamW over random tensors of awkward lengths,
// for several steps, with and without weight decay, on 1 and several threads.
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include "optim/adam.hpp"
#include "optim/thread_pool.hpp"
#include "test_util.hpp"

#include <limits>
#include <vector>

using namespace xy;

namespace {

void check(int64_t n, bool decay, int threads, AdamIsa isa) {
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
                   g.data_ptr<float>(), n, h, decay, out.data_ptr<float>(), WorkingType::kFloat32, isa);
  }
  const double err = test::rel_err(p, ref.detach());
  const double err_out = test::max_abs_err(out, p);
  std::printf("%-6s n=%-8lld decay=%d threads=%d: max relative error %.3g (working copy %.3g)\n",
              adam_isa_name(isa), static_cast<long long>(n), decay, threads, err, err_out);
  EXPECT_LE(err, 1e-6);
  EXPECT_EQ(err_out, 0.0);
}

}  // namespace

std::vector<AdamIsa> isas() {
  std::vector<AdamIsa> out{AdamIsa::kScalar};
  for (AdamIsa i : {AdamIsa::kAvx2, AdamIsa::kAvx512}) {
    if (adam_isa_supported(i)) out.push_back(i);
    else std::printf("%s not supported on this CPU: not tested here\n", adam_isa_name(i));
  }
  return out;
}

TEST(CpuAdam, MatchesTorchAdamW) {
  for (AdamIsa isa : isas())
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1023}, (int64_t{1} << 20) + 3})
      for (bool decay : {false, true})
        for (int threads : {1, 3}) check(n, decay, threads, isa);
}

// Every path writes the same low-precision working copy as c10's conversion of the fp32 result.
TEST(CpuAdam, WorkingCopiesMatchC10Conversions) {
  const int64_t n = 1000 + 37;
  for (AdamIsa isa : isas())
    for (auto [type, dtype] : {std::pair{WorkingType::kBFloat16, at::kBFloat16},
                               std::pair{WorkingType::kFloat16, at::kHalf}}) {
      at::manual_seed(3);
      at::Tensor p = at::randn({n}) * 100, m = at::zeros({n}), v = at::zeros({n});
      at::Tensor g = at::randn({n});
      p[5] = std::numeric_limits<float>::quiet_NaN();  // NaN stays NaN in the working copy
      at::Tensor out = at::empty({n}, dtype);
      AdamHyper h;
      adamw_fused(p.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), g.data_ptr<float>(),
                  n, h, true, out.data_ptr(), type, isa);
      at::Tensor expect = p.to(dtype);
      const bool same = at::equal(out.isnan(), expect.isnan()) &&
                        at::equal(out.nan_to_num(0), expect.nan_to_num(0));
      std::printf("%s %s working copy identical to c10's conversion: %s\n", adam_isa_name(isa),
                  c10::toString(dtype), same ? "yes" : "NO");
      EXPECT_TRUE(same);
    }
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

// Gradients landed in bf16 or fp16 give exactly the result of the same values in fp32, on every
// path (the fp16 case is what an fp16 job on GPUs lands).
TEST(CpuAdam, SixteenBitGradientsEqualTheirFp32Values) {
  const int64_t n = 1000 + 29;
  for (AdamIsa isa : isas())
   for (auto [gt, dt] : {std::pair{GradType::kBFloat16, at::kBFloat16}, std::pair{GradType::kFloat16, at::kHalf}}) {
    at::manual_seed(4);
    at::Tensor g16 = (at::randn({n}) * 100).to(dt);
    at::Tensor g32 = g16.to(at::kFloat);
    at::Tensor p = at::randn({n}), m = at::rand({n}), v = at::rand({n});
    at::Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
    AdamHyper h;
    h.step = 3;
    adamw_fused(p.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), g16.data_ptr(), n, h,
                true, nullptr, WorkingType::kNone, isa, gt);
    adamw_fused(p2.data_ptr<float>(), m2.data_ptr<float>(), v2.data_ptr<float>(), g32.data_ptr(), n,
                h, true, nullptr, WorkingType::kNone, isa, GradType::kFloat32);
    const bool same = at::equal(p, p2) && at::equal(m, m2) && at::equal(v, v2);
    std::printf("%s: %s gradients identical to their fp32 values: %s (max |p - p_fp32| %.3g)\n",
                adam_isa_name(isa), gt == GradType::kFloat16 ? "fp16" : "bf16", same ? "yes" : "NO",
                (p - p2).abs().max().item<double>());
    EXPECT_TRUE(same);
  }
}
