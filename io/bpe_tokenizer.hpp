// Byte-level BPE read from a Hugging Face tokenizer.json (Llama-3.x, Qwen3, GPT-2 style), with the
// `tokenizers` library's semantics, so that the ids are those the model was trained on:
//
//   1. added tokens are cut out of the raw text first (leftmost-longest; normalized = false tokens
//      on the raw text, lstrip/rstrip honoured), then each remaining segment is
//   2. normalized (none or NFC, utf8proc), and normalized = true added tokens cut out of it,
//   3. pre-tokenized: Split(Regex, Isolated) and ByteLevel (optional prefix space, optional GPT-2
//      regex), the regexes run by PCRE2 (JIT) with Oniguruma's `\s`,
//   4. each pre-token's bytes go through BPE: the lowest-ranked adjacent pair is merged first, the
//      leftmost of equal ranks (O(n log n) for long words: a Chinese run is one pre-token), with
//      `ignore_merges` (a pre-token that is itself in the vocabulary is one token).
//
// Everything is done on raw bytes: the vocabulary's byte-level strings (GPT-2's bytes_to_unicode,
// "Ġ" for a space) are mapped back to bytes once, at load. Anything the file asks for that this
// does not do is refused at load, naming the file, the JSON key path and the value
// (`tokenizer.json: model.type: "Unigram" is not supported (byte-level BPE only)`).
// Results are cached per pre-token and thread; encode may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer.hpp"

namespace xy {

class BpeTokenizer final : public Tokenizer {
 public:
  // Loads and validates `file` (a tokenizer.json). Throws TokenizerError naming it.
  static std::unique_ptr<BpeTokenizer> load_json(const std::string& file);
  ~BpeTokenizer() override;

  // Throws TokenizerError for text that is not valid UTF-8.
  std::vector<int32_t> encode(const std::string& text) const override;
  // The tokens' bytes concatenated (added tokens: their content), invalid UTF-8 replaced by U+FFFD
  // as `tokenizers` does.
  std::string decode(const std::vector<int32_t>& ids) const override;
  // The largest id + 1 (vocabulary and added tokens).
  int64_t vocab_size() const override;
  // The base models' document separators: bos <|begin_of_text|> (Llama-3) or none; eos
  // <|end_of_text|> (Llama-3), else <|endoftext|> (Qwen, GPT-2), else none.
  int32_t bos_id() const override;
  int32_t eos_id() const override;

  // The token's string as tokenizer.json writes it (byte-level form, e.g. "Ġthe"); empty for an id
  // no token has. Whether the id is an added token, and a special one.
  const std::string& token(int32_t id) const;
  bool is_added(int32_t id) const;
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  BpeTokenizer();
  std::unique_ptr<Impl> impl_;
};

namespace bpe {

// NFC of valid UTF-8 (utf8proc), with a fast path for text whose characters NFC leaves alone
// whatever their neighbours (ASCII, CJK, Hangul syllables, ...).
std::string nfc(std::string_view s);
// Whether NFC leaves the code point alone whatever its neighbours (the fast path), and whether
// every code point of `s` is such.
bool nfc_inert(uint32_t cp);
bool nfc_is_identity(std::string_view s);
// An Oniguruma regex (what `tokenizers` compiles) rewritten for PCRE2: `\s` becomes Oniguruma's
// Unicode whitespace (PCRE2's also holds U+180E).
std::string onig_to_pcre2(const std::string& pattern);
// GPT-2's byte -> character map (bytes_to_unicode), as UTF-8.
const std::string& byte_char(uint8_t b);
// `s` with each ill-formed UTF-8 sequence replaced by U+FFFD, as Rust's String::from_utf8_lossy.
std::string utf8_lossy(std::string_view s);
// The byte offset of the first ill-formed UTF-8 sequence, or npos.
size_t invalid_utf8_at(std::string_view s);

}  // namespace bpe
}  // namespace xy
