// Reading and verifying checkpoints (see checkpoint_io.hpp).
#include "ckpt/checkpoint_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/sha256.hpp"
#include "model/layout.hpp"

namespace fs = std::filesystem;

namespace xy {

std::string resolve_checkpoint(const std::string& spec, const std::string& root) {
  if (spec != "latest") return spec;
  return read_latest_checkpoint(root);
}

namespace {

at::ScalarType dtype_from_name(const std::string& s, const std::string& where) {
  if (s == "Float") return at::kFloat;
  if (s == "BFloat16") return at::kBFloat16;
  if (s == "Half") return at::kHalf;
  throw CheckpointError(where + ": unknown working_dtype '" + s + "'");
}

// Opens a rank file for reading: a regular file, not a link (a checkpoint directory is not
// trusted to point elsewhere). Returns the fd; throws CheckpointError naming it.
int open_rank_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    throw CheckpointError("checkpoint file " + path + " cannot be opened: " + std::strerror(errno) +
                          (errno == ELOOP ? " (it is a symbolic link; checkpoints hold regular files only)" : ""));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw CheckpointError("checkpoint file " + path + " is not a regular file");
  }
  return fd;
}

}  // namespace

CheckpointManifest read_checkpoint(const std::string& dir, bool verify) {
  const fs::path mpath = fs::path(dir) / "manifest.json";
  std::string text;
  {
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      throw CheckpointError("checkpoint " + dir + " is not a directory" +
                            (fs::exists(dir, ec) ? "" : " (it does not exist)"));
    if (fs::symlink_status(mpath, ec).type() != fs::file_type::regular)
      throw CheckpointError("checkpoint " + dir + " has no manifest.json (incomplete or not a checkpoint)");
    std::ifstream in(mpath, std::ios::binary);
    if (!in) throw CheckpointError("checkpoint " + dir + ": cannot read manifest.json");
    in.seekg(0, std::ios::end);
    const auto size = static_cast<int64_t>(in.tellg());
    if (size > (int64_t{64} << 20)) throw CheckpointError(mpath.string() + ": larger than 64 MiB: not a manifest");
    in.seekg(0);
    text.resize(static_cast<size_t>(size));
    in.read(text.data(), size);
  }
  const Manifest parsed = parse_checkpoint_manifest(text, mpath.string());
  CheckpointManifest man;
  static_cast<Manifest&>(man) = parsed;
  man.dir = dir;
  man.working_dtype = dtype_from_name(parsed.working_dtype_name, mpath.string());
  // The units must be those of the manifest's model at its world size, name by name.
  const ModelLayout layout = build_layout(man.model, man.world_size, {});
  for (size_t u = 0; u < layout.units.size(); ++u) {
    const UnitLayout& want = layout.units[u];
    const CheckpointUnit& got = man.units[u];
    if (got.name != want.name || got.numel != want.numel || got.shard_numel != want.shard_numel)
      throw CheckpointError(mpath.string() + ": units[" + std::to_string(u) + "] is '" + got.name + "' with " +
                            std::to_string(got.numel) + " elements (" + std::to_string(got.shard_numel) +
                            " per rank); the model's layout has '" + want.name + "' with " +
                            std::to_string(want.numel) + " (" + std::to_string(want.shard_numel) + ")");
  }
  for (int r = 0; r < man.world_size; ++r) {
    const CheckpointFile& f = man.files[r];
    const std::string p = (fs::path(dir) / f.name).string();
    const int fd = open_rank_file(p);
    struct stat st;
    std::string sha;
    try {
      if (::fstat(fd, &st) != 0)
        throw CheckpointError("checkpoint file " + p + " cannot be read: " + std::strerror(errno));
      if (static_cast<int64_t>(st.st_size) != f.bytes)
        throw CheckpointError("checkpoint file " + p + " has " + std::to_string(st.st_size) +
                              " bytes; the manifest says " + std::to_string(f.bytes) + ": truncated or corrupt");
      if (verify) sha = Sha256::of_fd(fd, p);
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
    if (verify) {
      if (sha != f.sha256)
        throw CheckpointError("checkpoint file " + p + " is corrupt: SHA-256 " + sha +
                              " differs from the manifest's " + f.sha256);
    }
  }
  return man;
}

std::vector<std::string> list_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const int64_t step = parse_checkpoint_step_name(e.path().filename().string());
    if (step >= 0 && e.symlink_status(ec).type() == fs::file_type::directory)
      found.emplace_back(step, e.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

void remove_checkpoint_dir(const fs::path& root, const std::string& name) {
  // Rename first (atomic), then delete: a crash mid-way never leaves a half-deleted step-N (what
  // is left is a .del-step-N, removed at the next start).
  const fs::path doomed = root / (".del-" + name);
  std::error_code ec;
  fs::remove_all(doomed, ec);
  fs::rename(root / name, doomed);
  fs::remove_all(doomed);
}

void apply_retention(const fs::path& root, int64_t published_step, int keep_last, int64_t keep_every) {
  // Never deleted: the checkpoint just published and the one `latest` names (the same one when
  // publication went as planned; they differ only if `latest` was changed by hand).
  std::string latest_name;
  try {
    latest_name = fs::path(read_latest_checkpoint(root.string())).filename().string();
  } catch (const std::exception&) {
  }
  const std::string published = checkpoint_step_name(published_step);
  const std::vector<std::string> found = list_checkpoints(root.string());  // newest step first
  for (size_t i = static_cast<size_t>(std::max(1, keep_last)); i < found.size(); ++i) {
    const std::string n = fs::path(found[i]).filename().string();
    if (n == published || n == latest_name) continue;
    // Every keep_every-th step's checkpoint is kept for good.
    if (keep_every > 0 && parse_checkpoint_step_name(n) % keep_every == 0) continue;
    remove_checkpoint_dir(root, n);
  }
}

void prepare_checkpoint_dir_for_fresh_run(const std::string& root, bool overwrite) {
  std::error_code ec;
  const std::vector<std::string> found = list_checkpoints(root);
  const bool has_latest = fs::symlink_status(fs::path(root) / "latest", ec).type() != fs::file_type::not_found;
  if (found.empty() && !has_latest) return;
  std::string what;
  for (size_t i = 0; i < found.size() && i < 3; ++i)
    what += (i ? ", " : "") + fs::path(found[i]).filename().string();
  if (found.size() > 3) what += ", ... (" + std::to_string(found.size()) + " in all)";
  if (found.empty()) what = "a 'latest' file";
  if (!overwrite)
    throw std::invalid_argument(
        "checkpoint.dir " + root + " already holds checkpoints of another run (" + what +
        "); a fresh run there would replace 'latest' and its retention would delete them. Continue "
        "that run with --resume latest, choose another checkpoint.dir or --work-dir, or pass "
        "--overwrite-checkpoints to delete them and start over");
  for (const auto& d : found) remove_checkpoint_dir(root, fs::path(d).filename().string());
  fs::remove(fs::path(root) / "latest", ec);
  std::printf("xy: --overwrite-checkpoints: removed %s from %s\n", what.c_str(), root.c_str());
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
    const int fd = open_rank_file(path);
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
      {"kv_heads", {kv(man.model), kv(m)}},
      {"head_dim", {head_dim_of(man.model), head_dim_of(m)}}};
  for (const auto& [name, v] : fields)
    if (v.first != v.second)
      throw CheckpointError("checkpoint " + man.dir + " has model." + name + " = " +
                            std::to_string(v.first) + " but the config has " +
                            std::to_string(v.second));
  // The parameters these decide differ too (RoPE scaling and family do not change the shapes).
  const auto text = [](bool b) { return std::string(b ? "true" : "false"); };
  const std::pair<const char*, std::pair<std::string, std::string>> kinds[] = {
      {"tie_embeddings", {text(man.model.tie_embeddings), text(m.tie_embeddings)}},
      {"qk_norm", {text(man.model.qk_norm), text(m.qk_norm)}},
      {"attention_bias", {man.model.attention_bias, m.attention_bias}}};
  for (const auto& [name, v] : kinds)
    if (v.first != v.second)
      throw CheckpointError("checkpoint " + man.dir + " has model." + name + " = " + v.first +
                            " but the config has " + v.second);
}

}  // namespace xy
