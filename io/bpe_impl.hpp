// The inside of xy::BpeTokenizer, shared by its loader (bpe_tokenizer.cpp) and its encoder
// (bpe_encode.cpp). Not for other files.
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/bpe_tokenizer.hpp"

namespace xy {
namespace bpe {

// (left id, right id) -> (rank, merged id): open addressing, linear probing. A pair given twice in
// the merges takes the later rank, as `tokenizers` (a map filled in order) does.
class MergeTable {
 public:
  void reserve(size_t pairs);
  void put(int32_t a, int32_t b, uint32_t rank, int32_t merged);
  // Returns the rank (UINT32_MAX when the pair is not a merge) and sets *merged.
  uint32_t get(int32_t a, int32_t b, int32_t* merged) const {
    const uint64_t key = pair_key(a, b);
    for (uint64_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) {
        *merged = s.merged;
        return s.rank;
      }
      if (s.key == kEmpty) return UINT32_MAX;
    }
  }
  size_t size() const { return used_; }

 private:
  struct Slot {
    uint64_t key;
    uint32_t rank;
    int32_t merged;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static uint64_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
  }
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  size_t used_ = 0;
};

// A compiled pre-tokenizer regex (PCRE2, JIT when the platform has it).
struct Regex {
  std::string source;  // as tokenizer.json writes it (Oniguruma syntax)
  pcre2_code* code = nullptr;
  bool jit = false;
  Regex() = default;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

struct AddedToken {
  std::string content;
  std::string match;  // what is looked for: content, or its NFC when normalized = true under NFC
  int32_t id = -1;
  bool lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest matching of a set of added tokens (the Aho-Corasick automaton of `tokenizers`,
// MatchKind::LeftmostLongest, done by first byte: added tokens are few).
struct AddedSet {
  std::vector<std::vector<int>> by_first;  // 256 lists of token indices, longest first
  bool empty = true;
  void build(const std::vector<AddedToken>& tokens, bool normalized);
};

// One pre-tokenizer step: Split(Regex, Isolated) or ByteLevel (last).
struct Step {
  bool byte_level = false;
  bool add_prefix_space = false;  // ByteLevel
  const Regex* regex = nullptr;   // Split's, or ByteLevel's GPT-2 regex when use_regex; may be null
};

}  // namespace bpe

struct BpeTokenizer::Impl {
  std::string file;
  uint64_t instance = 0;  // tells this tokenizer's per-thread cache apart from another's

  // By id: the token's string as in tokenizer.json, its bytes when decoded, and what it is.
  enum Kind : uint8_t { kNone = 0, kModel = 1, kAdded = 2, kSpecial = 3 };
  std::vector<std::string> token_str, token_bytes;
  std::vector<uint8_t> kind;

  // Model tokens by their bytes (views into token_bytes, filled once it is complete).
  std::unordered_map<std::string_view, int32_t> raw_vocab;
  int32_t byte_id[256];                                 // the token of each single byte
  bpe::MergeTable merges;
  bool ignore_merges = false;

  bool nfc = false;
  std::vector<bpe::AddedToken> added;
  bpe::AddedSet raw_added, normalized_added;
  std::vector<bpe::Step> steps;
  std::vector<std::unique_ptr<bpe::Regex>> regexes;

  int32_t bos = -1, eos = -1;
  int64_t vocab_size = 0;

  void encode(std::string_view text, std::vector<int32_t>& out) const;  // bpe_encode.cpp
};

namespace bpe {
// Compiles `pattern` (Oniguruma syntax, onig_to_pcre2); on failure returns null and sets *error.
std::unique_ptr<Regex> compile_regex(const std::string& pattern, std::string* error);
// GPT-2's pre-tokenizer regex (ByteLevel's use_regex).
extern const char* const kGpt2Regex;
// A number no other BpeTokenizer of the process has (the per-thread caches' owner).
uint64_t next_instance();
}  // namespace bpe

}  // namespace xy
