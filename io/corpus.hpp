// Reading JSONL corpora (plain or gzip) and packing their tokens into fixed-length samples.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace xy {

class Tokenizer;

struct CorpusStats {
  int64_t lines = 0;       // lines read
  int64_t documents = 0;   // documents with a usable text
  int64_t skipped = 0;     // malformed / missing-field / empty lines
  int64_t tokens = 0;      // tokens produced (including BOS/EOS)
  std::string first_problem;  // "file:line: what" of the first skipped line, empty if none
};

// Calls `fn(text)` for the `text_field` string of every JSON object line of each file (.jsonl,
// .json, .jsonl.gz, .json.gz). Malformed lines are counted in stats (never thrown); an unreadable
// or truncated file throws std::runtime_error naming it. Blank lines count in `lines` only.
// `stats` (may be null) is added to, not reset, so one CorpusStats can span several calls.
void for_each_document(const std::vector<std::string>& files, const std::string& text_field,
                       const std::function<void(const std::string&)>& fn, CorpusStats* stats);

// Tokenizes every document as BOS + ids + EOS and concatenates them (packing mode `concat`).
std::vector<int32_t> tokenize_corpus(const std::vector<std::string>& files,
                                     const std::string& text_field, const Tokenizer& tok,
                                     CorpusStats* stats);

// Cuts a token stream into samples of seq_len + 1 tokens (inputs and shifted labels), no padding;
// the tail that does not fill a sample is dropped. Returns the number of samples.
inline int64_t sample_count(int64_t tokens, int64_t seq_len) {
  return seq_len > 0 ? (tokens - 1) / seq_len : 0;
}

// Writes/reads a flat token cache: a small header (magic "XYTOK1\0\0", int64 vocab, int64 count)
// + uint32 ids, little-endian. Writing goes through a temporary file renamed into place; both
// throw std::runtime_error naming the file (ids outside [0, vocab), bad magic, truncation).
void write_token_file(const std::string& path, const std::vector<int32_t>& ids, int64_t vocab);
std::vector<int32_t> read_token_file(const std::string& path, int64_t* vocab);

}  // namespace xy
