// config.json of LlamaForCausalLM <-> ModelConfig (see hf_config.hpp).
#include "io/atomic_file.hpp"
#include "io/hf_config.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
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

namespace {

// The Hugging Face classes xy computes, by model_type.
struct Family {
  const char* model_type;
  const char* architecture;
  int64_t max_position_default;  // the config class's default max_position_embeddings
  int64_t head_dim_default;      // 0 = hidden / heads
};
const Family kFamilies[] = {
    {"llama", "LlamaForCausalLM", 2048, 0},
    {"qwen2", "Qwen2ForCausalLM", 32768, 0},
    {"qwen3", "Qwen3ForCausalLM", 32768, 128},
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// RoPE: transformers 4.x writes rope_theta and rope_scaling ({"type" or "rope_type", "factor",
// ...}; null = plain); 5.x writes rope_parameters ({"rope_type", "rope_theta", ...}). Either is
// read; rope_parameters wins where both are given.
void read_rope(const json& j, const std::string& src, ModelConfig& m, int64_t max_pos) {
  const char* key = nullptr;
  for (const char* k : {"rope_parameters", "rope_scaling"}) {
    auto it = j.find(k);
    if (it != j.end() && !it->is_null()) {
      key = k;
      break;
    }
  }
  if (!key) return;
  const json& rs = j.at(key);
  const std::string where = src + ": " + key;
  if (!rs.is_object()) fail(src, key, "expected an object or null, got " + rs.dump());
  if (auto th = rs.find("rope_theta"); th != rs.end())
    m.rope_theta = get_pos_double(rs, where, "rope_theta", m.rope_theta);
  std::string type = "default";
  auto t = rs.find("rope_type");
  if (t == rs.end()) t = rs.find("type");
  if (t != rs.end()) {
    if (!t->is_string()) fail(where, "rope_type", "expected a string, got " + t->dump());
    type = t->get<std::string>();
  }
  if (auto p = rs.find("partial_rotary_factor"); p != rs.end() && !p->is_null() &&
                                                 !(p->is_number() && p->get<double>() == 1.0))
    fail(where, "partial_rotary_factor", "is " + p->dump() + "; xy rotates the whole head (1.0)");
  if (type == "default") return;
  if (type != "linear" && type != "dynamic" && type != "llama3" && type != "yarn")
    fail(src, key, "rope_type \"" + type + "\" is not one xy computes (default, linear, dynamic, "
                   "llama3, yarn)");
  m.rope_scaling = type;
  auto factor = rs.find("factor");
  if (factor == rs.end() || factor->is_null())
    fail(where, "factor", "missing (rope_type \"" + type + "\" needs it)");
  m.rope_factor = get_pos_double(rs, where, "factor", 1.0);
  // The length the scaling is relative to: transformers' dynamic NTK uses
  // max_position_embeddings; llama3 needs original_max_position_embeddings; yarn takes it, else
  // max_position_embeddings.
  m.rope_original_max_len = max_pos;
  if (type == "llama3" || type == "yarn") {
    auto o = rs.find("original_max_position_embeddings");
    if (type == "llama3" && (o == rs.end() || o->is_null()))
      fail(where, "original_max_position_embeddings", "missing (rope_type \"llama3\" needs it)");
    m.rope_original_max_len = get_int(rs, where, "original_max_position_embeddings", false, max_pos);
  }
  if (type == "llama3") {
    for (const char* k : {"low_freq_factor", "high_freq_factor"})
      if (rs.find(k) == rs.end() || rs.at(k).is_null())
        fail(where, k, "missing (rope_type \"llama3\" needs it)");
    m.rope_low_freq_factor = get_pos_double(rs, where, "low_freq_factor", 1.0);
    m.rope_high_freq_factor = get_pos_double(rs, where, "high_freq_factor", 4.0);
    if (!(m.rope_high_freq_factor > m.rope_low_freq_factor))
      fail(where, "high_freq_factor", "must exceed low_freq_factor");
  }
  if (type == "yarn") {
    m.rope_beta_fast = get_pos_double(rs, where, "beta_fast", 32.0);
    m.rope_beta_slow = get_pos_double(rs, where, "beta_slow", 1.0);
    m.rope_attention_factor = get_pos_double(rs, where, "attention_factor", 0.0);
    for (const char* k : {"mscale", "mscale_all_dim"})
      if (auto v = rs.find(k); v != rs.end() && !v->is_null() && !(v->is_number() && v->get<double>() == 0))
        fail(where, k, "is " + v->dump() + "; xy's yarn takes only factor, beta_fast, beta_slow, "
                       "attention_factor and original_max_position_embeddings");
    if (auto v = rs.find("truncate"); v != rs.end() && !v->is_null() && v->is_boolean() && !v->get<bool>())
      fail(where, "truncate", "is false; xy's yarn truncates the correction range (transformers' default)");
  }
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

  const Family* fam = &kFamilies[0];  // no model_type: a Llama, as before
  if (auto mt = j.find("model_type"); mt != j.end()) {
    fam = nullptr;
    for (const Family& f : kFamilies)
      if (mt->is_string() && mt->get<std::string>() == f.model_type) fam = &f;
    if (!fam) {
      const std::string t = mt->is_string() ? mt->get<std::string>() : "";
      const bool moe = lower(t).find("moe") != std::string::npos;
      fail(src, "model_type", "is " + mt->dump() + "; xy reads \"llama\", \"qwen2\" and \"qwen3\" models" +
                                  (moe ? std::string(" (mixture-of-experts models are not supported)") : ""));
    }
  }
  if (auto ar = j.find("architectures"); ar != j.end() && !ar->is_null()) {
    bool ok = ar->is_array();
    if (ok) {
      ok = false;
      for (const auto& a : *ar) ok = ok || (a.is_string() && a.get<std::string>() == fam->architecture);
    }
    if (!ok)
      fail(src, "architectures", "is " + ar->dump() + "; for model_type \"" + fam->model_type +
                                     "\" xy reads " + fam->architecture);
  }

  HfModelConfig out;
  ModelConfig& m = out.model;
  m.preset = "custom";
  m.family = fam->model_type;
  m.hidden = get_int(j, src, "hidden_size", true, 0);
  m.intermediate = get_int(j, src, "intermediate_size", true, 0);
  m.layers = get_int(j, src, "num_hidden_layers", true, 0);
  m.heads = get_int(j, src, "num_attention_heads", true, 0);
  m.vocab_size = get_int(j, src, "vocab_size", true, 0);
  m.kv_heads = get_int(j, src, "num_key_value_heads", false, m.heads);
  m.max_seq_len = get_int(j, src, "max_position_embeddings", false, fam->max_position_default);
  m.rms_eps = get_pos_double(j, src, "rms_norm_eps", 1e-6);
  m.rope_theta = get_pos_double(j, src, "rope_theta", 10000.0);
  m.init_std = get_pos_double(j, src, "initializer_range", 0.02);

  if (m.heads % m.kv_heads != 0)
    fail(src, "num_key_value_heads", std::to_string(m.kv_heads) +
                                         " does not divide num_attention_heads " +
                                         std::to_string(m.heads));
  // head_dim: Llama and Qwen2 default to hidden / heads, Qwen3 to 128 (its config class's).
  int64_t head_dim = get_int(j, src, "head_dim", false, fam->head_dim_default);
  if (head_dim == 0) {
    if (m.hidden % m.heads != 0)
      fail(src, "num_attention_heads", std::to_string(m.heads) + " does not divide hidden_size " +
                                           std::to_string(m.hidden) + " (and head_dim is not given)");
    head_dim = m.hidden / m.heads;
  }
  if (head_dim % 2 != 0)
    fail(src, "head_dim", "head dimension " + std::to_string(head_dim) +
                              " is odd; rotary embeddings need an even one");
  // Written explicitly only where it differs from hidden / heads, so that Llama-2-shaped models
  // keep head_dim 0 (= derived).
  m.head_dim = m.hidden % m.heads == 0 && head_dim == m.hidden / m.heads ? 0 : head_dim;
  if (m.family == "qwen2" && m.head_dim != 0)
    fail(src, "head_dim", std::to_string(head_dim) + " is not hidden_size / num_attention_heads; "
                          "Qwen2ForCausalLM cannot express it");
  m.tie_embeddings = get_bool(j, src, "tie_word_embeddings", false);
  if (m.family == "qwen2") {
    m.attention_bias = "qkv";  // Qwen2's q/k/v projections always have biases, o_proj none
  } else {
    m.attention_bias = get_bool(j, src, "attention_bias", false) ? "qkvo" : "none";
  }
  m.qk_norm = m.family == "qwen3";
  if (get_bool(j, src, "mlp_bias", false))
    fail(src, "mlp_bias", "is true; xy's MLP projections have no bias");
  if (get_bool(j, src, "use_sliding_window", false))
    fail(src, "use_sliding_window", "is true; xy's attention is full causal attention (no sliding window)");
  if (auto lt = j.find("layer_types"); lt != j.end() && !lt->is_null()) {
    bool ok = lt->is_array();
    if (ok)
      for (const auto& t : *lt) ok = ok && t.is_string() && t.get<std::string>() == "full_attention";
    if (!ok)
      fail(src, "layer_types", "is " + lt->dump().substr(0, 200) +
                                   "; xy computes only \"full_attention\" layers (no sliding window)");
  }
  for (const char* k : {"num_experts", "num_local_experts"})
    if (auto e = j.find(k); e != j.end() && e->is_number() && e->get<double>() > 0)
      fail(src, k, "is " + e->dump() + "; mixture-of-experts models are not supported");
  read_rope(j, src, m, m.max_seq_len);
  if (auto act = j.find("hidden_act"); act != j.end() && !act->is_null()) {
    if (!act->is_string() || act->get<std::string>() != "silu")
      fail(src, "hidden_act", "is " + act->dump() + "; xy's MLP is SwiGLU (\"silu\")");
  }
  if (auto td = j.find("torch_dtype"); td != j.end() && !td->is_null()) {
    if (!td->is_string()) fail(src, "torch_dtype", "expected a string, got " + td->dump());
    out.torch_dtype = td->get<std::string>();
  } else if (auto dt = j.find("dtype"); dt != j.end() && dt->is_string()) {  // transformers 5
    out.torch_dtype = dt->get<std::string>();
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

namespace {
// An id, or null for none (-1).
nlohmann::ordered_json token_id(int32_t id) {
  return id < 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(id);
}
}  // namespace

std::string hf_config_json(const ModelConfig& m, const std::string& torch_dtype, const HfTokenIds& ids) {
  const int64_t kv = kv_heads_of(m);
  const std::string family = m.family.empty() ? "llama" : m.family;
  // The 4.x keys (rope_theta + rope_scaling): transformers 5 converts them to rope_parameters.
  nlohmann::ordered_json rope_scaling = nullptr;
  int64_t max_pos = m.max_seq_len;
  const int64_t original = m.rope_original_max_len > 0 ? m.rope_original_max_len : m.max_seq_len;
  if (m.rope_scaling != "none" && !m.rope_scaling.empty()) {
    rope_scaling = {{"rope_type", m.rope_scaling}, {"factor", m.rope_factor}};
    if (m.rope_scaling == "dynamic") {
      max_pos = original;  // transformers' dynamic NTK is relative to max_position_embeddings
    } else if (m.rope_scaling == "llama3") {
      rope_scaling["low_freq_factor"] = m.rope_low_freq_factor;
      rope_scaling["high_freq_factor"] = m.rope_high_freq_factor;
      rope_scaling["original_max_position_embeddings"] = original;
    } else if (m.rope_scaling == "yarn") {
      rope_scaling["original_max_position_embeddings"] = original;
      rope_scaling["beta_fast"] = m.rope_beta_fast;
      rope_scaling["beta_slow"] = m.rope_beta_slow;
      if (m.rope_attention_factor > 0) rope_scaling["attention_factor"] = m.rope_attention_factor;
    }
  }
  nlohmann::ordered_json j;
  if (family == "qwen2") {
    j["architectures"] = {"Qwen2ForCausalLM"};
  } else if (family == "qwen3") {
    j["architectures"] = {"Qwen3ForCausalLM"};
  } else {
    j["architectures"] = {"LlamaForCausalLM"};
  }
  j["model_type"] = family;
  j["hidden_size"] = m.hidden;
  j["intermediate_size"] = m.intermediate;
  j["num_hidden_layers"] = m.layers;
  j["num_attention_heads"] = m.heads;
  j["num_key_value_heads"] = kv;
  j["head_dim"] = head_dim_of(m);
  j["vocab_size"] = m.vocab_size;
  j["max_position_embeddings"] = max_pos;
  j["rms_norm_eps"] = m.rms_eps;
  j["rope_theta"] = m.rope_theta;
  j["rope_scaling"] = rope_scaling;
  j["hidden_act"] = "silu";
  if (family != "qwen2") j["attention_bias"] = m.attention_bias == "qkvo";
  j["attention_dropout"] = 0.0;
  if (family == "llama") {
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  } else {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = m.layers;
  }
  j["initializer_range"] = m.init_std;
  j["tie_word_embeddings"] = m.tie_embeddings;
  j["bos_token_id"] = token_id(ids.bos);
  j["eos_token_id"] = token_id(ids.eos);
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

std::string hf_generation_config_json(const HfTokenIds& ids) {
  nlohmann::ordered_json j;
  j["bos_token_id"] = token_id(ids.bos);
  j["eos_token_id"] = token_id(ids.eos);
  return j.dump(2) + "\n";
}

std::string hf_folder_tokenizer(const std::string& dir) {
  if (dir.empty()) return "";
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const std::string file = dir + (dir.back() == '/' ? "" : "/") + name;
    struct stat s;
    if (::stat(file.c_str(), &s) == 0 && S_ISREG(s.st_mode)) return file;
  }
  return "";
}

void write_hf_config(const std::string& path, const ModelConfig& m, const std::string& torch_dtype,
                     const HfTokenIds& ids) {
  try {
    write_file_atomic(path, hf_config_json(m, torch_dtype, ids));
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
