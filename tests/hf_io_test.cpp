// Hugging Face folders <-> unit buffers: save -> load is bitwise identical (fp32, and bf16 for
// representable values, sharded), and each way a folder can disagree with the model is an exact error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/hf_config.hpp"
#include "io/safetensors.hpp"
#include "model/hf_io.hpp"
#include "model/layout.hpp"
#include "model/llama.hpp"
#include "hf_reference.hpp"
#include "test_util.hpp"

using namespace xy;
namespace fs = std::filesystem;

namespace {

class HfIo : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("xy_hf_io_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    cfg_ = test::tiny_config(1, 1).model;
    layout_ = build_layout(cfg_, 3, {"norm"});  // world 3: units have zero padding
    for (const auto& u : layout_.units) units_.push_back(init_unit(u, 0.3, 17, at::kFloat));
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string dir(const std::string& name) const { return (root_ / name).string(); }

  // Writes the model's tensors as one safetensors file in `d`, changed by `edit`.
  void write_raw(const std::string& d,
                 const std::function<void(std::vector<st::TensorToWrite>&)>& edit) {
    fs::create_directories(d);
    std::vector<st::TensorToWrite> ts;
    for (size_t i = 0; i < units_.size(); ++i)
      for (const auto& p : layout_.units[i].params)
        ts.push_back({p.name, st::DType::kF32, p.shape,
                      units_[i].data_ptr<float>() + p.offset, {}});
    edit(ts);
    st::write_file(d + "/model.safetensors", ts);
  }

  std::string load_error(const std::string& d) {
    try {
      load_hf_units(d, layout_, at::kFloat);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }

  fs::path root_;
  ModelConfig cfg_;
  ModelLayout layout_;
  std::vector<at::Tensor> units_;
};

}  // namespace

TEST_F(HfIo, Fp32RoundTripIsBitwiseIdenticalAndSharded) {
  uint64_t done = 0, total = 0;
  int calls = 0;
  save_hf_model(dir("out"), cfg_, layout_, units_, at::kFloat, /*max_shard_bytes=*/20000,
                [&](uint64_t d, uint64_t t) { done = d; total = t; ++calls; });
  EXPECT_TRUE(fs::exists(dir("out") + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir("out") + "/config.json"));
  EXPECT_EQ(done, static_cast<uint64_t>(layout_.total_numel()) * 4);
  EXPECT_EQ(total, done);
  const size_t shards = st::Reader::open(dir("out")).files().size();
  EXPECT_GT(shards, 1u);

  HfModelConfig back = read_hf_config(dir("out"));
  EXPECT_EQ(back.torch_dtype, "float32");
  EXPECT_EQ(back.model.hidden, cfg_.hidden);
  EXPECT_EQ(back.model.kv_heads, cfg_.kv_heads);
  EXPECT_EQ(back.model.vocab_size, cfg_.vocab_size);

  auto loaded = load_hf_units(dir("out"), layout_, at::kFloat);
  ASSERT_EQ(loaded.size(), units_.size());
  for (size_t i = 0; i < units_.size(); ++i) {
    EXPECT_EQ(loaded[i].numel(), layout_.units[i].padded_numel);
    EXPECT_TRUE(at::equal(loaded[i], units_[i])) << "unit " << layout_.units[i].name;
  }
  std::printf("fp32: %zu units, %d progress calls, %zu shards, bitwise identical\n",
              units_.size(), calls, shards);
}

TEST_F(HfIo, Bf16RoundTripOfRepresentableValues) {
  std::vector<at::Tensor> rep;
  for (const auto& u : units_) rep.push_back(u.to(at::kBFloat16).to(at::kFloat));
  save_hf_model(dir("bf16"), cfg_, layout_, rep, at::kBFloat16);
  EXPECT_TRUE(fs::exists(dir("bf16") + "/model.safetensors"));  // one shard, no index
  EXPECT_EQ(read_hf_config(dir("bf16")).torch_dtype, "bfloat16");
  EXPECT_EQ(st::Reader::open(dir("bf16")).get("lm_head.weight").info->dtype, st::DType::kBF16);
  auto as_f32 = load_hf_units(dir("bf16"), layout_, at::kFloat);
  auto as_bf16 = load_hf_units(dir("bf16"), layout_, at::kBFloat16);
  for (size_t i = 0; i < rep.size(); ++i) {
    EXPECT_TRUE(at::equal(as_f32[i], rep[i])) << layout_.units[i].name;
    EXPECT_EQ(as_bf16[i].scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(as_bf16[i], units_[i].to(at::kBFloat16))) << layout_.units[i].name;
  }
  std::printf("bf16: fp32 and bf16 loads bitwise identical\n");
}

TEST_F(HfIo, ShapeMismatchNamesFileTensorAndBothShapes) {
  save_hf_model(dir("m"), cfg_, layout_, units_, at::kFloat);
  ModelConfig other = cfg_;
  other.intermediate = 80;
  const ModelLayout lo = build_layout(other, 1, {});
  try {
    load_hf_units(dir("m"), lo, at::kFloat);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()), dir("m") + "/model.safetensors: tensor "
                                     "'model.layers.0.mlp.gate_proj.weight': shape [72, 32], "
                                     "expected [80, 32] for this model");
  }
}

TEST_F(HfIo, MissingTensor) {
  write_raw(dir("miss"), [](auto& ts) { ts.pop_back(); });  // lm_head.weight
  EXPECT_EQ(load_error(dir("miss")), dir("miss") + "/model.safetensors: missing tensor 'lm_head.weight'");
}

TEST_F(HfIo, ExtraTensorsAreListedAndInvFreqIgnored) {
  std::vector<float> bias(32, 0.f), inv(4, 1.f);
  write_raw(dir("extra"), [&](auto& ts) {
    ts.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", st::DType::kF32, {4}, inv.data(), {}});
  });
  auto loaded = load_hf_units(dir("extra"), layout_, at::kFloat);  // inv_freq alone: fine
  EXPECT_TRUE(at::equal(loaded[1], units_[1]));
  write_raw(dir("bias"), [&](auto& ts) {
    ts.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", st::DType::kF32, {4}, inv.data(), {}});
    ts.push_back({"model.layers.0.self_attn.q_proj.bias", st::DType::kF32, {32}, bias.data(), {}});
    ts.push_back({"model.layers.1.self_attn.q_proj.bias", st::DType::kF32, {32}, bias.data(), {}});
  });
  EXPECT_EQ(load_error(dir("bias")),
            dir("bias") + "/model.safetensors: 2 tensor(s) that an xy LLaMA does not have: "
                          "model.layers.0.self_attn.q_proj.bias, model.layers.1.self_attn.q_proj.bias");
}

// What an export adds (xy-node export): config.json's and generation_config.json's ids and the
// tokenizer files, written inside the folder that appears at once; file names that could leave the
// folder or replace what save_hf_model writes are refused.
TEST_F(HfIo, ExtrasAreWrittenIntoTheFolder) {
  HfFolderExtras extras;
  extras.token_ids = {-1, 151643};
  extras.generation_config = true;
  extras.files = {{"tokenizer.json", "{\"x\": 1}"}, {"tokenizer_config.json", std::string("a\0b", 3)}};
  save_hf_model(dir("x"), cfg_, layout_, units_, at::kFloat, int64_t{5} << 30, {}, extras);
  auto slurp = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(slurp(dir("x") + "/tokenizer.json"), "{\"x\": 1}");
  EXPECT_EQ(slurp(dir("x") + "/tokenizer_config.json"), std::string("a\0b", 3));
  EXPECT_EQ(slurp(dir("x") + "/generation_config.json"), hf_generation_config_json({-1, 151643}));
  EXPECT_NE(slurp(dir("x") + "/config.json").find("\"bos_token_id\": null,\n  \"eos_token_id\": 151643"),
            std::string::npos);
  EXPECT_EQ(load_hf_units(dir("x"), layout_).size(), units_.size());
  // Without extras: no generation_config.json, Llama-2's ids (what export wrote before).
  save_hf_model(dir("plain"), cfg_, layout_, units_, at::kFloat);
  EXPECT_FALSE(fs::exists(dir("plain") + "/generation_config.json"));
  EXPECT_NE(slurp(dir("plain") + "/config.json").find("\"bos_token_id\": 1,\n  \"eos_token_id\": 2"),
            std::string::npos);
  for (const char* bad : {"../tokenizer.json", "config.json", "model.safetensors", "", "a/b"}) {
    HfFolderExtras e;
    e.files = {{bad, "x"}};
    EXPECT_THROW(save_hf_model(dir("bad"), cfg_, layout_, units_, at::kFloat, int64_t{5} << 30, {}, e),
                 std::invalid_argument)
        << bad;
    EXPECT_FALSE(fs::exists(dir("bad")));
  }
}

TEST_F(HfIo, NonFloatDtype) {
  std::vector<int32_t> ids(cfg_.hidden, 1);
  write_raw(dir("int"), [&](auto& ts) {
    for (auto& t : ts)
      if (t.name == "model.norm.weight") t = {t.name, st::DType::kI32, t.shape, ids.data(), {}};
  });
  EXPECT_EQ(load_error(dir("int")),
            dir("int") + "/model.safetensors: tensor 'model.norm.weight': dtype I32 is not a float type");
}

TEST_F(HfIo, SaveRefusesANonEmptyDirectoryAndLeavesNoTemporary) {
  fs::create_directories(dir("full"));
  std::ofstream(dir("full") + "/keep.txt") << "x";
  try {
    save_hf_model(dir("full"), cfg_, layout_, units_, at::kFloat);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()), dir("full") + ": already exists and is not an empty directory");
  }
  EXPECT_TRUE(fs::exists(dir("full") + "/keep.txt"));
  // An empty directory is replaced; no temporary stays behind.
  fs::create_directories(dir("empty"));
  save_hf_model(dir("empty"), cfg_, layout_, units_, at::kFloat);
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(root_)) entries += e.path().filename().string()[0] == '.';
  EXPECT_EQ(entries, 0u);
  EXPECT_EQ(load_hf_units(dir("empty"), layout_).size(), units_.size());
}

// An export as xy-node export would write it, plus xy's logits on fixed ids: checked here with
// xy's reader, and on a machine with transformers by
//   XY_HF_EXPORT_DIR=build/hf_export build/bin/hf_io_test --gtest_filter=HfIo.ExportWithLogits
//   python3 scripts/make_hf_fixture.py --check-export build/hf_export --xy-logits build/hf_export/xy_logits.safetensors
// (XY_HF_EXPORT_DIR keeps the folder; without it, it is written to a temporary directory.)
TEST_F(HfIo, ExportWithLogits) {
  const char* keep = std::getenv("XY_HF_EXPORT_DIR");
  const std::string out = keep ? keep : dir("export");
  if (keep) fs::remove_all(out);
  const ModelLayout layout1 = build_layout(cfg_, 1, {"norm"});
  std::vector<at::Tensor> units;
  for (const auto& u : layout1.units) units.push_back(init_unit(u, 0.3, 21, at::kFloat));
  // Norm weights away from 1, so that a mix-up of the two norms would show.
  for (size_t i = 0; i < units.size(); ++i)
    for (const auto& p : layout1.units[i].params)
      if (p.is_norm) units[i].narrow(0, p.offset, p.numel).uniform_(0.5, 1.5);
  save_hf_model(out, cfg_, layout1, units, at::kFloat, /*max_shard_bytes=*/16384);

  const Llama model(cfg_, layout1);
  const at::Tensor ids = at::arange(0, 2 * 11, at::kLong).mul(7).remainder(cfg_.vocab_size).view({2, 11});
  at::Tensor logits;
  {
    at::NoGradGuard ng;
    logits = model.forward(load_hf_units(out, layout1), ids).contiguous();
  }
  st::write_file(out + "/xy_logits.safetensors",
                 {{"input_ids", st::DType::kI64, {2, 11}, ids.data_ptr<int64_t>(), {}},
                  {"logits", st::DType::kF32, {2, 11, cfg_.vocab_size}, logits.data_ptr<float>(), {}}});
  // The exported folder through the independent reference (its own config.json and safetensors
  // readers, transformers' forward written out): the logits xy wrote beside it must be its logits.
  const test::HfReference ref(out);
  ASSERT_EQ(ref.tensor_count(), 3 + 9 * static_cast<size_t>(cfg_.layers));
  const at::Tensor ref_logits = ref.forward(ids);
  const double err = test::max_abs_err(logits, ref_logits);
  const double max_logit = ref_logits.abs().max().item<double>();
  std::printf("export in %s (%zu files), xy logits beside it: max abs error %.3g against the "
              "reference forward of the exported folder (max |logit| %.3g)\n",
              out.c_str(), st::Reader::open(out).files().size(), err, max_logit);
  EXPECT_GT(max_logit, 0.1);  // not a degenerate all-zero model
  EXPECT_LE(err, 1e-4 * max_logit);
}

// The reference itself against transformers: on tests/fixtures/hf_tiny (saved by save_pretrained)
// it computes the logits that transformers computed.
TEST(HfReference, MatchesTransformersOnTheFixture) {
  const std::string dir = "tests/fixtures/hf_tiny";
  const test::HfReference ref(dir);
  const st::Reader fx = st::Reader::open(dir + "/fixture.safetensors");
  auto tensor = [&](const std::string& name, at::ScalarType type) {
    const st::TensorRef t = fx.get(name);
    at::Tensor out = at::empty(t.info->shape, type);
    if (static_cast<uint64_t>(out.nbytes()) != t.info->nbytes()) throw std::runtime_error(name + ": size");
    std::memcpy(out.data_ptr(), t.data, out.nbytes());
    return out;
  };
  const at::Tensor ids = tensor("input_ids", at::kLong), want = tensor("logits", at::kFloat);
  const at::Tensor got = ref.forward(ids);
  ASSERT_EQ(got.sizes(), want.sizes());
  const double err = test::max_abs_err(got, want);
  std::printf("reference forward vs transformers on %s: max abs error %.3g (max |logit| %.3g)\n",
              dir.c_str(), err, want.abs().max().item<double>());
  EXPECT_LE(err, 1e-4);
}

namespace {

// The three families' features on the tiny shape: Llama 3 (tied, llama3 RoPE), Qwen3 (tied,
// head_dim 12 != 32 / 4, q/k norms, yarn RoPE), Qwen2 (untied, q/k/v biases, dynamic RoPE).
ModelConfig family_config(const std::string& family) {
  ModelConfig m = test::tiny_config(1, 1).model;
  m.family = family;
  if (family == "llama") {
    m.tie_embeddings = true;
    m.rope_theta = 500000.0;
    m.rope_scaling = "llama3";
    m.rope_factor = 8.0;
    m.rope_low_freq_factor = 1.0;
    m.rope_high_freq_factor = 4.0;
    m.rope_original_max_len = 16;
  } else if (family == "qwen3") {
    m.tie_embeddings = true;
    m.head_dim = 12;
    m.qk_norm = true;
    m.rms_eps = 1e-6;
    m.rope_theta = 1e6;
    m.rope_scaling = "yarn";
    m.rope_factor = 4.0;
    m.rope_original_max_len = 16;
    m.rope_beta_fast = 16.0;
    m.rope_attention_factor = 1.25;
  } else {
    m.attention_bias = "qkv";
    m.rope_scaling = "dynamic";
    m.rope_factor = 2.0;
  }
  return m;
}

}  // namespace

// Export -> import per family: config.json carries every architectural field back, the tensors
// are bitwise the same, and a tied model writes no lm_head.weight.
TEST_F(HfIo, EveryFamilyRoundTrips) {
  for (const std::string family : {"llama", "qwen3", "qwen2"}) {
    const ModelConfig m = family_config(family);
    const ModelLayout lo = build_layout(m, 2, {"norm"});
    std::vector<at::Tensor> units;
    for (const auto& u : lo.units) units.push_back(at::randn({u.padded_numel}));
    const std::string out = dir("out-" + family);
    save_hf_model(out, m, lo, units, at::kFloat);
    const HfModelConfig back = read_hf_config(out);
    const ModelConfig& b = back.model;
    EXPECT_EQ(b.family, m.family);
    EXPECT_EQ(head_dim_of(b), head_dim_of(m));
    EXPECT_EQ(b.tie_embeddings, m.tie_embeddings);
    EXPECT_EQ(b.attention_bias, m.attention_bias);
    EXPECT_EQ(b.qk_norm, m.qk_norm);
    EXPECT_EQ(b.rope_scaling, m.rope_scaling);
    EXPECT_EQ(b.rope_factor, m.rope_factor);
    EXPECT_EQ(b.rope_theta, m.rope_theta);
    EXPECT_EQ(b.rms_eps, m.rms_eps);
    const int64_t original = m.rope_original_max_len > 0 ? m.rope_original_max_len : m.max_seq_len;
    EXPECT_EQ(b.rope_original_max_len, original);
    EXPECT_EQ(b.rope_beta_fast, m.rope_beta_fast);
    EXPECT_EQ(b.rope_attention_factor, m.rope_attention_factor);
    // The same RoPE tables from the written config.json.
    EXPECT_TRUE(at::equal(rope_tables(b, 24).first, rope_tables(m, 24).first)) << family;
    const std::vector<std::string> names = st::Reader::open(out).names();
    const bool has_head = std::find(names.begin(), names.end(), "lm_head.weight") != names.end();
    EXPECT_EQ(has_head, !m.tie_embeddings) << family;
    const auto loaded = load_hf_units(out, build_layout(b, 2, {"norm"}), at::kFloat);
    ASSERT_EQ(loaded.size(), units.size());
    for (size_t i = 0; i < units.size(); ++i)
      EXPECT_TRUE(at::equal(loaded[i].narrow(0, 0, lo.units[i].numel), units[i].narrow(0, 0, lo.units[i].numel)))
          << family << " unit " << lo.units[i].name;
    std::printf("%s: %zu tensors written (%s), config.json read back the same, units bitwise equal\n",
                family.c_str(), names.size(), has_head ? "with lm_head.weight" : "no lm_head.weight");
  }
}

// A tied model's folder with an lm_head.weight: ignored when it equals the embedding, refused
// (naming it) when it does not.
TEST_F(HfIo, TiedModelAcceptsOnlyAnEqualLmHead) {
  ModelConfig m = family_config("llama");
  const ModelLayout tied = build_layout(m, 1, {});
  m.tie_embeddings = false;
  const ModelLayout untied = build_layout(m, 1, {});
  std::vector<at::Tensor> units;
  for (const auto& u : untied.units) units.push_back(at::randn({u.padded_numel}));
  const ParamSpec& e = untied.units.front().params.front();
  const ParamSpec& h = untied.units.back().params.back();
  ASSERT_EQ(h.name, "lm_head.weight");
  units.back().narrow(0, h.offset, h.numel).copy_(units.front().narrow(0, e.offset, e.numel));
  save_hf_model(dir("same"), m, untied, units, at::kFloat);
  const auto loaded = load_hf_units(dir("same"), tied, at::kFloat);
  EXPECT_TRUE(at::equal(loaded.front(), units.front()));
  units.back().narrow(0, h.offset, 1).add_(1.0);
  save_hf_model(dir("differs"), m, untied, units, at::kFloat);
  std::string err;
  try {
    load_hf_units(dir("differs"), tied, at::kFloat);
  } catch (const std::exception& ex) {
    err = ex.what();
  }
  std::printf("error: %s\n", err.c_str());
  EXPECT_NE(err.find("tensor 'lm_head.weight' differs from 'model.embed_tokens.weight'"), std::string::npos) << err;
}
