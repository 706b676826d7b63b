// Numerical parity with transformers' LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM:
// tiny random models saved by save_pretrained (tests/fixtures/hf_*) are loaded with
// load_hf_units, and xy's logits, loss and every parameter gradient (through the engine's per-unit
// recompute + backward path) are compared with the ones transformers computed, in fp32.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstring>

#include "io/hf_config.hpp"
#include "io/safetensors.hpp"
#include "model/hf_io.hpp"
#include "model/layout.hpp"
#include "model/llama.hpp"
#include "test_util.hpp"

using namespace xy;

namespace {

bool exists(const std::string& p) {
  struct stat s;
  return ::stat(p.c_str(), &s) == 0;
}

// A fixture tensor as an owned at::Tensor (F32 or I64).
at::Tensor fixture_tensor(const st::Reader& r, const std::string& name) {
  const st::TensorRef t = r.get(name);
  at::ScalarType type;
  if (t.info->dtype == st::DType::kF32) type = at::kFloat;
  else if (t.info->dtype == st::DType::kI64) type = at::kLong;
  else throw std::runtime_error(*t.file + ": tensor '" + name + "': expected F32 or I64");
  at::Tensor out = at::empty(t.info->shape, at::TensorOptions().dtype(type));
  std::memcpy(out.data_ptr(), t.data, t.info->nbytes());
  return out;
}

}  // namespace

// Every fixture folder: hf_tiny (Llama-2-shaped), hf_llama3_tiny (tied, llama3 RoPE),
// hf_qwen3_tiny (tied, head_dim 16 != 64 / 8, q/k norms), hf_qwen2_tiny (q/k/v biases), made by
// scripts/make_hf_fixture.py and scripts/make_modern_fixtures.py.
class HfParity : public ::testing::TestWithParam<const char*> {};

TEST_P(HfParity, LogitsLossAndEveryGradientMatchTransformers) {
  const std::string dir = std::string("tests/fixtures/") + GetParam();
  // The fixture is committed: without it the checkout is broken (a failure, not a skip).
  if (!exists(dir + "/config.json") || !exists(dir + "/fixture.safetensors"))
    FAIL() << dir << " is absent: generate it on a machine with PyTorch and transformers with\n"
           << "  python3 scripts/make_hf_fixture.py --out tests/fixtures/hf_tiny, or\n"
           << "  python3 scripts/make_modern_fixtures.py --models tests/fixtures\n"
           << "and commit it (see docs/INTEROP.md)";
  const char* kDir = dir.c_str();

  const HfModelConfig hc = read_hf_config(kDir);
  ModelConfig m = hc.model;
  const ModelLayout layout = build_layout(m, 1, {});
  const Llama model(m, layout);
  const std::vector<at::Tensor> flats = load_hf_units(kDir, layout, at::kFloat);

  const st::Reader fx = st::Reader::open(std::string(kDir) + "/fixture.safetensors");
  const at::Tensor ids = fixture_tensor(fx, "input_ids");
  const at::Tensor ref_logits = fixture_tensor(fx, "logits");
  const double ref_loss = fixture_tensor(fx, "loss").reshape({-1})[0].item<double>();
  const int64_t t = ids.size(1);
  std::printf("fixture: %s (%s), vocab %lld, hidden %lld, %lld layers, %lld heads / %lld KV heads, "
              "head_dim %lld, tied %d, attention bias %s, qk_norm %d, rope %s (theta %g), "
              "input ids [%lld, %lld], transformers %s\n",
              kDir, m.family.c_str(), (long long)m.vocab_size, (long long)m.hidden, (long long)m.layers,
              (long long)m.heads, (long long)m.kv_heads, (long long)head_dim_of(m),
              (int)m.tie_embeddings, m.attention_bias.c_str(), (int)m.qk_norm,
              m.rope_scaling.c_str(), m.rope_theta, (long long)ids.size(0), (long long)t,
              fx.files()[0]->header().metadata.count("transformers")
                  ? fx.files()[0]->header().metadata.at("transformers").c_str() : "?");

  // Logits of the whole sequence, and transformers' loss: labels = input ids, shifted inside.
  at::Tensor logits;
  {
    at::NoGradGuard ng;
    logits = model.forward(flats, ids);
  }
  const double logits_err = test::max_abs_err(logits, ref_logits);
  const double logits_max = ref_logits.abs().max().item<double>();
  std::printf("logits: max abs error %.3g (max |logit| %.3g)\n", logits_err, logits_max);
  EXPECT_LE(logits_err, 1e-4);

  const at::Tensor in = ids.narrow(1, 0, t - 1), labels = ids.narrow(1, 1, t - 1);
  const double loss = Llama::loss(logits.narrow(1, 0, t - 1), labels).item<double>();
  const double loss_rel = std::abs(loss - ref_loss) / std::abs(ref_loss);
  std::printf("loss: xy %.9g, transformers %.9g, relative error %.3g\n", loss, ref_loss, loss_rel);
  EXPECT_LE(loss_rel, 1e-5);

  // Gradients through the engine's path: forward without autograd keeping each block's input,
  // then head backward, each block recomputed from its input and backpropagated, embedding last
  // (tied: with the head's part of the embedding's gradient added, as the trainer does).
  // The last position predicts nothing, so running on the first t-1 tokens is exact.
  const test::UnitGrads pu = test::per_unit_backward(model, flats, in, labels);
  const std::vector<at::Tensor>& grads = pu.grads;
  const double head_loss_rel = std::abs(pu.loss - ref_loss) / std::abs(ref_loss);
  std::printf("loss (per-unit path): relative error %.3g\n", head_loss_rel);
  EXPECT_LE(head_loss_rel, 1e-5);

  double worst = 0;
  int compared = 0;
  for (size_t u = 0; u < flats.size(); ++u) {
    const auto views = param_views(layout.units[u], grads[u]);
    for (size_t i = 0; i < views.size(); ++i) {
      const std::string& name = layout.units[u].params[i].name;
      const at::Tensor ref = fixture_tensor(fx, "grad." + name);
      ASSERT_EQ(ref.sizes(), views[i].sizes()) << name;
      const double err = test::rel_err(views[i], ref);
      std::printf("grad %-45s relative error %.3g\n", name.c_str(), err);
      EXPECT_LE(err, 1e-4) << name;
      worst = std::max(worst, err);
      ++compared;
    }
  }
  // Every parameter transformers has was compared: a tied model has no grad.lm_head.weight.
  int in_fixture = 0;
  for (const auto& n : fx.names()) in_fixture += n.rfind("grad.", 0) == 0;
  EXPECT_EQ(compared, in_fixture) << "the fixture has gradients of parameters xy's layout lacks";
  std::printf("gradients: %d compared, worst relative error %.3g\n", compared, worst);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParity,
                         ::testing::Values("hf_tiny", "hf_llama3_tiny", "hf_qwen3_tiny", "hf_qwen2_tiny"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// RoPE of every scaling kind against transformers' LlamaRotaryEmbedding: cos and sin for
// positions 0..T-1 (attention factor included), from the config.json text that made them.
TEST(RopeTables, EveryScalingKindMatchesTransformers) {
  const std::string path = "tests/fixtures/rope_tables.safetensors";
  if (!exists(path))
    FAIL() << path << " is absent: python3 scripts/make_modern_fixtures.py --models tests/fixtures";
  const st::Reader fx = st::Reader::open(path);
  const auto& meta = fx.files()[0]->header().metadata;
  int kinds = 0;
  for (const char* kind : {"default", "linear", "dynamic", "llama3", "yarn"}) {
    ASSERT_TRUE(meta.count(std::string(kind) + ".config")) << kind;
    const ModelConfig m =
        parse_hf_config(meta.at(std::string(kind) + ".config"), path + ": " + kind + ".config").model;
    const at::Tensor ref_cos = fixture_tensor(fx, std::string(kind) + ".cos");
    const at::Tensor ref_sin = fixture_tensor(fx, std::string(kind) + ".sin");
    const int64_t t = ref_cos.size(0);
    const auto [cos, sin] = rope_tables(m, t);
    ASSERT_EQ(cos.sizes(), ref_cos.sizes()) << kind;
    const double ec = test::max_abs_err(cos, ref_cos), es = test::max_abs_err(sin, ref_sin);
    std::printf("rope %-8s (xy: %s, factor %g, original %lld, max_seq_len %lld): T %lld, head_dim "
                "%lld: cos max abs error %.3g, sin %.3g\n",
                kind, m.rope_scaling.c_str(), m.rope_factor, (long long)m.rope_original_max_len,
                (long long)m.max_seq_len, (long long)t, (long long)cos.size(1), ec, es);
    EXPECT_LE(ec, 1e-5) << kind;
    EXPECT_LE(es, 1e-5) << kind;
    EXPECT_EQ(m.rope_scaling, std::string(kind) == "default" ? "none" : kind);
    ++kinds;
  }
  EXPECT_EQ(kinds, 5);
}
