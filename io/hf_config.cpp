// config.json of LlamaForCausalLM <-> ModelConfig (see hf_config.hpp).
#include "io/atomic_file.hpp"
#include "io/hf_config.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace xy {

namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& src, const std::string& key, const std::string& what) {
  throw HfConfigError(src + ": " + (key.empty() ? "" : key + ": ") + what);
}

int64_t get_int(const json& j, const std::string& src, const char* key, bool required,
                int64_t dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) fail(src, key, "missing (a positive integer is required)");
    return dflt;
  }
  if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 ||
      it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    fail(src, key, "expected a positive integer, got " + it->dump());
  return it->get<int64_t>();
}

double get_pos_double(const json& j, const std::string& src, const char* key, double dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number() || !(it->get<double>() > 0))
    fail(src, key, "expected a positive number, got " + it->dump());
  return it->get<double>();
}

bool get_bool(const json& j, const std::string& src, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) fail(src, key, "expected true or false, got " + it->dump());
  return it->get<bool>();
}

}  // namespace

HfModelConfig parse_hf_config(const std::string& text, const std::string& src) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(src, "", "not valid JSON (parse error at byte " + std::to_string(e.byte) + ")");
  } catch (const json::exception& e) {  // e.g. out_of_range: a number like 1e400
    fail(src, "", std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail(src, "", "not a JSON object");

  if (auto mt = j.find("model_type"); mt != j.end()) {
    if (!mt->is_string() || mt->get<std::string>() != "llama")
      fail(src, "model_type", "is " + mt->dump() + "; xy reads only \"llama\" models");
  }
  if (auto ar = j.find("architectures"); ar != j.end() && !ar->is_null()) {
    bool ok = ar->is_array();
    if (ok) {
      ok = false;
      for (const auto& a : *ar) ok = ok || (a.is_string() && a.get<std::string>() == "LlamaForCausalLM");
    }
    if (!ok) fail(src, "architectures", "is " + ar->dump() + "; xy reads LlamaForCausalLM");
  }

  HfModelConfig out;
  ModelConfig& m = out.model;
  m.preset = "custom";
  m.hidden = get_int(j, src, "hidden_size", true, 0);
  m.intermediate = get_int(j, src, "intermediate_size", true, 0);
  m.layers = get_int(j, src, "num_hidden_layers", true, 0);
  m.heads = get_int(j, src, "num_attention_heads", true, 0);
  m.vocab_size = get_int(j, src, "vocab_size", true, 0);
  m.kv_heads = get_int(j, src, "num_key_value_heads", false, m.heads);
  m.max_seq_len = get_int(j, src, "max_position_embeddings", false, 2048);
  m.rms_eps = get_pos_double(j, src, "rms_norm_eps", 1e-6);
  m.rope_theta = get_pos_double(j, src, "rope_theta", 10000.0);
  m.init_std = get_pos_double(j, src, "initializer_range", 0.02);

  if (m.hidden % m.heads != 0)
    fail(src, "num_attention_heads", std::to_string(m.heads) + " does not divide hidden_size " +
                                         std::to_string(m.hidden));
  if (m.heads % m.kv_heads != 0)
    fail(src, "num_key_value_heads", std::to_string(m.kv_heads) +
                                         " does not divide num_attention_heads " +
                                         std::to_string(m.heads));
  if ((m.hidden / m.heads) % 2 != 0)
    fail(src, "num_attention_heads", "head dimension " + std::to_string(m.hidden / m.heads) +
                                         " is odd; rotary embeddings need an even one");
  if (auto hd = j.find("head_dim"); hd != j.end() && !hd->is_null()) {
    if (!hd->is_number_unsigned() || hd->get<int64_t>() != m.hidden / m.heads)
      fail(src, "head_dim", "is " + hd->dump() + "; xy needs hidden_size / num_attention_heads = " +
                                std::to_string(m.hidden / m.heads));
  }
  if (get_bool(j, src, "tie_word_embeddings", false))
    fail(src, "tie_word_embeddings",
         "is true, but xy's LM head is a separate matrix (untied); untie the checkpoint first "
         "(save lm_head.weight as a copy of model.embed_tokens.weight and set it to false)");
  if (get_bool(j, src, "attention_bias", false))
    fail(src, "attention_bias", "is true; xy's attention projections have no bias");
  if (get_bool(j, src, "mlp_bias", false))
    fail(src, "mlp_bias", "is true; xy's MLP projections have no bias");
  // Plain RoPE only. Newer transformers write {"rope_type": "default", "rope_theta": ...} under
  // rope_parameters (and may mirror it in rope_scaling): accepted, with its theta.
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    auto rs = j.find(key);
    if (rs == j.end() || rs->is_null()) continue;
    std::string type;
    if (rs->is_object()) {
      auto t = rs->find("rope_type");
      if (t == rs->end()) t = rs->find("type");
      if (t != rs->end() && t->is_string()) type = t->get<std::string>();
    }
    if (type != "default")
      fail(src, key, "is " + rs->dump() + "; xy implements only plain RoPE (null or rope_type \"default\")");
    if (auto th = rs->find("rope_theta"); th != rs->end())
      m.rope_theta = get_pos_double(*rs, src + ": " + key, "rope_theta", m.rope_theta);
  }
  if (auto act = j.find("hidden_act"); act != j.end() && !act->is_null()) {
    if (!act->is_string() || act->get<std::string>() != "silu")
      fail(src, "hidden_act", "is " + act->dump() + "; xy's MLP is SwiGLU (\"silu\")");
  }
  if (auto td = j.find("torch_dtype"); td != j.end() && !td->is_null()) {
    if (!td->is_string()) fail(src, "torch_dtype", "expected a string, got " + td->dump());
    out.torch_dtype = td->get<std::string>();
  }
  return out;
}

HfModelConfig read_hf_config(const std::string& path) {
  std::string file = path;
  struct stat s;
  if (::stat(path.c_str(), &s) == 0 && S_ISDIR(s.st_mode)) file = path + "/config.json";
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(file, "", std::string("cannot open: ") + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_hf_config(ss.str(), file);
}

std::string hf_config_json(const ModelConfig& m, const std::string& torch_dtype) {
  const int64_t kv = m.kv_heads > 0 ? m.kv_heads : m.heads;
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = m.hidden;
  j["intermediate_size"] = m.intermediate;
  j["num_hidden_layers"] = m.layers;
  j["num_attention_heads"] = m.heads;
  j["num_key_value_heads"] = kv;
  j["head_dim"] = m.hidden / m.heads;
  j["vocab_size"] = m.vocab_size;
  j["max_position_embeddings"] = m.max_seq_len;
  j["rms_norm_eps"] = m.rms_eps;
  j["rope_theta"] = m.rope_theta;
  j["rope_scaling"] = nullptr;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", m.rope_theta}};  // transformers >= 5
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["initializer_range"] = m.init_std;
  j["pretraining_tp"] = 1;
  j["tie_word_embeddings"] = false;
  j["bos_token_id"] = 1;  // Llama-2's and xy's trained tokenizers: unk/bos/eos = 0/1/2
  j["eos_token_id"] = 2;
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

void write_hf_config(const std::string& path, const ModelConfig& m, const std::string& torch_dtype) {
  try {
    write_file_atomic(path, hf_config_json(m, torch_dtype));
  } catch (const std::exception& e) {
    fail(path, "", e.what());
  }
}

void apply_init_from_shape(ModelConfig& m) {
  if (m.init_from.empty()) return;
  const HfModelConfig hf = read_hf_config(m.init_from);
  const std::string from = m.init_from;
  const int64_t max_seq = m.max_seq_len;
  const double init_std = m.init_std;
  const uint64_t seed = m.init_seed;
  m = hf.model;
  m.init_from = from;
  m.max_seq_len = std::max(max_seq, hf.model.max_seq_len);
  m.init_std = init_std;
  m.init_seed = seed;
}

}  // namespace xy
