// The model's building blocks against hand-computed cases, and the per-unit recompute + backward
// path against whole-model autograd.
#include <gtest/gtest.h>

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#include "model/compat.hpp"
#include "model/layout.hpp"
#include "model/llama.hpp"
#include "test_util.hpp"

using namespace xy;

TEST(RmsNorm, HandComputed) {
  // x = [1, 2, 3, 4]: mean of squares 7.5, so x / sqrt(7.5 + eps), times the weight.
  at::Tensor x = at::tensor({1.f, 2.f, 3.f, 4.f}).view({1, 4});
  at::Tensor w = at::tensor({1.f, 2.f, 0.5f, 1.f});
  at::Tensor y = rms_norm(x, w, 1e-5);
  const double r = 1.0 / std::sqrt(7.5 + 1e-5);
  at::Tensor expect = at::tensor({1 * r * 1, 2 * r * 2, 3 * r * 0.5, 4 * r * 1}, at::kDouble).view({1, 4});
  const double err = test::max_abs_err(y, expect);
  std::printf("rms_norm max abs error %.3g\n", err);
  EXPECT_LT(err, 1e-6);
}

TEST(Rope, HandComputedRotateHalf) {
  // head_dim 4, theta 10000: inv_freq = [1, 0.01]; position p rotates the pairs (0, 2) by p and
  // (1, 3) by 0.01 p (rotate-half pairs element i with element i + d/2).
  auto [cos, sin] = rope_tables(3, 4, 10000.0);
  at::Tensor x = at::tensor({1.f, 2.f, 3.f, 4.f}).view({1, 1, 1, 4}).expand({1, 1, 3, 4}).contiguous();
  at::Tensor y = apply_rope(x, cos, sin);
  for (int p = 0; p < 3; ++p) {
    const double a = p * 1.0, b = p * 0.01;
    const double e[4] = {1 * std::cos(a) - 3 * std::sin(a), 2 * std::cos(b) - 4 * std::sin(b),
                         3 * std::cos(a) + 1 * std::sin(a), 4 * std::cos(b) + 2 * std::sin(b)};
    for (int i = 0; i < 4; ++i) {
      const double got = y[0][0][p][i].item<double>();
      EXPECT_NEAR(got, e[i], 1e-6) << "position " << p << " element " << i;
    }
  }
  std::printf("rope: 12 hand-computed values within 1e-6\n");
}

TEST(Attention, HandComputedCausal) {
  // One head, head_dim 1: q = k = [1, 2], v = [1, 10]. Position 0 sees only itself; position 1
  // weighs v by softmax([2*1, 2*2]) = softmax([2, 4]).
  at::Tensor q = at::tensor({1.f, 2.f}).view({1, 1, 2, 1});
  at::Tensor v = at::tensor({1.f, 10.f}).view({1, 1, 2, 1});
  at::Tensor out = compat::causal_attention(q, q, v);
  const double e2 = std::exp(2.0), e4 = std::exp(4.0);
  const double expect1 = (e2 * 1 + e4 * 10) / (e2 + e4);
  const double err = std::max(std::abs(out[0][0][0][0].item<double>() - 1.0),
                              std::abs(out[0][0][1][0].item<double>() - expect1));
  std::printf("causal attention max abs error %.3g\n", err);
  EXPECT_LT(err, 1e-5);
}

TEST(Attention, GroupedKvHeadsEqualRepeatedWeights) {
  // A block with 4 query heads over 2 KV heads equals the same block with 4 KV heads whose K/V
  // weights repeat each group's rows (Hugging Face's repeat_kv).
  Config c = test::tiny_config(1, 1);
  ModelConfig mg = c.model, mf = c.model;
  mf.kv_heads = mf.heads;
  ModelLayout lg = build_layout(mg, 1, {}), lf = build_layout(mf, 1, {});
  Llama g(mg, lg), f(mf, lf);
  at::Tensor pg = init_unit(lg.units[1], 0.2, 5, at::kFloat);
  at::Tensor pf = at::zeros({lf.units[1].padded_numel});
  auto vg = param_views(lg.units[1], pg), vf = param_views(lf.units[1], pf);
  const int64_t hd = mg.hidden / mg.heads, rep = mg.heads / mg.kv_heads;
  for (size_t i = 0; i < vg.size(); ++i) {
    if (i == 2 || i == 3) {  // k_proj, v_proj: [kv*hd, h] -> [heads*hd, h]
      at::Tensor w = vg[i].view({mg.kv_heads, 1, hd, mg.hidden}).expand({mg.kv_heads, rep, hd, mg.hidden});
      vf[i].copy_(w.reshape({mg.heads * hd, mg.hidden}));
    } else {
      vf[i].copy_(vg[i]);
    }
  }
  at::Tensor x = at::randn({2, 5, mg.hidden});
  const double err = test::rel_err(g.block_forward(1, pg, x), f.block_forward(1, pf, x));
  std::printf("GQA vs repeated KV weights: relative error %.3g\n", err);
  EXPECT_LT(err, 1e-6);
}

TEST(Llama, PerUnitBackwardEqualsWholeModelAutograd) {
  Config c = test::tiny_config(1, 1);
  ModelLayout layout = build_layout(c.model, 1, {});
  Llama model(c.model, layout);
  std::vector<at::Tensor> flats;
  for (const auto& u : layout.units) flats.push_back(init_unit(u, 0.1, 9, at::kFloat));
  at::Tensor tokens = at::randint(0, c.model.vocab_size, {3, 9}, at::kLong);
  at::Tensor ids = tokens.narrow(1, 0, 8), labels = tokens.narrow(1, 1, 8);

  // Whole model, autograd.
  std::vector<at::Tensor> leaves;
  for (auto& f : flats) leaves.push_back(f.clone().requires_grad_(true));
  at::Tensor loss = Llama::loss(model.forward(leaves, ids), labels);
  auto ref = torch::autograd::grad({loss}, leaves);

  // Per unit: forward without autograd keeping block inputs, then recompute + backward.
  const test::UnitGrads pu = test::per_unit_backward(model, flats, ids, labels);
  const std::vector<at::Tensor>& grads = pu.grads;

  EXPECT_NEAR(pu.loss, loss.item<double>(), 1e-6);
  for (size_t u = 0; u < flats.size(); ++u) {
    const double err = test::rel_err(grads[u], ref[u]);
    std::printf("unit %zu (%s): gradient relative error %.3g\n", u, layout.units[u].name.c_str(), err);
    EXPECT_LT(err, 1e-5);
  }
}

// A shape the config reader would refuse, built another way (a checkpoint's manifest, a test): one
// line instead of a SIGFPE (heads = 0) or a size that wraps around (hidden = 2^40: hidden^2 > 2^63).
TEST(Layout, InvalidOrHugeShapesAreErrorsNamingTheKeys) {
  ModelConfig m = test::tiny_config(1, 1).model;
  m.heads = 0;
  try {
    build_layout(m, 1, {});
    ADD_FAILURE() << "heads = 0 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("model: not a valid shape"), std::string::npos) << e.what();
  }
  m = test::tiny_config(1, 1).model;
  m.hidden = int64_t{1} << 40;
  m.heads = 8;
  try {
    build_layout(m, 1, {});
    ADD_FAILURE() << "hidden = 2^40 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("q_proj.weight would have more than 2^53 elements (model.hidden too large)"),
              std::string::npos) << e.what();
  }
}

TEST(Layout, NamedSizeTableAndShards) {
  Config c = test::tiny_config(3, 1);
  ModelLayout l = build_layout(c.model, 3, {"norm"});
  ASSERT_EQ(l.units.size(), 4u);
  const UnitLayout& b = l.units[1];
  EXPECT_EQ(b.param("self_attn.k_proj.weight").shape, (std::vector<int64_t>{16, 32}));
  EXPECT_FALSE(b.param("input_layernorm.weight").decay);
  EXPECT_TRUE(b.param("mlp.down_proj.weight").decay);
  for (const auto& u : l.units) {
    EXPECT_EQ(u.padded_numel % 3, 0);
    EXPECT_GE(u.padded_numel, u.numel);
    EXPECT_LT(u.padded_numel - u.numel, 3);
    EXPECT_EQ(u.shard_end(2), u.numel);
  }
  EXPECT_EQ(l.units[0].params[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(l.units.back().params[1].name, "lm_head.weight");
}
