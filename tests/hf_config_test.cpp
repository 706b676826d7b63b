// config.json of LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM: real published files
// (Llama-2-7b-hf, Llama-3.2-3B in both RoPE formats, Qwen3-1.7B), write -> read round trips, and
// the exact error of each refused or malformed key; the special-token ids an export writes, and
// model.init_from's tokenizer as the run's.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/hf_config.hpp"

using namespace xy;

namespace {

// meta-llama/Llama-2-7b-hf's config.json as published.
const char* kLlama2_7b = R"({
  "_name_or_path": "meta-llama/Llama-2-7b-hf",
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

std::string error_of(const std::string& text) {
  try {
    parse_hf_config(text, "ckpt/config.json");
  } catch (const HfConfigError& e) {
    return e.what();
  }
  return "";
}

// kLlama2_7b with `key`'s line replaced by `replacement` (or removed when empty).
std::string with(const std::string& key, const std::string& replacement) {
  std::string s = kLlama2_7b;
  const auto at = s.find("\"" + key + "\"");
  const auto eol = s.find('\n', at);
  s.replace(at, eol - at, replacement.empty() ? std::string() : replacement);
  if (replacement.empty()) s.insert(at, "\"_removed\": 0,");
  return s;
}

}  // namespace

TEST(HfConfig, ReadsLlama2_7b) {
  HfModelConfig c = parse_hf_config(kLlama2_7b, "config.json");
  EXPECT_EQ(c.model.preset, "custom");
  EXPECT_EQ(c.model.hidden, 4096);
  EXPECT_EQ(c.model.intermediate, 11008);
  EXPECT_EQ(c.model.layers, 32);
  EXPECT_EQ(c.model.heads, 32);
  EXPECT_EQ(c.model.kv_heads, 32);
  EXPECT_EQ(c.model.vocab_size, 32000);
  EXPECT_EQ(c.model.max_seq_len, 4096);
  EXPECT_EQ(c.model.rms_eps, 1e-5);
  EXPECT_EQ(c.model.rope_theta, 10000.0);
  EXPECT_EQ(c.torch_dtype, "float16");
}

TEST(HfConfig, WriteReadRoundTrip) {
  ModelConfig m;
  m.preset = "custom";
  m.vocab_size = 1003;
  m.hidden = 64;
  m.intermediate = 176;
  m.layers = 3;
  m.heads = 8;
  m.kv_heads = 2;
  m.rms_eps = 1e-5;
  m.rope_theta = 500000.0;
  m.max_seq_len = 1234;
  m.init_std = 0.02;
  const std::string text = hf_config_json(m, "bfloat16");
  HfModelConfig r = parse_hf_config(text, "<written>");
  EXPECT_EQ(r.model.vocab_size, m.vocab_size);
  EXPECT_EQ(r.model.hidden, m.hidden);
  EXPECT_EQ(r.model.intermediate, m.intermediate);
  EXPECT_EQ(r.model.layers, m.layers);
  EXPECT_EQ(r.model.heads, m.heads);
  EXPECT_EQ(r.model.kv_heads, m.kv_heads);
  EXPECT_EQ(r.model.rms_eps, m.rms_eps);
  EXPECT_EQ(r.model.rope_theta, m.rope_theta);
  EXPECT_EQ(r.model.max_seq_len, m.max_seq_len);
  EXPECT_EQ(r.torch_dtype, "bfloat16");
  EXPECT_NE(text.find("\"tie_word_embeddings\": false"), std::string::npos);
  EXPECT_NE(text.find("\"rms_norm_eps\": 1e-05"), std::string::npos);
}

TEST(HfConfig, RopeParametersOfNewerTransformers) {
  HfModelConfig c = parse_hf_config(with("rope_scaling",
      "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 500000.0},"), "c.json");
  EXPECT_EQ(c.model.rope_theta, 500000.0);
}

TEST(HfConfig, DefaultsOfOptionalKeys) {
  HfModelConfig c = parse_hf_config(
      R"({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "vocab_size": 100})", "c.json");
  EXPECT_EQ(c.model.kv_heads, 4);
  EXPECT_EQ(c.model.rms_eps, 1e-6);  // transformers' LlamaConfig default
  EXPECT_EQ(c.model.max_seq_len, 2048);
  EXPECT_EQ(c.torch_dtype, "");
}

// meta-llama/Llama-3.2-3B's config.json as published (transformers 4.x RoPE keys).
const char* kLlama32_3b = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 24, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256
})";

// The same model as transformers 5 writes it (rope_parameters carries theta and the scaling).
const char* kLlama32_3b_v5 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "head_dim": 128,
  "hidden_act": "silu", "hidden_size": 3072, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 24, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "dtype": "bfloat16",
  "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                      "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192},
  "tie_word_embeddings": true, "vocab_size": 128256
})";

// Qwen/Qwen3-1.7B's config.json as published.
const char* kQwen3_1_7b = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
})";

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  if (at == std::string::npos) throw std::logic_error("test text lacks " + from);
  return s.replace(at, from.size(), to);
}

void expect_llama32_3b(const ModelConfig& m) {
  EXPECT_EQ(m.family, "llama");
  EXPECT_EQ(m.hidden, 3072);
  EXPECT_EQ(m.heads, 24);
  EXPECT_EQ(m.kv_heads, 8);
  EXPECT_EQ(head_dim_of(m), 128);
  EXPECT_EQ(m.vocab_size, 128256);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.attention_bias, "none");
  EXPECT_FALSE(m.qk_norm);
  EXPECT_EQ(m.rope_theta, 500000.0);
  EXPECT_EQ(m.rope_scaling, "llama3");
  EXPECT_EQ(m.rope_factor, 32.0);
  EXPECT_EQ(m.rope_low_freq_factor, 1.0);
  EXPECT_EQ(m.rope_high_freq_factor, 4.0);
  EXPECT_EQ(m.rope_original_max_len, 8192);
  EXPECT_EQ(m.max_seq_len, 131072);
}

TEST(HfConfig, ReadsLlama3InBothRopeFormats) {
  expect_llama32_3b(parse_hf_config(kLlama32_3b, "c.json").model);
  const HfModelConfig v5 = parse_hf_config(kLlama32_3b_v5, "c.json");
  expect_llama32_3b(v5.model);
  EXPECT_EQ(v5.torch_dtype, "bfloat16");
  // 4.x's older spelling "type" of the rope type.
  const ModelConfig lin = parse_hf_config(
      with("rope_scaling", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0},"), "c.json").model;
  EXPECT_EQ(lin.rope_scaling, "linear");
  EXPECT_EQ(lin.rope_factor, 2.0);
}

TEST(HfConfig, ReadsQwen3AndQwen2) {
  const ModelConfig q3 = parse_hf_config(kQwen3_1_7b, "c.json").model;
  EXPECT_EQ(q3.family, "qwen3");
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_TRUE(q3.tie_embeddings);
  EXPECT_EQ(head_dim_of(q3), 128);
  EXPECT_EQ(q3.rms_eps, 1e-6);
  EXPECT_EQ(q3.rope_theta, 1e6);
  EXPECT_EQ(q3.rope_scaling, "none");
  EXPECT_EQ(q3.attention_bias, "none");
  // Qwen3 without head_dim: its config class's 128, not hidden / heads.
  EXPECT_EQ(head_dim_of(parse_hf_config(replaced(kQwen3_1_7b, "\"head_dim\": 128,", ""), "c.json").model), 128);
  // attention_bias true: q, k, v and o biases (transformers' Llama and Qwen3).
  EXPECT_EQ(parse_hf_config(replaced(kQwen3_1_7b, "\"attention_bias\": false", "\"attention_bias\": true"),
                            "c.json").model.attention_bias, "qkvo");
  std::string q2 = replaced(replaced(kQwen3_1_7b, "Qwen3ForCausalLM", "Qwen2ForCausalLM"),
                            "\"model_type\": \"qwen3\"", "\"model_type\": \"qwen2\"");
  q2 = replaced(q2, "\"head_dim\": 128,", "");
  const ModelConfig m2 = parse_hf_config(q2, "c.json").model;
  EXPECT_EQ(m2.family, "qwen2");
  EXPECT_EQ(m2.attention_bias, "qkv");  // always, whatever attention_bias says
  EXPECT_FALSE(m2.qk_norm);
  EXPECT_EQ(head_dim_of(m2), 128);
}

TEST(HfConfig, RefusalsNameTheReason) {
  EXPECT_EQ(error_of(replaced(kQwen3_1_7b, "\"use_sliding_window\": false", "\"use_sliding_window\": true")),
            "ckpt/config.json: use_sliding_window: is true; xy's attention is full causal attention "
            "(no sliding window)");
  EXPECT_EQ(error_of(replaced(kLlama32_3b, "\"mlp_bias\": false", "\"mlp_bias\": true")),
            "ckpt/config.json: mlp_bias: is true; xy's MLP projections have no bias");
  EXPECT_EQ(error_of(replaced(kQwen3_1_7b, "\"model_type\": \"qwen3\"", "\"model_type\": \"qwen3_moe\"")),
            "ckpt/config.json: model_type: is \"qwen3_moe\"; xy reads \"llama\", \"qwen2\" and \"qwen3\" "
            "models (mixture-of-experts models are not supported)");
  EXPECT_EQ(error_of(replaced(kQwen3_1_7b, "\"model_type\": \"qwen3\"", "\"model_type\": \"qwen2\"")),
            "ckpt/config.json: architectures: is [\"Qwen3ForCausalLM\"]; for model_type \"qwen2\" xy "
            "reads Qwen2ForCausalLM");
  EXPECT_EQ(error_of(replaced(kLlama32_3b, "\"rope_type\": \"llama3\"", "\"rope_type\": \"longrope\"")),
            "ckpt/config.json: rope_scaling: rope_type \"longrope\" is not one xy computes (default, "
            "linear, dynamic, llama3, yarn)");
  EXPECT_EQ(error_of(replaced(kLlama32_3b_v5, "\"rope_type\": \"llama3\"", "\"rope_type\": \"su\"")),
            "ckpt/config.json: rope_parameters: rope_type \"su\" is not one xy computes (default, "
            "linear, dynamic, llama3, yarn)");
  EXPECT_EQ(error_of(replaced(kLlama32_3b, "\"low_freq_factor\": 1.0,", "")),
            "ckpt/config.json: rope_scaling: low_freq_factor: missing (rope_type \"llama3\" needs it)");
  EXPECT_EQ(error_of(replaced(kLlama32_3b, "\"rope_type\": \"llama3\"",
                              "\"rope_type\": \"yarn\", \"mscale\": 0.707")),
            "ckpt/config.json: rope_scaling: mscale: is 0.707; xy's yarn takes only factor, beta_fast, "
            "beta_slow, attention_factor and original_max_position_embeddings");
  EXPECT_EQ(error_of(replaced(kLlama32_3b, "\"head_dim\": 128", "\"head_dim\": 127")),
            "ckpt/config.json: head_dim: head dimension 127 is odd; rotary embeddings need an even one");
  EXPECT_EQ(error_of(replaced(kLlama32_3b_v5, "\"rope_theta\": 500000.0,",
                              "\"rope_theta\": 500000.0, \"partial_rotary_factor\": 0.5,")),
            "ckpt/config.json: rope_parameters: partial_rotary_factor: is 0.5; xy rotates the whole "
            "head (1.0)");
  EXPECT_EQ(error_of(replaced(kQwen3_1_7b, "\"model_type\": \"qwen3\",",
                              "\"model_type\": \"qwen3\", \"layer_types\": [\"sliding_attention\"],")),
            "ckpt/config.json: layer_types: is [\"sliding_attention\"]; xy computes only "
            "\"full_attention\" layers (no sliding window)");
}

// What xy writes for each family is what it reads back (the exact keys transformers reads).
TEST(HfConfig, WritesEachFamily) {
  ModelConfig m = parse_hf_config(kLlama32_3b, "c.json").model;
  std::string text = hf_config_json(m, "bfloat16");
  expect_llama32_3b(parse_hf_config(text, "out.json").model);
  EXPECT_NE(text.find("\"rope_type\": \"llama3\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"tie_word_embeddings\": true"), std::string::npos);
  EXPECT_EQ(text.find("rope_parameters"), std::string::npos);  // 4.x keys; transformers 5 converts
  const ModelConfig q3 = parse_hf_config(kQwen3_1_7b, "c.json").model;
  text = hf_config_json(q3, "float32");
  EXPECT_NE(text.find("\"Qwen3ForCausalLM\""), std::string::npos);
  EXPECT_NE(text.find("\"use_sliding_window\": false"), std::string::npos);
  const ModelConfig q3b = parse_hf_config(text, "out.json").model;
  EXPECT_EQ(q3b.family, "qwen3");
  EXPECT_TRUE(q3b.qk_norm);
  EXPECT_EQ(head_dim_of(q3b), 128);
}

TEST(HfConfig, ErrorsNameTheFileAndKey) {
  EXPECT_EQ(error_of(with("hidden_size", "")),
            "ckpt/config.json: hidden_size: missing (a positive integer is required)");
  EXPECT_EQ(error_of(with("num_attention_heads", "\"num_attention_heads\": \"32\",")),
            "ckpt/config.json: num_attention_heads: expected a positive integer, got \"32\"");
  EXPECT_EQ(error_of(with("num_key_value_heads", "\"num_key_value_heads\": 5,")),
            "ckpt/config.json: num_key_value_heads: 5 does not divide num_attention_heads 32");
  EXPECT_EQ(error_of(with("rms_norm_eps", "\"rms_norm_eps\": -1,")),
            "ckpt/config.json: rms_norm_eps: expected a positive number, got -1");
  EXPECT_EQ(error_of(with("model_type", "\"model_type\": \"mistral\",")),
            "ckpt/config.json: model_type: is \"mistral\"; xy reads \"llama\", \"qwen2\" and \"qwen3\" models");
  EXPECT_EQ(error_of(with("rope_scaling", "\"rope_scaling\": {\"type\": \"linear\"},")),
            "ckpt/config.json: rope_scaling: factor: missing (rope_type \"linear\" needs it)");
  EXPECT_EQ(error_of(with("rope_scaling", "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": -5},")),
            "ckpt/config.json: rope_parameters: rope_theta: expected a positive number, got -5");
  EXPECT_EQ(error_of(with("hidden_act", "\"hidden_act\": \"gelu\",")),
            "ckpt/config.json: hidden_act: is \"gelu\"; xy's MLP is SwiGLU (\"silu\")");
  EXPECT_EQ(error_of("[1]"), "ckpt/config.json: not a JSON object");
  EXPECT_EQ(error_of("{\"hidden_size\": "), "ckpt/config.json: not valid JSON (parse error at byte 17)");
  try {
    read_hf_config("/nonexistent-xy/config.json");
    FAIL() << "no error";
  } catch (const HfConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent-xy/config.json: cannot open: No such file or directory");
  }
}

// config.json and generation_config.json carry the given ids; -1 is null (Qwen3 has no BOS); the
// default stays Llama-2's 1/2.
TEST(HfConfig, SpecialTokenIds) {
  const ModelConfig m = parse_hf_config(kLlama32_3b, "c.json").model;
  auto ids_of = [](const std::string& text) {
    const nlohmann::json j = nlohmann::json::parse(text);
    return j.at("bos_token_id").dump() + "/" + j.at("eos_token_id").dump();
  };
  EXPECT_EQ(ids_of(hf_config_json(m, "bfloat16")), "1/2");
  EXPECT_EQ(ids_of(hf_config_json(m, "bfloat16", {128000, 128001})), "128000/128001");
  EXPECT_EQ(ids_of(hf_config_json(m, "bfloat16", {-1, 151643})), "null/151643");
  EXPECT_EQ(ids_of(hf_config_json(m, "bfloat16", {-1, -1})), "null/null");
  EXPECT_EQ(ids_of(hf_generation_config_json({-1, 151643})), "null/151643");
  EXPECT_EQ(ids_of(hf_generation_config_json({128000, 128001})), "128000/128001");
  // What xy writes still reads back as the same model.
  expect_llama32_3b(parse_hf_config(hf_config_json(m, "bfloat16", {-1, 151643}), "out.json").model);
}

// A folder's tokenizer: tokenizer.json, else tokenizer.model, else none. With model.init_from and
// data.tokenizer empty it is the run's tokenizer (load_config); data.tokenizer, when given, wins;
// a folder without one leaves data.tokenizer empty (a tokenizer is trained, as before).
TEST(HfConfig, InitFromTokenizerIsTheRunsTokenizer) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("xy_hf_tok_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file("tests/fixtures/hf_llama3_tiny/config.json", dir / "config.json");
  const std::string toml = "[model]\npreset = \"custom\"\ninit_from = \"" + dir.string() +
                           "\"\n[data]\ntokenizer_vocab = 300\n";
  EXPECT_EQ(hf_folder_tokenizer(dir.string()), "");
  EXPECT_EQ(hf_folder_tokenizer(""), "");
  EXPECT_EQ(parse_config(toml).data.tokenizer, "");
  std::ofstream(dir / "tokenizer.model") << "x";
  EXPECT_EQ(hf_folder_tokenizer(dir.string()), (dir / "tokenizer.model").string());
  EXPECT_EQ(hf_folder_tokenizer(dir.string() + "/"), (dir / "tokenizer.model").string());
  EXPECT_EQ(parse_config(toml).data.tokenizer, (dir / "tokenizer.model").string());
  std::ofstream(dir / "tokenizer.json") << "{}";
  EXPECT_EQ(hf_folder_tokenizer(dir.string()), (dir / "tokenizer.json").string());
  const Config c = parse_config(toml);
  EXPECT_EQ(c.data.tokenizer, (dir / "tokenizer.json").string());
  EXPECT_EQ(c.model.vocab_size, 611);  // the shape still from config.json
  EXPECT_EQ(parse_config(toml + "tokenizer = \"other/tokenizer.json\"\n").data.tokenizer, "other/tokenizer.json");
  // A directory named tokenizer.json is not a tokenizer file.
  fs::remove(dir / "tokenizer.json");
  fs::create_directory(dir / "tokenizer.json");
  EXPECT_EQ(hf_folder_tokenizer(dir.string()), (dir / "tokenizer.model").string());
  fs::remove_all(dir);
}
