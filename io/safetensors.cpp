// safetensors: header validation, memory-mapped reading, sharded sets, writing (see safetensors.hpp).
#include "io/atomic_file.hpp"
#include "io/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace xy::st {

namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},     {DType::kI8, "I8", 1},
    {DType::kI16, "I16", 2},   {DType::kU16, "U16", 2},   {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI32, "I32", 4},   {DType::kU32, "U32", 4},
    {DType::kF32, "F32", 4},   {DType::kI64, "I64", 8},   {DType::kU64, "U64", 8},
    {DType::kF64, "F64", 8},   {DType::kF8_E4M3, "F8_E4M3", 1}, {DType::kF8_E5M2, "F8_E5M2", 1},
};

const DTypeEntry& entry(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e;
  throw SafetensorsError("invalid DType value");
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string range_str(uint64_t b, uint64_t e) {
  return "[" + std::to_string(b) + ", " + std::to_string(e) + "]";
}

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw SafetensorsError(source + ": " + what);
}

[[noreturn]] void fail_tensor(const std::string& source, const std::string& name,
                              const std::string& what) {
  throw SafetensorsError(source + ": tensor '" + name + "': " + what);
}

// numel * size with overflow checks; false on overflow.
bool byte_size(const std::vector<int64_t>& shape, size_t elem, uint64_t* out) {
  uint64_t n = elem;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  *out = n;
  return true;
}

std::string dirname_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool is_dir(const std::string& p) {
  struct stat s;
  return ::stat(p.c_str(), &s) == 0 && S_ISDIR(s.st_mode);
}

bool exists(const std::string& p) {
  struct stat s;
  return ::stat(p.c_str(), &s) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

size_t dtype_size(DType d) { return entry(d).size; }
const char* dtype_name(DType d) { return entry(d).name; }

bool parse_dtype(const std::string& s, DType* out) {
  for (const auto& e : kDTypes) {
    if (s == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Header parse_header(const uint8_t* data, size_t size, const std::string& src) {
  if (size < 8)
    fail(src, "truncated: " + std::to_string(size) +
                  " bytes, a safetensors file starts with an 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > size - 8)
    fail(src, "header length " + std::to_string(n) + " runs past the end of the file (" +
                  std::to_string(size) + " bytes)");
  if (n > kMaxHeaderBytes)
    fail(src, "header length " + std::to_string(n) + " exceeds the limit of " +
                  std::to_string(kMaxHeaderBytes) + " bytes");

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data + 8, data + 8 + n);
  } catch (const nlohmann::json::parse_error& e) {
    fail(src, "header is not valid JSON (parse error at header byte " + std::to_string(e.byte) + ")");
  } catch (const nlohmann::json::exception& e) {  // e.g. out_of_range: a number like 1e400
    fail(src, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail(src, "header is not a JSON object");

  Header h;
  h.data_start = 8 + n;
  const uint64_t data_bytes = size - h.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(src, "\"__metadata__\" is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(src, "\"__metadata__\" key '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_tensor(src, name, "entry is not an object");
    TensorInfo t;
    t.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail_tensor(src, name, "missing \"dtype\" string");
    if (!parse_dtype(dt->get<std::string>(), &t.dtype))
      fail_tensor(src, name, "unknown dtype '" + dt->get<std::string>() + "'");
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array())
      fail_tensor(src, name, "missing \"shape\" array");
    for (const auto& d : *sh) {
      // nlohmann parses every non-negative integer literal as number_unsigned.
      if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        fail_tensor(src, name, "shape must be an array of non-negative integers");
      t.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail_tensor(src, name, "\"data_offsets\" must be [begin, end] of non-negative integers");
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.end < t.begin)
      fail_tensor(src, name, "data_offsets " + range_str(t.begin, t.end) + " end before they begin");
    if (t.end > data_bytes)
      fail_tensor(src, name, "data_offsets " + range_str(t.begin, t.end) +
                                 " run past the end of the data section (" +
                                 std::to_string(data_bytes) + " bytes)");
    uint64_t need = 0;
    if (!byte_size(t.shape, dtype_size(t.dtype), &need))
      fail_tensor(src, name, "shape " + shape_str(t.shape) + " is too large");
    if (need != t.nbytes())
      fail_tensor(src, name, "data_offsets " + range_str(t.begin, t.end) + " hold " +
                                 std::to_string(t.nbytes()) + " bytes but " +
                                 dtype_name(t.dtype) + " " + shape_str(t.shape) + " needs " +
                                 std::to_string(need));
    h.tensors.push_back(std::move(t));
  }

  // The tensors must tile the data section: sorted by offset, no overlap, no hole, no tail.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : h.tensors) {
    if (t.begin < covered)
      fail_tensor(src, t.name, "data_offsets " + range_str(t.begin, t.end) + " overlap tensor '" +
                                   prev->name + "' " + range_str(prev->begin, prev->end));
    if (t.begin > covered)
      fail(src, "bytes [" + std::to_string(covered) + ", " + std::to_string(t.begin) +
                    ") of the data section belong to no tensor (before tensor '" + t.name + "')");
    covered = t.end;
    prev = &t;
  }
  if (covered != data_bytes)
    fail(src, "bytes [" + std::to_string(covered) + ", " + std::to_string(data_bytes) +
                  ") at the end of the data section belong to no tensor");
  return h;
}

// ---- File -------------------------------------------------------------------------------------

std::unique_ptr<File> File::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat s;
  if (::fstat(fd, &s) != 0 || !S_ISREG(s.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  std::unique_ptr<File> f(new File());
  f->path_ = path;
  f->size_ = static_cast<size_t>(s.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail(path, std::string("cannot map: ") + std::strerror(err));
    }
    f->base_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  static const uint8_t kEmpty[1] = {0};
  f->header_ = parse_header(f->base_ ? f->base_ : kEmpty, f->size_, path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->by_name_[f->header_.tensors[i].name] = i;
  return f;
}

File::~File() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

const TensorInfo* File::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

// ---- Reader -----------------------------------------------------------------------------------

namespace {

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail(path, "not valid JSON (parse error at byte " + std::to_string(e.byte) + ")");
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("not valid JSON (") + e.what() + ")");
  }
}

}  // namespace

Reader Reader::open(const std::string& path) {
  std::string target = path;
  if (is_dir(path)) {
    const std::string index = path + "/model.safetensors.index.json";
    const std::string single = path + "/model.safetensors";
    if (exists(index)) target = index;
    else if (exists(single)) target = single;
    else fail(path, "holds neither model.safetensors nor model.safetensors.index.json");
  }
  Reader r;
  r.source_ = target;
  if (!ends_with(target, ".json")) {
    r.files_.push_back(File::open(target));
    for (const auto& t : r.files_[0]->header().tensors) r.where_[t.name] = 0;
    return r;
  }

  // A sharded set: the index maps every tensor to a shard file beside it.
  const nlohmann::json idx = read_json_file(target);
  if (!idx.is_object()) fail(target, "not a JSON object");
  auto wm = idx.find("weight_map");
  if (wm == idx.end() || !wm->is_object()) fail(target, "missing \"weight_map\" object");
  const std::string dir = dirname_of(target);
  std::map<std::string, size_t> shard_index;  // shard file name -> files_ index
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string& name = it.key();
    if (!it.value().is_string())
      fail(target, "weight_map: tensor '" + name + "': shard is not a string");
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      fail(target, "weight_map: tensor '" + name + "': shard '" + shard +
                       "' is not a plain file name");
    auto s = shard_index.find(shard);
    if (s == shard_index.end()) {
      const std::string shard_path = dir + "/" + shard;
      if (!exists(shard_path))
        fail(target, "tensor '" + name + "' is in shard '" + shard + "', which does not exist (" +
                         shard_path + ")");
      r.files_.push_back(File::open(shard_path));
      s = shard_index.emplace(shard, r.files_.size() - 1).first;
    }
    r.where_[name] = s->second;
  }
  // Index and shards must agree exactly.
  for (const auto& [name, fi] : r.where_)
    if (!r.files_[fi]->find(name))
      fail(target, "tensor '" + name + "' is listed in shard '" +
                       r.files_[fi]->path().substr(dir.size() + 1) + "' but is not in it");
  for (const auto& f : r.files_)
    for (const auto& t : f->header().tensors) {
      auto w = r.where_.find(t.name);
      if (w == r.where_.end() || r.files_[w->second].get() != f.get())
        fail_tensor(f->path(), t.name, "is not listed for this shard in the index " + target);
    }
  return r;
}

std::vector<std::string> Reader::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  std::sort(out.begin(), out.end());
  return out;
}

TensorRef Reader::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(source_, "missing tensor '" + name + "'");
  const File& f = *files_[it->second];
  const TensorInfo* t = f.find(name);
  return TensorRef{t, f.data(*t), &f.path()};
}

// ---- writing ----------------------------------------------------------------------------------

uint64_t TensorToWrite::nbytes() const {
  uint64_t n = 0;
  if (!byte_size(shape, dtype_size(dtype), &n))
    throw SafetensorsError("tensor '" + name + "': shape " + shape_str(shape) + " is too large");
  return n;
}

namespace {

void write_file_impl(const std::string& path, const std::vector<TensorToWrite>& tensors,
                     const std::map<std::string, std::string>& metadata, uint64_t done_before,
                     uint64_t total, const WriteProgress& progress) {
  // Header: metadata first, then the tensors in the order given, laid out back to back.
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || !seen.insert(t.name).second)
      fail_tensor(path, t.name, "duplicate or reserved name");
    const uint64_t nb = t.nbytes();
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + nb}}};
    off += nb;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));

  // Written beside the target and renamed, so that a failed write never leaves a valid-looking file.
  const std::string tmp = path + ".partial";
  // Exclusive, no link followed (a link planted at the temporary's name is removed, not written
  // through), mode 0666 & ~umask.
  FILE* fp = nullptr;
  try {
    fp = ::fdopen(open_exclusive(tmp), "wb");
  } catch (const std::exception& e) {
    fail(path, e.what());
  }
  if (!fp) fail(path, std::string("cannot create: ") + std::strerror(errno));
  auto io_fail = [&](const std::string& what) {
    const int err = errno;
    std::fclose(fp);
    std::remove(tmp.c_str());
    fail(path, what + ": " + std::strerror(err));
  };
  if (std::fwrite(len, 1, 8, fp) != 8 || std::fwrite(header.data(), 1, header.size(), fp) != header.size())
    io_fail("cannot write the header");
  std::vector<uint8_t> scratch;
  uint64_t done = done_before;
  for (const auto& t : tensors) {
    const uint64_t nb = t.nbytes();
    const void* src = t.data;
    if (t.fill) {
      scratch.resize(nb);
      t.fill(scratch.data());
      src = scratch.data();
    } else if (!src && nb > 0) {
      std::fclose(fp);
      std::remove(tmp.c_str());
      fail_tensor(path, t.name, "no data to write");
    }
    if (nb > 0 && std::fwrite(src, 1, nb, fp) != nb) io_fail("cannot write tensor '" + t.name + "'");
    done += nb;
    if (progress) progress(done, total);
  }
  if (std::fflush(fp) != 0 || ::fsync(fileno(fp)) != 0) io_fail("cannot flush");
  if (std::fclose(fp) != 0) {
    std::remove(tmp.c_str());
    fail(path, std::string("cannot close: ") + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    fail(path, std::string("cannot rename into place: ") + std::strerror(err));
  }
}

}  // namespace

void write_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata, const WriteProgress& progress) {
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.nbytes();
  write_file_impl(path, tensors, metadata, 0, total, progress);
}

std::vector<std::string> write_sharded(const std::string& dir,
                                       const std::vector<TensorToWrite>& tensors,
                                       uint64_t max_shard_bytes,
                                       const std::map<std::string, std::string>& metadata,
                                       const WriteProgress& progress) {
  if (max_shard_bytes == 0) fail(dir, "max_shard_bytes must be > 0");
  if (!is_dir(dir)) fail(dir, "not a directory");
  // Plan the shards: greedy in order, as transformers' save_pretrained does.
  std::vector<std::vector<const TensorToWrite*>> shards(1);
  uint64_t in_shard = 0, total = 0;
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || !seen.insert(t.name).second)
      fail_tensor(dir, t.name, "duplicate or reserved name");
    const uint64_t nb = t.nbytes();
    if (!shards.back().empty() && in_shard + nb > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += nb;
    total += nb;
  }
  const size_t n = shards.size();
  std::vector<std::string> names;
  if (n == 1) {
    names.push_back("model.safetensors");
  } else {
    for (size_t i = 0; i < n; ++i) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
      names.push_back(buf);
    }
  }
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t done = 0;
  for (size_t i = 0; i < n; ++i) {
    std::vector<TensorToWrite> part;
    uint64_t bytes = 0;
    for (const auto* t : shards[i]) {
      part.push_back(*t);
      bytes += t->nbytes();
      weight_map[t->name] = names[i];
    }
    write_file_impl(dir + "/" + names[i], part, metadata, done, total, progress);
    done += bytes;
  }
  if (n > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    const std::string path = dir + "/model.safetensors.index.json";
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << index.dump(2) << "\n";
    out.close();
    if (!out) fail(path, "cannot write the index");
    names.push_back("model.safetensors.index.json");
  }
  return names;
}

}  // namespace xy::st
