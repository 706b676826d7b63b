// xy::Tokenizer: SentencePiece through the libxy_spm.so module, loaded into its own link namespace,
// and the choice between it and byte-level BPE (io/bpe_tokenizer.hpp).
#include "io/tokenizer.hpp"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "io/bpe_tokenizer.hpp"

namespace xy {
namespace {

constexpr const char* kModuleName = "libxy_spm.so";
constexpr int32_t kAbiVersion = 1;  // XY_SPM_ABI_VERSION in io/spm_shim.cpp
constexpr size_t kErrLen = 1024;

// The module's C interface; these types must match io/spm_shim.cpp.
using AbiVersionFn = int32_t (*)();
using LoadFn = void* (*)(const char* path, char* err, size_t err_len);
using FreeFn = void (*)(void* h);
using EncodeFn = int64_t (*)(const void* h, const char* text, size_t len, int32_t* out, size_t cap,
                             char* err, size_t err_len);
using DecodeFn = int64_t (*)(const void* h, const int32_t* ids, size_t n, char* out, size_t cap,
                             char* err, size_t err_len);
using IdFn = int32_t (*)(const void* h);
using TrainFn = int (*)(const char* args, char* err, size_t err_len);

// The loaded module; constant after construction, never unloaded (dlclose of a dlmopen'ed
// namespace at exit is a known source of trouble and buys nothing).
struct SpmModule {
  std::string path;
  LoadFn load = nullptr;
  FreeFn free = nullptr;
  EncodeFn encode = nullptr;
  DecodeFn decode = nullptr;
  IdFn vocab_size = nullptr;
  IdFn bos_id = nullptr;
  IdFn eos_id = nullptr;
  TrainFn train = nullptr;
};

std::string exe_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  std::string exe(buf, static_cast<size_t>(n));
  const size_t slash = exe.rfind('/');
  return slash == std::string::npos ? std::string() : exe.substr(0, slash);
}

template <typename Fn>
Fn symbol(void* lib, const std::string& path, const char* name) {
  dlerror();
  void* p = dlsym(lib, name);
  if (p == nullptr) {
    const char* e = dlerror();
    throw TokenizerError("SentencePiece module " + path + " lacks " + name + ": " +
                         (e ? e : "null symbol"));
  }
  return reinterpret_cast<Fn>(p);
}

// Finds and loads the module: next to the executable, then $XY_SPM_MODULE, then the build path.
// Throws TokenizerError listing every path tried and why it failed.
SpmModule load_module() {
  std::vector<std::pair<std::string, std::string>> candidates;  // (path, where it came from)
  const std::string dir = exe_dir();
  if (!dir.empty()) candidates.emplace_back(dir + "/" + kModuleName, "next to the executable");
  if (const char* env = std::getenv("XY_SPM_MODULE"); env != nullptr && *env != '\0')
    candidates.emplace_back(env, "XY_SPM_MODULE");
#ifdef XY_SPM_BUILD_PATH
  candidates.emplace_back(XY_SPM_BUILD_PATH, "build path");
#endif

  std::ostringstream tried;
  for (const auto& [path, origin] : candidates) {
    if (::access(path.c_str(), F_OK) != 0) {
      tried << "\n  " << path << " (" << origin << "): " << std::strerror(errno);
      continue;
    }
    // Its own link namespace: SentencePiece's protobuf must not bind to (or be bound by) LibTorch's.
    void* lib = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* e = dlerror();
      tried << "\n  " << path << " (" << origin << "): " << (e ? e : "dlmopen failed");
      continue;
    }
    SpmModule m;
    m.path = path;
    const auto version = symbol<AbiVersionFn>(lib, path, "xy_spm_abi_version")();
    if (version != kAbiVersion) {
      tried << "\n  " << path << " (" << origin << "): interface version " << version
            << ", this program needs " << kAbiVersion;
      continue;  // a stale module; the namespace stays loaded but unused
    }
    m.load = symbol<LoadFn>(lib, path, "xy_spm_load");
    m.free = symbol<FreeFn>(lib, path, "xy_spm_free");
    m.encode = symbol<EncodeFn>(lib, path, "xy_spm_encode");
    m.decode = symbol<DecodeFn>(lib, path, "xy_spm_decode");
    m.vocab_size = symbol<IdFn>(lib, path, "xy_spm_vocab_size");
    m.bos_id = symbol<IdFn>(lib, path, "xy_spm_bos_id");
    m.eos_id = symbol<IdFn>(lib, path, "xy_spm_eos_id");
    m.train = symbol<TrainFn>(lib, path, "xy_spm_train");
    return m;
  }
  throw TokenizerError(std::string("SentencePiece module ") + kModuleName +
                       " could not be loaded; tried:" + tried.str() +
                       "\n  (build target xy_spm, or point XY_SPM_MODULE at the file)");
}

// Loaded once per process on first use (thread-safe static initialisation). A failed load throws
// and is retried by the next call.
const SpmModule& spm() {
  static const SpmModule module = load_module();
  return module;
}

// A SentencePiece model through the module.
class SpmTokenizer final : public Tokenizer {
 public:
  SpmTokenizer(void* handle, const std::string& path) : handle_(handle) { path_ = path; }
  ~SpmTokenizer() override;
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return spm().vocab_size(handle_); }
  int32_t bos_id() const override { return spm().bos_id(handle_); }
  int32_t eos_id() const override { return spm().eos_id(handle_); }

 private:
  void* handle_ = nullptr;  // the shim's opaque processor
};

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string Tokenizer::file_of(const std::string& path) {
  if (!is_directory(path)) return path;
  return path + (ends_with(path, "/") ? "" : "/") + "tokenizer.json";
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  if (is_directory(path)) {
    const std::string file = file_of(path);
    if (::access(file.c_str(), F_OK) != 0)
      throw TokenizerError("tokenizer '" + path + "' is a directory without a tokenizer.json (" +
                           std::strerror(errno) + "); give a tokenizer.json, its directory or a "
                           "SentencePiece .model file");
    return BpeTokenizer::load_json(file);
  }
  if (ends_with(path, ".json")) return BpeTokenizer::load_json(path);
  const SpmModule& m = spm();
  char err[kErrLen] = {0};
  void* h = m.load(path.c_str(), err, sizeof(err));
  if (h == nullptr)
    throw TokenizerError("cannot load SentencePiece model '" + path + "': " + err);
  return std::make_unique<SpmTokenizer>(h, path);
}

void Tokenizer::train(const std::string& text_file, const std::string& prefix, int64_t vocab_size,
                      int threads) {
  // SentencePiece reads `input` as a comma-separated list of files.
  if (text_file.find(',') != std::string::npos || text_file.find('\n') != std::string::npos)
    throw TokenizerError("cannot train on '" + text_file + "': the path must not contain ',' or a newline");
  if (prefix.find('\n') != std::string::npos)
    throw TokenizerError("cannot train to '" + prefix + "': the prefix must not contain a newline");
  if (::access(text_file.c_str(), R_OK) != 0)
    throw TokenizerError("cannot train on '" + text_file + "': " + std::strerror(errno));
  if (threads < 1) threads = 1;

  // Like Llama-2's tokenizer: BPE with byte fallback (no <unk> for text never seen), digits split,
  // no normalisation and whitespace kept as is so that decode(encode(x)) == x, unk/bos/eos = 0/1/2
  // and no pad piece.
  std::ostringstream args;
  args << "input=" << text_file << "\n"
       << "model_prefix=" << prefix << "\n"
       << "vocab_size=" << vocab_size << "\n"
       << "model_type=bpe\n"
       << "byte_fallback=true\n"
       << "character_coverage=0.9995\n"
       << "split_digits=true\n"
       << "normalization_rule_name=identity\n"
       << "remove_extra_whitespaces=false\n"
       << "allow_whitespace_only_pieces=true\n"
       << "unk_id=0\nbos_id=1\neos_id=2\npad_id=-1\n"
       << "num_threads=" << threads << "\n"
       << "input_sentence_size=2000000\n"  // lines sampled (reservoir) from a larger input
       << "shuffle_input_sentence=true\n"
       << "minloglevel=2\n";
  char err[kErrLen] = {0};
  if (spm().train(args.str().c_str(), err, sizeof(err)) != 0)
    throw TokenizerError("training SentencePiece on '" + text_file + "' (vocab " +
                         std::to_string(vocab_size) + ") failed: " + err);
}

Tokenizer::~Tokenizer() = default;

SpmTokenizer::~SpmTokenizer() {
  if (handle_ != nullptr) spm().free(handle_);
}

std::vector<int32_t> SpmTokenizer::encode(const std::string& text) const {
  const SpmModule& m = spm();
  char err[kErrLen] = {0};
  // Chinese runs ~1 token per 3-6 bytes, English ~1 per 3-4; byte fallback can reach 1 per byte:
  // start at len/2 and ask again with the exact size in the rare case it does not fit.
  std::vector<int32_t> ids(text.size() / 2 + 16);
  int64_t n = m.encode(handle_, text.data(), text.size(), ids.data(), ids.size(), err, sizeof(err));
  if (n > static_cast<int64_t>(ids.size())) {
    ids.resize(static_cast<size_t>(n));
    n = m.encode(handle_, text.data(), text.size(), ids.data(), ids.size(), err, sizeof(err));
  }
  if (n < 0 || n > static_cast<int64_t>(ids.size()))
    throw TokenizerError("encoding with '" + path_ + "' failed: " + err);
  ids.resize(static_cast<size_t>(n));
  return ids;
}

std::string SpmTokenizer::decode(const std::vector<int32_t>& ids) const {
  const SpmModule& m = spm();
  char err[kErrLen] = {0};
  std::string text(ids.size() * 4 + 16, '\0');
  int64_t n = m.decode(handle_, ids.data(), ids.size(), text.data(), text.size(), err, sizeof(err));
  if (n > static_cast<int64_t>(text.size())) {
    text.resize(static_cast<size_t>(n));
    n = m.decode(handle_, ids.data(), ids.size(), text.data(), text.size(), err, sizeof(err));
  }
  if (n < 0 || n > static_cast<int64_t>(text.size()))
    throw TokenizerError("decoding with '" + path_ + "' failed: " + err);
  text.resize(static_cast<size_t>(n));
  return text;
}

}  // namespace xy
