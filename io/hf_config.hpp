// Hugging Face `config.json` of a LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM <->
// xy's ModelConfig.
//
// Read: the shape keys are required (hidden_size, intermediate_size, num_hidden_layers,
// num_attention_heads, vocab_size); num_key_value_heads (default: num_attention_heads), head_dim
// (hidden / heads; Qwen3: 128), rms_norm_eps (1e-6, transformers' default), rope_theta (10000),
// max_position_embeddings (2048; Qwen: 32768), initializer_range (0.02), tie_word_embeddings,
// attention_bias (Llama, Qwen3: q/k/v/o biases; Qwen2 always has q/k/v biases) are optional.
// RoPE in both transformers formats: 4.x's rope_theta + rope_scaling ({"type" or "rope_type",
// "factor", ...}) and 5.x's rope_parameters ({"rope_type", "rope_theta", ...}); the kinds
// default, linear, dynamic, llama3 and yarn. What xy does not compute is refused rather than
// ignored: another model_type (mixture-of-experts ones named), a sliding window, mlp_bias, a
// hidden_act other than "silu", another rope type, a partial rotary factor. Every error is an
// HfConfigError naming the file and the key, e.g.
//   ckpt/config.json: num_attention_heads: expected a positive integer, got "8"
// Write: every key transformers (4.4x and 5.x) needs to rebuild the model, per family.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "io/config.hpp"

namespace xy {

class HfConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct HfModelConfig {
  ModelConfig model;        // preset "custom", every shape field set
  std::string torch_dtype;  // as written ("float32", "bfloat16", ...), empty when absent
};

// Reads `path` (a config.json, or a directory holding one).
HfModelConfig read_hf_config(const std::string& path);

// Parses config.json text; `source` names it in messages.
HfModelConfig parse_hf_config(const std::string& json_text, const std::string& source);

// The special-token ids an export writes (config.json, generation_config.json): the run's
// tokenizer's; -1 = none (written as null). The default is Llama-2's and xy's trained
// SentencePiece tokenizers' (unk/bos/eos = 0/1/2).
struct HfTokenIds {
  int32_t bos = 1, eos = 2;
};

// The config.json text (pretty-printed) for `m`, with torch_dtype "float32" or "bfloat16".
std::string hf_config_json(const ModelConfig& m, const std::string& torch_dtype,
                           const HfTokenIds& ids = {});

// A minimal generation_config.json with the same bos/eos ids (null where -1).
std::string hf_generation_config_json(const HfTokenIds& ids);

// Writes hf_config_json() to `path`. Throws HfConfigError naming the file on an I/O error.
void write_hf_config(const std::string& path, const ModelConfig& m, const std::string& torch_dtype,
                     const HfTokenIds& ids = {});

// The tokenizer a Hugging Face folder holds: `dir`/tokenizer.json, else `dir`/tokenizer.model
// (a SentencePiece model), else "" (also for an empty `dir`). model.init_from's is the run's
// tokenizer when data.tokenizer is empty (load_config applies it; docs/CONFIG.md).
std::string hf_folder_tokenizer(const std::string& dir);

// With m.init_from set: takes the model's shape from that folder's config.json (every field of
// read_hf_config's model but max_seq_len, the larger of both, init_std and init_seed). Throws
// HfConfigError naming the file on a bad or unsupported config.json. load_config() applies it, so
// that every command sees the shape the model will have.
void apply_init_from_shape(ModelConfig& m);

}  // namespace xy
