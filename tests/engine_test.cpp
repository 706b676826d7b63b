// The engine (actors, Gloo collectives, per-unit recompute, fused CPU AdamW) against a plain
// LibTorch reference: whole-model autograd and torch::optim::AdamW on the same initial parameters
// and the same global batches.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include "actors/engine.hpp"
#include "comm/c10d_store.hpp"

#include <thread>
#include "test_util.hpp"

using namespace xy;

namespace {

class Reference {
 public:
  explicit Reference(const Config& cfg)
      : cfg_(cfg), layout_(build_layout(cfg.model, 1, cfg.optimizer.no_decay)), model_(cfg.model, layout_) {
    std::vector<at::Tensor> decay, no_decay;
    for (const auto& u : layout_.units) {
      at::Tensor full = init_unit(u, cfg.model.init_std, cfg.model.init_seed, at::kFloat);
      std::vector<at::Tensor> ps;
      for (const auto& p : u.params) {
        ps.push_back(full.narrow(0, p.offset, p.numel).view(p.shape).clone().requires_grad_(true));
        (p.decay ? decay : no_decay).push_back(ps.back());
        all_.push_back(ps.back());
      }
      leaves_.push_back(std::move(ps));
    }
    const auto& o = cfg.optimizer;
    auto opts = [&](double wd) {
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, opts(o.weight_decay));
    groups.emplace_back(no_decay, opts(0.0));
    opt_ = std::make_unique<torch::optim::AdamW>(std::move(groups), *opts(o.weight_decay));
  }

  // One optimizer step over the given micro-batches (each [mb, seq + 1]); returns the mean loss.
  // With `stale`, the gradients are taken at the parameters of two steps ago (the delayed
  // update's relation: theta_s = Adam(theta_{s-1}, grad L_s(theta_{s-2}))).
  double step(int64_t step, const std::vector<at::Tensor>& batches, bool stale = false) {
    std::vector<at::Tensor> current;
    if (stale) {
      at::NoGradGuard ng;
      if (older_.empty())
        for (const auto& p : all_) older_.push_back(p.detach().clone());
      for (size_t i = 0; i < all_.size(); ++i) {
        current.push_back(all_[i].detach().clone());
        all_[i].copy_(older_[i]);
      }
    }
    opt_->zero_grad();
    double total = 0;
    for (const auto& b : batches) {
      at::Tensor ids = b.narrow(1, 0, b.size(1) - 1), labels = b.narrow(1, 1, b.size(1) - 1);
      at::Tensor loss = Llama::loss(model_.forward(flats(), ids), labels);
      (loss / static_cast<double>(batches.size())).backward();
      total += loss.item<double>();
    }
    if (stale) {
      at::NoGradGuard ng;
      for (size_t i = 0; i < all_.size(); ++i) all_[i].copy_(current[i]);
      older_ = current;
    }
    if (cfg_.optimizer.grad_clip > 0) torch::nn::utils::clip_grad_norm_(all_, cfg_.optimizer.grad_clip);
    const double lr = learning_rate(cfg_.optimizer, step, cfg_.train.steps);
    for (auto& g : opt_->param_groups())
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    opt_->step();
    return total / static_cast<double>(batches.size());
  }

  at::Tensor unit(size_t u) const {
    std::vector<at::Tensor> parts;
    for (const auto& p : leaves_[u]) parts.push_back(p.detach().reshape({-1}));
    return at::cat(parts);
  }

 private:
  std::vector<at::Tensor> flats() const {
    std::vector<at::Tensor> out;
    for (size_t u = 0; u < leaves_.size(); ++u) {
      std::vector<at::Tensor> parts;
      for (const auto& p : leaves_[u]) parts.push_back(p.reshape({-1}));
      out.push_back(at::cat(parts));
    }
    return out;
  }

  Config cfg_;
  ModelLayout layout_;
  Llama model_;
  std::vector<std::vector<at::Tensor>> leaves_;
  std::vector<at::Tensor> all_;
  std::vector<at::Tensor> older_;  // the parameters of the previous step (delayed update)
  std::unique_ptr<torch::optim::AdamW> opt_;
};

// The global batch of `step`: every rank's micro-batches, in the engine's sample order.
std::vector<at::Tensor> global_batches(const Config& cfg, const SampleSource& data, int world,
                                       int64_t step) {
  SampleOrder order(data.size(), world, cfg.data.seed);
  const int64_t mb = cfg.train.micro_batch, accum = cfg.train.grad_accum, len = data.seq_len();
  std::vector<at::Tensor> out;
  for (int r = 0; r < world; ++r)
    for (int64_t k = 0; k < accum; ++k) {
      at::Tensor t = at::empty({mb, len + 1}, at::kLong);
      for (int64_t i = 0; i < mb; ++i)
        data.copy_sample(order.at(r, ((step - 1) * accum + k) * mb + i), t.data_ptr<int64_t>() + i * (len + 1));
      out.push_back(t);
    }
  return out;
}


void expect_engine_matches_reference(int world, int64_t steps, int64_t accum, double tol,
                                     bool delayed = false, bool modern = false) {
  Config cfg = test::tiny_config(world, steps, accum);
  cfg.optimizer.delayed_update = delayed;
  if (modern) test::make_modern(cfg);
  auto data = test::random_samples(4000, cfg.data.seq_len, cfg.model.vocab_size);
  RunOptions ro;
  ro.data = data;
  ro.quiet = true;
  ro.checkpoint_at_end = false;
  ro.keep_params = true;
  TrainResult r = run_training(cfg, ro);
  ASSERT_EQ(r.exit_code, kExitOk) << r.error;
  ASSERT_EQ(static_cast<int64_t>(r.steps.size()), steps);

  Reference ref(cfg);
  double worst_loss = 0;
  for (int64_t s = 1; s <= steps; ++s) {
    const double l = ref.step(s, global_batches(cfg, *data, world, s), delayed);
    worst_loss = std::max(worst_loss, std::abs(r.steps[s - 1].loss - l) / std::abs(l));
  }
  std::printf("world %d, %lld steps, grad_accum %lld%s%s: worst loss relative error %.3g\n", world,
              static_cast<long long>(steps), static_cast<long long>(accum),
              delayed ? ", delayed update" : "",
              modern ? ", tied + qk_norm + qkv bias + head_dim 12 + llama3 RoPE" : "", worst_loss);
  EXPECT_LT(worst_loss, tol);
  ASSERT_EQ(r.final_params.size(), 4u);
  for (size_t u = 0; u < r.final_params.size(); ++u) {
    const double err = test::rel_err(r.final_params[u], ref.unit(u));
    std::printf("  unit %zu: parameter relative error %.3g\n", u, err);
    EXPECT_LT(err, tol);
  }
}

}  // namespace

TEST(Engine, OneStepEqualsLibTorchReference) { expect_engine_matches_reference(1, 1, 1, 1e-5); }
TEST(Engine, TwentyStepsWorld1) { expect_engine_matches_reference(1, 20, 1, 1e-5); }
TEST(Engine, TwentyStepsWorld2) { expect_engine_matches_reference(2, 20, 1, 1e-5); }
TEST(Engine, TwentyStepsWorld3) { expect_engine_matches_reference(3, 20, 1, 1e-5); }
TEST(Engine, TwentyStepsWorld4) { expect_engine_matches_reference(4, 20, 1, 1e-5); }
TEST(Engine, GradAccum4World2) { expect_engine_matches_reference(2, 10, 4, 1e-5); }

// Tied embeddings through the engine: the embedding unit is gathered once per micro-batch, the
// head's part of its gradient is added before its one reduce-scatter, and the result is the
// whole-model autograd's with one tied parameter (evaluation included in eval_test's way).
TEST(Engine, ModernArchitectureWorld1) { expect_engine_matches_reference(1, 6, 1, 1e-5, false, true); }
TEST(Engine, ModernArchitectureWorld2GradAccum2) {
  expect_engine_matches_reference(2, 6, 2, 1e-5, false, true);
}
TEST(Engine, ModernArchitectureWorld2Delayed) { expect_engine_matches_reference(2, 6, 1, 1e-5, true, true); }

// The delayed update is exactly one step stale: step s's gradient is taken at theta_{s-2}.
TEST(Engine, DelayedUpdateIsExactlyOneStepStale) { expect_engine_matches_reference(1, 12, 1, 1e-5, true); }
TEST(Engine, DelayedUpdateWorld3GradAccum2) { expect_engine_matches_reference(3, 10, 2, 1e-5, true); }

// The host state of docs/ARCHITECTURE.md (fp32 master, m, v, gradient landing) is 14 bytes a parameter with
// 16-bit gradients and 16 with fp32 ones, plus the padding of each unit to the world size; the
// working copies (device memory on GPUs) are reported apart.
TEST(Engine, HostBytesPerParameterReported) {
  for (auto [precision, expect] : {std::pair{"bf16", 14.0}, std::pair{"fp32", 16.0}}) {
    Config cfg = test::tiny_config(2, 2);
    cfg.train.precision = precision;
    auto data = test::random_samples(2000, cfg.data.seq_len, cfg.model.vocab_size);
    RunOptions ro;
    ro.data = data;
    ro.quiet = true;
    ro.checkpoint_at_end = false;
    TrainResult r = run_training(cfg, ro);
    ASSERT_EQ(r.exit_code, kExitOk) << r.error;
    const ModelLayout layout = build_layout(cfg.model, 2, {});
    const double per_param = static_cast<double>(r.host_bytes) / layout.total_numel();
    const double working = static_cast<double>(r.working_bytes) / layout.total_numel();
    int64_t padding = 0;
    for (const auto& u : layout.units) padding += u.padded_numel - u.numel;
    std::printf("%s: host state %.3f bytes/parameter (padding: %lld elements), working copies %.3f\n",
                precision, per_param, static_cast<long long>(padding), working);
    EXPECT_GE(per_param, expect);
    EXPECT_LE(static_cast<double>(r.host_bytes), expect * layout.total_numel() + expect * padding);
    // It trained, and computed what it should: every step's loss is the plain LibTorch model's
    // (fp32) on the same batches, within the working precision (bf16: an 8-bit mantissa).
    ASSERT_EQ(r.steps.size(), 2u);
    Reference ref(cfg);
    double worst = 0;
    for (int64_t s = 1; s <= 2; ++s) {
      const double l = ref.step(s, global_batches(cfg, *data, 2, s));
      worst = std::max(worst, std::abs(r.steps[s - 1].loss - l) / std::abs(l));
    }
    const double tol = std::string(precision) == "fp32" ? 1e-5 : 5e-4;
    std::printf("%s: losses %.6f %.6f, worst relative error against the LibTorch reference %.3g (limit %.0e)\n",
                precision, r.steps[0].loss, r.steps[1].loss, worst, tol);
    EXPECT_LT(worst, tol);
  }
}

TEST(Engine, BadSetupIsAnErrorNotACrash) {
  Config cfg = test::tiny_config(1, 1);
  RunOptions ro;
  ro.quiet = true;
  ro.data = test::random_samples(2000, cfg.data.seq_len, cfg.model.vocab_size + 50);
  TrainResult r = run_training(cfg, ro);
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.error.find("model.vocab_size is 97"), std::string::npos) << r.error;
  std::printf("error: %s\n", r.error.c_str());
}

// docs/ARCHITECTURE.md, "Precision": one node without bf16 (a V100) makes the whole job fp16, and every node
// is told which node forced it; with bf16 everywhere nothing changes.
TEST(Precision, OneNodeWithoutBf16MakesTheWholeJobFp16) {
  auto store = xy::open_job_store(1, 1, "", 0, false, 20);
  const std::string v100 = "device 0 (Tesla V100-SXM2-32GB, compute capability 7.0) has no bf16";
  std::string p[3], msg[3];
  std::vector<std::thread> nodes;
  for (int n = 0; n < 3; ++n)
    nodes.emplace_back([&, n] { p[n] = xy::agree_precision(*store, n, 3, "bf16", n == 1 ? v100 : "", &msg[n]); });
  for (auto& t : nodes) t.join();
  for (int n = 0; n < 3; ++n) {
    std::printf("node %d: %s: %s\n", n, p[n].c_str(), msg[n].c_str());
    EXPECT_EQ(p[n], "fp16");
    EXPECT_NE(msg[n].find("node 1: " + v100 + ": the whole job trains in fp16"), std::string::npos);
  }
}

TEST(Precision, Bf16EverywhereStaysBf16AndOtherPrecisionsPassThrough) {
  auto store = xy::open_job_store(1, 1, "", 0, false, 20);
  std::string p[2], msg[2];
  std::vector<std::thread> nodes;
  for (int n = 0; n < 2; ++n)
    nodes.emplace_back([&, n] { p[n] = xy::agree_precision(*store, n, 2, "bf16", "", &msg[n]); });
  for (auto& t : nodes) t.join();
  for (int n = 0; n < 2; ++n) {
    EXPECT_EQ(p[n], "bf16");
    EXPECT_EQ(msg[n], "");
  }
  std::string m;
  EXPECT_EQ(xy::agree_precision(*store, 0, 2, "fp32", "no bf16 here", &m), "fp32");
  EXPECT_EQ(m, "");
}
