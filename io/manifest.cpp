// The checkpoint manifest, parsed as untrusted input (see manifest.hpp).
#include "io/manifest.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace xy {

std::string checkpoint_step_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

int64_t parse_checkpoint_step_name(const std::string& name) {
  if (name.size() < 6 || name.size() > 5 + 18 || name.compare(0, 5, "step-") != 0) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

std::string checkpoint_rank_file(int64_t rank) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "rank-%05lld.bin", static_cast<long long>(rank));
  return buf;
}

int64_t working_dtype_size(const std::string& name, const std::string& where) {
  if (name == "Float") return 4;
  if (name == "BFloat16" || name == "Half") return 2;
  throw CheckpointError(where + ": working_dtype '" + name + "' is not one of Float, BFloat16, Half");
}

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

struct Reader {
  const std::string& where;

  const json& at(const json& obj, const char* key, const std::string& path) const {
    if (!obj.is_object()) throw CheckpointError(where + ": " + path + " is not an object");
    auto it = obj.find(key);
    if (it == obj.end()) throw CheckpointError(where + ": missing field " + path + key);
    return *it;
  }
  int64_t integer(const json& obj, const char* key, int64_t lo, int64_t hi,
                  const std::string& path = "") const {
    const json& v = at(obj, key, path);
    bool ok = false;
    int64_t x = 0;
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      ok = u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
      x = static_cast<int64_t>(u);
    } else if (v.is_number_integer()) {
      ok = true;
      x = v.get<int64_t>();
    }
    if (!ok || x < lo || x > hi)
      throw CheckpointError(where + ": field " + path + key + " = " + v.dump() +
                            ": expected an integer in [" + std::to_string(lo) + ", " +
                            std::to_string(hi) + "]");
    return x;
  }
  double number(const json& obj, const char* key, double lo, double hi, const std::string& path = "",
                bool allow_null = false) const {
    const json& v = at(obj, key, path);
    if (allow_null && v.is_null()) return std::nan("");  // a NaN loss is written as null
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < lo || v.get<double>() > hi)
      throw CheckpointError(where + ": field " + path + key + " = " + v.dump() +
                            ": expected a number in [" + num(lo) + ", " + num(hi) + "]");
    return v.get<double>();
  }
  std::string string(const json& obj, const char* key, const std::string& path = "") const {
    const json& v = at(obj, key, path);
    if (!v.is_string()) throw CheckpointError(where + ": field " + path + key + " is not a string");
    return v.get<std::string>();
  }
};

// a * b and a + b for non-negative sizes, or an error naming what overflowed.
int64_t mul_checked(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw CheckpointError(what + ": size overflows");
  return r;
}
int64_t add_checked(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw CheckpointError(what + ": size overflows");
  return r;
}

bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

Manifest parse_checkpoint_manifest(const std::string& text, const std::string& where) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw CheckpointError(where + ": not valid JSON");
  if (!j.is_object()) throw CheckpointError(where + ": not a JSON object");
  const Reader r{where};
  Manifest m;
  const std::string format = r.string(j, "format");
  if (format != kCheckpointFormat)
    throw CheckpointError(where + ": unknown format '" + format + "' (this xy reads " + kCheckpointFormat + ")");
  m.step = r.integer(j, "step", 0, kMaxCheckpointStep);
  m.adam_step = r.integer(j, "adam_step", 0, kMaxCheckpointStep);
  m.samples_per_rank = r.integer(j, "samples_per_rank", 0, std::numeric_limits<int64_t>::max() / 2);
  if (j.contains("loss_scaler")) {
    const json& ls = j.at("loss_scaler");
    m.loss_scale = r.number(ls, "scale", 0x1p-126, 0x1p127, "loss_scaler.");
    if (!(m.loss_scale > 0)) throw CheckpointError(where + ": field loss_scaler.scale must be > 0");
    m.scaler_iter = r.integer(ls, "iter", 0, kMaxCheckpointStep, "loss_scaler.");
    m.scaler_last_overflow = r.integer(ls, "last_overflow", -1, kMaxCheckpointStep, "loss_scaler.");
    m.scaler_hysteresis = r.integer(ls, "cur_hysteresis", 0, 1 << 20, "loss_scaler.");
  }
  m.loss = r.number(j, "loss", -1e30, 1e30, "", /*allow_null=*/true);
  m.world_size = static_cast<int>(r.integer(j, "world_size", 1, kMaxCheckpointWorld));
  m.data_ranks = j.contains("data_ranks") ? static_cast<int>(r.integer(j, "data_ranks", m.world_size, kMaxCheckpointWorld))
                                          : m.world_size;
  if (j.contains("samples")) {
    m.samples = r.integer(j, "samples", 0, std::numeric_limits<int64_t>::max() / 2);
  } else {
    if (m.samples_per_rank > std::numeric_limits<int64_t>::max() / 2 / m.data_ranks)
      throw CheckpointError(where + ": field samples_per_rank x data_ranks overflows");
    m.samples = m.samples_per_rank * m.data_ranks;
  }
  if (j.contains("nodes")) m.nodes = static_cast<int>(r.integer(j, "nodes", 1, m.data_ranks));
  m.working_dtype_name = r.string(j, "working_dtype");
  const int64_t welem = working_dtype_size(m.working_dtype_name, where);

  const json& mj = r.at(j, "model", "");
  ModelConfig& mc = m.model;
  mc.preset = "custom";
  mc.vocab_size = r.integer(mj, "vocab_size", 1, int64_t{1} << 22, "model.");
  mc.hidden = r.integer(mj, "hidden", 1, int64_t{1} << 17, "model.");
  mc.intermediate = r.integer(mj, "intermediate", 1, int64_t{1} << 20, "model.");
  mc.layers = r.integer(mj, "layers", 1, 4096, "model.");
  mc.heads = r.integer(mj, "heads", 1, 4096, "model.");
  mc.kv_heads = r.integer(mj, "kv_heads", 0, 4096, "model.");
  mc.rms_eps = r.number(mj, "rms_eps", 0, 1, "model.");
  mc.rope_theta = r.number(mj, "rope_theta", 1e-3, 1e12, "model.");
  mc.max_seq_len = r.integer(mj, "max_seq_len", 1, int64_t{1} << 24, "model.");
  // The architecture beyond Llama-2's: absent in manifests written before it (their defaults).
  if (mj.contains("head_dim")) mc.head_dim = r.integer(mj, "head_dim", 0, int64_t{1} << 20, "model.");
  auto one_of = [&](const char* key, std::string& out, std::initializer_list<const char*> valid) {
    if (!mj.contains(key)) return;
    out = r.string(mj, key, "model.");
    for (const char* v : valid)
      if (out == v) return;
    throw CheckpointError(where + ": field model." + key + " = '" + out + "' is not one xy knows");
  };
  auto flag = [&](const char* key, bool& out) {
    if (!mj.contains(key)) return;
    if (!mj.at(key).is_boolean()) throw CheckpointError(where + ": field model." + key + " is not true or false");
    out = mj.at(key).get<bool>();
  };
  one_of("family", mc.family, {"llama", "qwen2", "qwen3"});
  one_of("attention_bias", mc.attention_bias, {"none", "qkv", "qkvo"});
  one_of("rope_scaling", mc.rope_scaling, {"none", "linear", "dynamic", "llama3", "yarn"});
  flag("tie_embeddings", mc.tie_embeddings);
  flag("qk_norm", mc.qk_norm);
  if (mj.contains("rope_original_max_len"))
    mc.rope_original_max_len = r.integer(mj, "rope_original_max_len", 0, int64_t{1} << 40, "model.");
  for (auto [key, field] : {std::pair<const char*, double*>{"rope_factor", &mc.rope_factor},
                            {"rope_low_freq_factor", &mc.rope_low_freq_factor},
                            {"rope_high_freq_factor", &mc.rope_high_freq_factor},
                            {"rope_beta_fast", &mc.rope_beta_fast},
                            {"rope_beta_slow", &mc.rope_beta_slow},
                            {"rope_attention_factor", &mc.rope_attention_factor}})
    if (mj.contains(key)) *field = r.number(mj, key, 0, 1e12, "model.");
  const int64_t hd = head_dim_of(mc);
  if ((mc.head_dim == 0 && mc.hidden % mc.heads != 0) || hd % 2 != 0 || hd < 2)
    throw CheckpointError(where + ": model.heads = " + std::to_string(mc.heads) + " and model.head_dim = " +
                          std::to_string(mc.head_dim) + " do not give an even head size for model.hidden = " +
                          std::to_string(mc.hidden));
  if (mc.kv_heads > 0 && mc.heads % mc.kv_heads != 0)
    throw CheckpointError(where + ": model.kv_heads = " + std::to_string(mc.kv_heads) +
                          " does not divide model.heads = " + std::to_string(mc.heads));

  const json& units = r.at(j, "units", "");
  if (!units.is_array() || units.size() != static_cast<size_t>(mc.layers + 2))
    throw CheckpointError(where + ": units must be an array of model.layers + 2 = " +
                          std::to_string(mc.layers + 2) + " entries");
  int64_t per_rank = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    const std::string path = "units[" + std::to_string(i) + "].";
    ManifestUnit u;
    u.name = r.string(units[i], "name", path);
    u.numel = r.integer(units[i], "numel", 1, int64_t{1} << 40, path);
    u.shard_numel = r.integer(units[i], "shard_numel", 1, int64_t{1} << 40, path);
    // The writer pads each unit to a multiple of the world size: shard = ceil(numel / world).
    if (u.shard_numel != (u.numel + m.world_size - 1) / m.world_size)
      throw CheckpointError(where + ": " + path + "shard_numel = " + std::to_string(u.shard_numel) +
                            " is not ceil(numel / world_size) = " +
                            std::to_string((u.numel + m.world_size - 1) / m.world_size));
    per_rank = add_checked(per_rank, mul_checked(u.shard_numel, welem + 12, where), where);
    m.units.push_back(std::move(u));
  }
  m.rank_file_bytes = per_rank;

  const json& files = r.at(j, "files", "");
  if (!files.is_array() || files.size() != static_cast<size_t>(m.world_size))
    throw CheckpointError(where + ": files must list one file per rank (world_size = " +
                          std::to_string(m.world_size) + ")");
  m.files.resize(m.world_size);
  std::vector<bool> seen(m.world_size, false);
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string path = "files[" + std::to_string(i) + "].";
    ManifestFile f;
    f.rank = static_cast<int>(r.integer(files[i], "rank", 0, m.world_size - 1, path));
    f.name = r.string(files[i], "name", path);
    if (f.name != checkpoint_rank_file(f.rank))
      throw CheckpointError(where + ": " + path + "name '" + f.name + "' is not the file xy writes for rank " +
                            std::to_string(f.rank) + " ('" + checkpoint_rank_file(f.rank) + "')");
    if (seen[f.rank]) throw CheckpointError(where + ": rank " + std::to_string(f.rank) + " is listed twice");
    seen[f.rank] = true;
    f.bytes = r.integer(files[i], "bytes", 0, std::numeric_limits<int64_t>::max(), path);
    if (f.bytes != per_rank)
      throw CheckpointError(where + ": " + path + "bytes = " + std::to_string(f.bytes) +
                            " but the units need " + std::to_string(per_rank) + " bytes per rank");
    f.sha256 = r.string(files[i], "sha256", path);
    if (!is_sha256_hex(f.sha256))
      throw CheckpointError(where + ": " + path + "sha256 is not 64 lowercase hex digits");
    m.files[f.rank] = std::move(f);
  }

  // The run's tokenizer: optional (older manifests have none), but whole and well-formed when given.
  if (j.contains("tokenizer")) {
    const json& tj = j.at("tokenizer");
    if (!tj.is_object()) throw CheckpointError(where + ": field tokenizer is not an object");
    TokenizerRecord t;
    t.file = r.string(tj, "file", "tokenizer.");
    if (t.file.empty() || t.file.find('\0') != std::string::npos)
      throw CheckpointError(where + ": field tokenizer.file is empty or holds a NUL byte");
    t.sha256 = r.string(tj, "sha256", "tokenizer.");
    if (!is_sha256_hex(t.sha256))
      throw CheckpointError(where + ": field tokenizer.sha256 is not 64 lowercase hex digits");
    t.vocab_size = r.integer(tj, "vocab_size", 1, int64_t{1} << 31, "tokenizer.");
    // An id is below the vocabulary; -1 = the tokenizer has none.
    t.bos_id = static_cast<int32_t>(r.integer(tj, "bos_id", -1, t.vocab_size - 1, "tokenizer."));
    t.eos_id = static_cast<int32_t>(r.integer(tj, "eos_id", -1, t.vocab_size - 1, "tokenizer."));
    m.tokenizer = std::move(t);
  }
  return m;
}

std::string read_latest_checkpoint(const std::string& root) {
  const fs::path latest = fs::path(root) / "latest";
  std::ifstream in(latest);
  if (!in) throw CheckpointError("no checkpoint to resume: " + latest.string() + " does not exist");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  if (parse_checkpoint_step_name(text) < 0)
    throw CheckpointError(latest.string() + " must name a checkpoint directory beside it (step-N); it holds '" +
                          text.substr(0, 80) + "'");
  return (fs::path(root) / text).string();
}

}  // namespace xy
