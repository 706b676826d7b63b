// Validation ([eval]): the held-out loss the engine reports equals the loss of an independent
// forward (tests/hf_reference.hpp: transformers' LlamaForCausalLM written out in plain ATen, which
// shares no code with xy's model) of the final parameters over the same samples, on 1 to 4 ranks;
// and evaluating changes nothing about training (the final parameters are bitwise those of the
// same run without evaluation).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "actors/engine.hpp"
#include "hf_reference.hpp"
#include "model/hf_io.hpp"
#include "test_util.hpp"

using namespace xy;

namespace {

constexpr int64_t kEvalSamples = 12;  // split evenly over 1, 2, 3 and 4 ranks

// `tied`: tied embeddings, q/k norms and head_dim 12 (Eval.TiedEmbeddingsOnTwoRanks).
Config eval_config(int world, bool delayed, bool tied) {
  Config cfg = test::tiny_config(world, 4);
  cfg.optimizer.delayed_update = delayed;
  if (tied) {
    cfg.model.tie_embeddings = true;
    cfg.model.qk_norm = true;
    cfg.model.head_dim = 12;
  }
  return cfg;
}

TrainResult train(int world, bool with_eval, bool delayed = false, bool tied = false) {
  Config cfg = eval_config(world, delayed, tied);
  cfg.eval.every_steps = 2;
  cfg.eval.samples = kEvalSamples;
  cfg.eval.micro_batch = 2;  // 12 / 4 ranks = 3 samples each: micro-batches of 2 and 1
  RunOptions ro;
  ro.data = test::random_samples(4000, cfg.data.seq_len, cfg.model.vocab_size);
  ro.quiet = true;
  ro.checkpoint_at_end = false;
  ro.keep_params = true;
  if (with_eval)
    ro.eval_sets = {EvalSet{"held", "(random)",
                            test::random_samples(600, cfg.data.seq_len, cfg.model.vocab_size, 99)}};
  TrainResult r = run_training(cfg, ro);
  EXPECT_EQ(r.exit_code, 0) << r.error;
  return r;
}

// The mean token cross-entropy of the final parameters over the eval set's first kEvalSamples
// samples, by the independent reference reading them from an exported Hugging Face folder.
double reference_loss(const TrainResult& r, int world) {
  Config cfg = test::tiny_config(world, 4);
  const ModelLayout layout = build_layout(cfg.model, 1, cfg.optimizer.no_decay);
  const std::string dir = ::testing::TempDir() + "eval_ref_" + std::to_string(::getpid()) + "_" +
                          std::to_string(world);
  std::filesystem::remove_all(dir);
  save_hf_model(dir, cfg.model, layout, r.final_params, at::kFloat);
  const test::HfReference ref(dir);
  auto set = test::random_samples(600, cfg.data.seq_len, cfg.model.vocab_size, 99);
  const int64_t len = cfg.data.seq_len;
  at::Tensor ids = at::empty({kEvalSamples, len + 1}, at::kLong);
  for (int64_t i = 0; i < kEvalSamples; ++i) set->copy_sample(i, ids.data_ptr<int64_t>() + i * (len + 1));
  const at::Tensor logits = ref.forward(ids.narrow(1, 0, len)).to(at::kDouble);
  const at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                                 ids.narrow(1, 1, len).reshape({-1}));
  std::filesystem::remove_all(dir);
  return loss.item<double>();
}

}  // namespace

TEST(Eval, EqualsAnIndependentForwardOnOneToFourRanks) {
  for (int world = 1; world <= 4; ++world) {
    const TrainResult r = train(world, true);
    ASSERT_EQ(r.evals.size(), 2u) << "evaluations at steps 2 and 4";
    EXPECT_EQ(r.evals[0].step, 2);
    EXPECT_EQ(r.evals[1].step, 4);
    EXPECT_EQ(r.evals[1].samples, kEvalSamples);
    EXPECT_EQ(r.evals[1].tokens, static_cast<double>(kEvalSamples * 12));
    const double ref = reference_loss(r, world);
    const double err = std::abs(r.evals[1].loss - ref);
    std::printf("world %d: eval loss %.8f, independent reference %.8f, |error| %.3g\n", world,
                r.evals[1].loss, ref, err);
    EXPECT_LT(err, 1e-5);
    EXPECT_GT(std::abs(r.evals[0].loss - r.evals[1].loss), 1e-6) << "step 2 and 4 differ";
  }
}

TEST(Eval, ChangesNothingAboutTraining) {
  for (bool delayed : {false, true}) {
    const TrainResult with = train(2, true, delayed), without = train(2, false, delayed);
    ASSERT_EQ(with.final_params.size(), without.final_params.size());
    for (size_t u = 0; u < with.final_params.size(); ++u)
      EXPECT_TRUE(at::equal(with.final_params[u], without.final_params[u]))
          << "unit " << u << (delayed ? " (delayed update)" : "");
    ASSERT_EQ(with.steps.size(), without.steps.size());
    for (size_t i = 0; i < with.steps.size(); ++i) EXPECT_EQ(with.steps[i].loss, without.steps[i].loss);
    std::printf("%s: final parameters bitwise equal with and without evaluation (%zu evaluations)\n",
                delayed ? "delayed update" : "exact", with.evals.size());
  }
}

// Tied embeddings: the head's matrix is the embedding unit, held from the forward's gather until
// the head has used it. The evaluated loss is the whole-model forward's (model/llama.cpp, every
// unit at once) of the final parameters, and evaluating changes nothing about training.
TEST(Eval, TiedEmbeddingsOnTwoRanks) {
  const Config cfg = eval_config(2, false, true);
  const TrainResult with = train(2, true, false, true);
  const TrainResult without = train(2, false, false, true);
  ASSERT_EQ(with.evals.size(), 2u);
  const ModelLayout layout = build_layout(cfg.model, 1, cfg.optimizer.no_decay);
  ASSERT_EQ(layout.units.back().params.size(), 1u) << "a tied head holds only the final norm";
  const Llama model(cfg.model, layout);
  auto set = test::random_samples(600, cfg.data.seq_len, cfg.model.vocab_size, 99);
  const int64_t len = cfg.data.seq_len;
  at::Tensor ids = at::empty({kEvalSamples, len + 1}, at::kLong);
  for (int64_t i = 0; i < kEvalSamples; ++i) set->copy_sample(i, ids.data_ptr<int64_t>() + i * (len + 1));
  at::NoGradGuard ng;
  const at::Tensor logits = model.forward(with.final_params, ids.narrow(1, 0, len)).to(at::kDouble);
  const double ref = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                            ids.narrow(1, 1, len).reshape({-1})).item<double>();
  const double err = std::abs(with.evals[1].loss - ref);
  std::printf("tied, world 2: eval loss %.8f, whole-model forward %.8f, |error| %.3g\n",
              with.evals[1].loss, ref, err);
  EXPECT_LT(err, 1e-5);
  for (size_t u = 0; u < with.final_params.size(); ++u)
    EXPECT_TRUE(at::equal(with.final_params[u], without.final_params[u])) << "unit " << u;
}
