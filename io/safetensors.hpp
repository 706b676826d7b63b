// Reading and writing safetensors files (Hugging Face's tensor format), single and sharded, without
// LibTorch: the format layer under model/hf_io.
//
// The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<string>"}}   (metadata optional)
// (the writer pads it with spaces to a multiple of 8 bytes), then the data section: every tensor's
// raw little-endian row-major bytes at [begin, end) relative to the section's start. Like the
// reference implementation, the reader requires the tensors to cover the data section exactly
// (sorted by offset, no overlap, no hole, nothing after the last), and end - begin to equal
// numel * dtype size. A sharded set is several such files plus `model.safetensors.index.json`
// ({"metadata": {"total_size": bytes}, "weight_map": {"<name>": "<shard file>"}}).
//
// Errors: every problem throws SafetensorsError whose message starts with the file and, where one
// is involved, names the tensor, e.g.
//   model.safetensors: tensor 'lm_head.weight': data_offsets [0, 24] hold 24 bytes but F32 [2, 4]
//   needs 32
// Nothing is ever half-loaded: a reader exists only once every header has been validated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace xy::st {

class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType { kBool, kU8, kI8, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kI64, kU64, kF64,
                   kF8_E4M3, kF8_E5M2 };

size_t dtype_size(DType d);            // bytes per element
const char* dtype_name(DType d);       // "F32", "BF16", ...
bool parse_dtype(const std::string& s, DType* out);  // false for an unknown name

// One tensor of a header. begin/end are byte offsets relative to the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct Header {
  std::vector<TensorInfo> tensors;            // sorted by begin
  std::map<std::string, std::string> metadata;  // "__metadata__", empty when absent
  uint64_t data_start = 0;                    // 8 + N: where the data section starts in the file
};

// Largest header accepted (the reference implementation's limit).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

// Parses and validates the header of a whole file's bytes [data, data + size). `source` (the file
// name) starts every error message. Validates everything the reader relies on, so that the data of
// every returned tensor lies inside the buffer. This is the fuzzed entry point.
Header parse_header(const uint8_t* data, size_t size, const std::string& source);

// One safetensors file, memory-mapped read-only for the lifetime of the object.
class File {
 public:
  // Maps and validates `path`. Throws SafetensorsError.
  static std::unique_ptr<File> open(const std::string& path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr when absent
  // The tensor's bytes (nbytes() of them) inside the mapping; valid while this File lives.
  const uint8_t* data(const TensorInfo& t) const { return base_ + header_.data_start + t.begin; }

 private:
  File() = default;
  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  Header header_;
  std::unordered_map<std::string, size_t> by_name_;
};

// A tensor found by Reader::get: its description, bytes and the file that holds it.
struct TensorRef {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;
  const std::string* file = nullptr;
};

// A checkpoint: one safetensors file or a sharded set. Read-only, safe to use from several threads.
class Reader {
 public:
  // `path` is a .safetensors file, an index .json, or a directory holding model.safetensors or
  // model.safetensors.index.json (the index wins when both exist). Every file is opened and
  // validated here; the index must name only plain file names that exist beside it, and every
  // tensor it lists must be in its shard. Throws SafetensorsError.
  static Reader open(const std::string& path);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  // Throws SafetensorsError "<source>: missing tensor '<name>'" when absent.
  TensorRef get(const std::string& name) const;
  const std::string& source() const { return source_; }  // the file or index opened
  const std::vector<std::unique_ptr<File>>& files() const { return files_; }

 private:
  std::string source_;
  std::vector<std::unique_ptr<File>> files_;
  std::unordered_map<std::string, size_t> where_;  // name -> index into files_
};

// ---- writing ----------------------------------------------------------------------------------

// A tensor to write. Its bytes come either from `data` (nbytes() of them) or, when `fill` is set,
// from fill(dst), which must write exactly nbytes() bytes to dst (so that a converted copy of a
// large tensor need exist only while it is written).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::function<void(void* dst)> fill;
  uint64_t nbytes() const;
};

// Called after each tensor is written: bytes written so far, bytes in all.
using WriteProgress = std::function<void(uint64_t done, uint64_t total)>;

// Writes one safetensors file (tensors in the given order, header padded to 8 bytes).
// Throws SafetensorsError naming the file on a duplicate name or an I/O error.
void write_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata = {},
                const WriteProgress& progress = {});

// Writes `tensors` into `dir` (which must exist) the way Hugging Face does: when they fit in one
// shard of at most max_shard_bytes of data, `model.safetensors`; otherwise
// `model-0000i-of-0000n.safetensors` (a new shard starts when the next tensor would pass the
// limit; a tensor larger than the limit gets a shard of its own) plus
// `model.safetensors.index.json`. Returns the file names written. max_shard_bytes must be > 0.
std::vector<std::string> write_sharded(const std::string& dir,
                                       const std::vector<TensorToWrite>& tensors,
                                       uint64_t max_shard_bytes,
                                       const std::map<std::string, std::string>& metadata = {},
                                       const WriteProgress& progress = {});

}  // namespace xy::st
