// Training samples read from the memory-mapped token shards of `xy-node preprocess`.
//
// The shards of one directory form one global token stream (see io/shard_format.hpp); sample i is
// tokens [i*L, i*L + L + 1) of that stream for L = seq_len, exactly as TokenSamples cuts an
// in-memory stream, and may straddle two shards. Packing `llm-code` pads groups of documents to a
// multiple of the preprocessing seq_len, so its samples never straddle a group: there L must
// divide that seq_len, the stream holds T/L samples (the label after the very last token is an
// EOS pad, masked like every EOS), and masked_label() is EOS.
//
// Memory: the shards are mapped read-only (MAP_SHARED), their fds closed at once, so the process
// holds no fd per shard and the page cache holds what was touched. copy_sample is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/samples.hpp"

namespace xy {

class ShardError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What manifest.json says about a shard set (the fields the loader and the trainer need).
struct ShardManifest {
  std::string dir;
  std::string packing;            // "concat" or "llm-code"
  int64_t seq_len = 0;            // llm-code: the length groups are padded to; 0 for concat
  int64_t vocab = 0;
  int32_t bos_id = -1, eos_id = -1;
  std::string tokenizer_path;     // as given to preprocess
  std::string tokenizer_sha256;
  int64_t token_bytes = 0;
  int64_t shard_tokens = 0;
  int64_t tokens = 0, documents = 0;
  std::vector<int64_t> shard_sizes;  // tokens per shard
};

// Reads <dir>/manifest.json. Throws ShardError naming the file; a directory with a
// preprocess.state but no manifest gets "preprocessing is not finished".
ShardManifest read_manifest(const std::string& dir);
// The same from the manifest's text (`path` names it in errors): every field type- and
// range-checked, so that no later size computation overflows. No I/O (fuzzed:
// tests/fuzz/shard_fuzz.cpp).
ShardManifest parse_manifest(const std::string& text, const std::string& path);

// What the manifest says shard `index` must be.
struct ShardExpect {
  int64_t index = 0, first_token = 0, tokens = 0, token_bytes = 2;
};
// The header and size of one shard file (`size` bytes at `data`) against the manifest: "" when
// they agree, else what is wrong. Sizes use checked arithmetic. No I/O (fuzzed).
std::string shard_header_problem(const unsigned char* data, size_t size, const ShardExpect& want);
// Reads a whole shard whose header passed shard_header_problem: the CRC-32 of every byte after
// the header against the header's, then every token id against the vocabulary. "" when both
// hold, else what is wrong (both CRCs, or the first bad id with its byte offset). No I/O (fuzzed).
std::string shard_data_problem(const unsigned char* data, size_t size, int64_t vocab);

class ShardSamples : public SampleSource {
 public:
  // Maps every shard of `dir` and checks each header and size against the manifest; with
  // `verify`, also each shard's CRC-32 and that every id is below the vocabulary (reads it all,
  // on up to 8 threads; training always verifies: see docs/DATA.md for its cost).
  // Throws ShardError naming the shard file and what is wrong: missing/short/corrupt shard, a
  // bad id, or a seq_len that llm-code packing forbids.
  static std::shared_ptr<ShardSamples> open(const std::string& dir, int64_t seq_len,
                                            bool verify = false);
  double verify_seconds() const { return verify_s_; }  // what `verify` took
  ~ShardSamples() override;
  ShardSamples(const ShardSamples&) = delete;
  ShardSamples& operator=(const ShardSamples&) = delete;

  int64_t size() const override { return count_; }
  int64_t seq_len() const override { return seq_len_; }
  int64_t vocab() const override { return manifest_.vocab; }
  void copy_sample(int64_t i, int64_t* out) const override;
  int32_t masked_label() const override { return llm_code_ ? manifest_.eos_id : -1; }

  const ShardManifest& manifest() const { return manifest_; }
  // Token at global position t (t < manifest().tokens).
  int32_t token(int64_t t) const;

 private:
  ShardSamples() = default;
  struct Mapped {
    void* base = nullptr;
    size_t bytes = 0;
    const unsigned char* tokens = nullptr;
    int64_t count = 0;
  };
  ShardManifest manifest_;
  std::vector<Mapped> maps_;
  int64_t seq_len_ = 0, count_ = 0;
  bool llm_code_ = false;
  double verify_s_ = 0;
};

}  // namespace xy
