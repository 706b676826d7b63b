// Turns the configured corpus into training samples: trains or loads the tokenizer, tokenizes the
// JSONL inputs (BOS + ids + EOS per document, concatenated) and caches the token stream in the
// work directory, so that the next run starts at once.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "io/config.hpp"
#include "io/manifest.hpp"
#include "io/samples.hpp"

namespace xy {

struct PreparedData {
  std::shared_ptr<const SampleSource> samples;
  std::string tokenizer_path;
  int64_t vocab = 0;        // tokenizer's vocabulary size
  int64_t documents = 0;
  int64_t tokens = 0;
  int32_t eos_id = -1;      // the token that ends every document (for eval.holdout)
  TokenizerRecord tokenizer;  // what checkpoint manifests record (xy-node export reads it)
};

// Files written under cfg.data.work_dir: tokenizer.model/.vocab (when trained), corpus.txt (the
// tokenizer's training text), tokens.bin and tokens.json (the cache and what it was made from).
// Progress and counts go to `log`. Throws std::runtime_error naming the file on failure.
PreparedData prepare_data(const Config& cfg, std::ostream& log);

// One held-out set of eval.sets ("name=path").
struct EvalSet {
  std::string name, path;
  std::shared_ptr<const SampleSource> samples;
};

// The sets of eval.sets: a JSONL file is tokenized with `tokenizer_path` (BOS + ids + EOS per
// document, as the training data); a directory is opened as preprocess shards (verified; they must
// have been made with the same tokenizer). Every set must hold at least one sample of
// data.seq_len tokens. Throws std::runtime_error naming the set, its path and eval.sets.
std::vector<EvalSet> prepare_eval_sets(const Config& cfg, const std::string& tokenizer_path,
                                       std::ostream& log);

}  // namespace xy
