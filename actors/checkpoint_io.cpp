// Reading and verifying checkpoints (see checkpoint_io.hpp).
#include "actors/checkpoint_io.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/sha256.hpp"

namespace fs = std::filesystem;

namespace xy {

std::string resolve_checkpoint(const std::string& spec, const std::string& root) {
  if (spec != "latest") return spec;
  const fs::path latest = fs::path(root) / "latest";
  std::ifstream in(latest);
  std::string name;
  if (!(in >> name))
    throw CheckpointError("no checkpoint to resume: " + latest.string() + " does not exist");
  return (fs::path(root) / name).string();
}

namespace {

at::ScalarType dtype_from_name(const std::string& s, const std::string& where) {
  if (s == "Float") return at::kFloat;
  if (s == "BFloat16") return at::kBFloat16;
  if (s == "Half") return at::kHalf;
  throw CheckpointError(where + ": unknown working_dtype '" + s + "'");
}

}  // namespace

CheckpointManifest read_checkpoint(const std::string& dir, bool verify) {
  const fs::path mpath = fs::path(dir) / "manifest.json";
  std::ifstream in(mpath);
  if (!in) throw CheckpointError("checkpoint " + dir + " has no manifest.json (incomplete or not a checkpoint)");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    throw CheckpointError(mpath.string() + ": not valid JSON");
  CheckpointManifest man;
  man.dir = dir;
  try {
    if (j.at("format") != "xy-checkpoint-1")
      throw CheckpointError(mpath.string() + ": unknown format " + j.at("format").dump());
    man.step = j.at("step");
    man.adam_step = j.at("adam_step");
    man.samples_per_rank = j.at("samples_per_rank");
    if (j.contains("loss_scaler")) {
      const auto& ls = j.at("loss_scaler");
      man.loss_scale = ls.at("scale");
      man.scaler_iter = ls.at("iter");
      man.scaler_last_overflow = ls.at("last_overflow");
      man.scaler_hysteresis = ls.at("cur_hysteresis");
    }
    man.loss = j.at("loss");
    man.world_size = j.at("world_size");
    man.working_dtype = dtype_from_name(j.at("working_dtype"), mpath.string());
    const auto& m = j.at("model");
    man.model.vocab_size = m.at("vocab_size");
    man.model.hidden = m.at("hidden");
    man.model.intermediate = m.at("intermediate");
    man.model.layers = m.at("layers");
    man.model.heads = m.at("heads");
    man.model.kv_heads = m.at("kv_heads");
    man.model.rms_eps = m.at("rms_eps");
    man.model.rope_theta = m.at("rope_theta");
    man.model.max_seq_len = m.at("max_seq_len");
    for (const auto& u : j.at("units")) man.units.push_back({u.at("name"), u.at("numel"), u.at("shard_numel")});
    for (const auto& f : j.at("files"))
      man.files.push_back({f.at("name"), f.at("rank"), f.at("bytes"), f.at("sha256")});
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(mpath.string() + ": missing or malformed field: " + e.what());
  }
  std::sort(man.files.begin(), man.files.end(), [](auto& a, auto& b) { return a.rank < b.rank; });
  if (static_cast<int>(man.files.size()) != man.world_size)
    throw CheckpointError(mpath.string() + " lists " + std::to_string(man.files.size()) +
                          " rank files for world size " + std::to_string(man.world_size));
  int64_t per_rank = 0;
  const int64_t welem = c10::elementSize(man.working_dtype);
  for (const auto& u : man.units) per_rank += u.shard_numel * (welem + 12);
  for (int r = 0; r < man.world_size; ++r) {
    const CheckpointFile& f = man.files[r];
    const fs::path p = fs::path(dir) / f.name;
    if (f.rank != r) throw CheckpointError(mpath.string() + ": no file for rank " + std::to_string(r));
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    if (ec) throw CheckpointError("checkpoint file " + p.string() + " is missing: " + ec.message());
    if (static_cast<int64_t>(size) != f.bytes || f.bytes != per_rank)
      throw CheckpointError("checkpoint file " + p.string() + " has " + std::to_string(size) +
                            " bytes; the manifest says " + std::to_string(f.bytes) +
                            " (layout: " + std::to_string(per_rank) + "): truncated or corrupt");
    if (verify) {
      const std::string sha = Sha256::of_file(p.string());
      if (sha != f.sha256)
        throw CheckpointError("checkpoint file " + p.string() + " is corrupt: SHA-256 " + sha +
                              " differs from the manifest's " + f.sha256);
    }
  }
  return man;
}

std::vector<std::string> list_checkpoints(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0)
      out.push_back(e.path().string());
  std::sort(out.rbegin(), out.rend());
  return out;
}

UnitState read_unit_state(const CheckpointManifest& man, int u) {
  const int64_t welem = c10::elementSize(man.working_dtype);
  int64_t offset = 0;  // of unit u inside a rank file
  for (int i = 0; i < u; ++i) offset += man.units[i].shard_numel * (welem + 12);
  const CheckpointUnit& unit = man.units.at(u);
  const int64_t n = unit.shard_numel, world = man.world_size;
  UnitState st;
  st.working = at::empty({n * world}, man.working_dtype);
  st.master = at::empty({n * world}, at::kFloat);
  st.m = at::empty({n * world}, at::kFloat);
  st.v = at::empty({n * world}, at::kFloat);
  for (int r = 0; r < world; ++r) {
    const std::string path = (fs::path(man.dir) / man.files[r].name).string();
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw CheckpointError("cannot open " + path + ": " + std::strerror(errno));
    int64_t pos = offset;
    for (at::Tensor* t : {&st.working, &st.master, &st.m, &st.v}) {
      const int64_t bytes = n * t->element_size();
      char* dst = static_cast<char*>(t->data_ptr()) + r * bytes;
      for (int64_t done = 0; done < bytes;) {
        const ssize_t k = ::pread(fd, dst + done, bytes - done, pos + done);
        if (k <= 0) {
          ::close(fd);
          throw CheckpointError("cannot read " + path + " at byte " + std::to_string(pos + done) +
                                (k < 0 ? std::string(": ") + std::strerror(errno) : ": unexpected end"));
        }
        done += k;
      }
      pos += bytes;
    }
    ::close(fd);
  }
  for (at::Tensor* t : {&st.working, &st.master, &st.m, &st.v}) *t = t->narrow(0, 0, unit.numel);
  return st;
}

void check_model_matches(const CheckpointManifest& man, const ModelConfig& m) {
  const auto kv = [](const ModelConfig& c) { return c.kv_heads > 0 ? c.kv_heads : c.heads; };
  const std::pair<const char*, std::pair<int64_t, int64_t>> fields[] = {
      {"vocab_size", {man.model.vocab_size, m.vocab_size}},
      {"hidden", {man.model.hidden, m.hidden}},
      {"intermediate", {man.model.intermediate, m.intermediate}},
      {"layers", {man.model.layers, m.layers}},
      {"heads", {man.model.heads, m.heads}},
      {"kv_heads", {kv(man.model), kv(m)}}};
  for (const auto& [name, v] : fields)
    if (v.first != v.second)
      throw CheckpointError("checkpoint " + man.dir + " has model." + name + " = " +
                            std::to_string(v.first) + " but the config has " +
                            std::to_string(v.second));
}

}  // namespace xy
