// The tokenizer interface: SentencePiece (`.model`) or byte-level BPE read from a Hugging Face
// tokenizer.json (Llama-3.x, Qwen3; io/bpe_tokenizer.hpp), picked by Tokenizer::load.
//
// SentencePiece is loaded into its own link namespace: Debian's libsentencepiece carries a private protobuf that clashes with LibTorch's (a crash before
// main when both are linked into one executable). So the SentencePiece calls live in a small shared
// module with a C interface (xy_spm, io/spm_shim.cpp), which this class loads with
// dlmopen(LM_ID_NEWLM): it gets its own copy of protobuf and never meets LibTorch's. Only plain C
// types cross that boundary. The module is looked up next to the running executable, then in
// XY_SPM_MODULE (environment), then at the build-time path.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace xy {

class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Tokenizer {
 public:
  // Loads a tokenizer: byte-level BPE when `path` ends with `.json` or is a directory holding a
  // tokenizer.json, else a SentencePiece model file. Throws TokenizerError naming the file.
  static std::unique_ptr<Tokenizer> load(const std::string& path);

  // The file that defines the tokenizer `path` names (what load reads; hashed and sized by
  // preprocess and the token cache): `path`/tokenizer.json for a directory, else `path`.
  static std::string file_of(const std::string& path);

  // Trains a BPE model with byte fallback from a text file (one sentence per line) and writes
  // `<prefix>.model` and `<prefix>.vocab`. Throws TokenizerError with SentencePiece's message.
  // Llama-2-like: unk/bos/eos = 0/1/2, no pad, digits split, no normalisation (decode(encode(x))
  // == x), character coverage 0.9995, at most 2,000,000 lines sampled. The vocabulary must hold
  // the characters covering 99.95% of the text plus 259 byte/special pieces: ~6,000 for the
  // Chinese sample corpus, so a tiny vocab is refused. `text_file` must not contain ','.
  static void train(const std::string& text_file, const std::string& prefix, int64_t vocab_size,
                    int threads = 2);

  virtual ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // encode/decode/ids may be called from several threads at once. decode throws TokenizerError
  // for an id outside [0, vocab_size()). Ids are below vocab_size(), which is at most 2^31.
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;  // no BOS/EOS added
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the model has none
  virtual int32_t eos_id() const = 0;
  const std::string& path() const { return path_; }  // the file read (file_of)

 protected:
  Tokenizer() = default;
  std::string path_;
};

}  // namespace xy
