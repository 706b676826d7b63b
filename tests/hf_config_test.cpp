// config.json of LlamaForCausalLM: Llama-2-7b-hf's real file, write -> read round trip, and the
// exact error of each refused or malformed key.
#include <gtest/gtest.h>

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

TEST(HfConfig, RefusesTiedEmbeddings) {
  EXPECT_EQ(error_of(with("tie_word_embeddings", "\"tie_word_embeddings\": true,")),
            "ckpt/config.json: tie_word_embeddings: is true, but xy's LM head is a separate matrix "
            "(untied); untie the checkpoint first (save lm_head.weight as a copy of "
            "model.embed_tokens.weight and set it to false)");
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
            "ckpt/config.json: model_type: is \"mistral\"; xy reads only \"llama\" models");
  EXPECT_EQ(error_of(with("rope_scaling", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0},")),
            "ckpt/config.json: rope_scaling: is {\"factor\":2.0,\"type\":\"linear\"}; xy implements "
            "only plain RoPE (null or rope_type \"default\")");
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
