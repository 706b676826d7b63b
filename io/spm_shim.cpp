// The SentencePiece shim: a C interface around SentencePiece, built as the module libxy_spm.so.
//
// xy::Tokenizer (io/tokenizer.cpp) loads this module with dlmopen(LM_ID_NEWLM) so that
// SentencePiece's private protobuf never meets LibTorch's (see io/tokenizer.hpp, PLATFORM.md).
// The module has its own copies of libc++/libc, so only plain C types cross the boundary: no
// std::string, no exceptions, no memory allocated on one side and freed on the other. Every entry
// point catches everything; errors are a return value plus a message copied into the caller's
// buffer. Keep the signatures in step with the function-pointer types in io/tokenizer.cpp and bump
// XY_SPM_ABI_VERSION when they change.
//
// Threads: a loaded processor is immutable; xy_spm_encode/decode/ids may be called on one handle
// from several threads at once (SentencePieceProcessor::Encode/Decode are const and keep no
// per-call state in the object). xy_spm_load/free/train are not to race with use of the same handle.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

#define XY_SPM_ABI_VERSION 1

namespace {

// Copies `msg` into `buf` (NUL-terminated, cut to fit). Accepts a null or empty buffer.
void set_error(char* buf, size_t len, const std::string& msg) {
  if (buf == nullptr || len == 0) return;
  const size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
  std::memcpy(buf, msg.data(), n);
  buf[n] = '\0';
}

const sentencepiece::SentencePieceProcessor* processor(const void* h) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(h);
}

}  // namespace

extern "C" {

// The interface revision; io/tokenizer.cpp refuses a module with another one.
__attribute__((visibility("default"))) int32_t xy_spm_abi_version(void) { return XY_SPM_ABI_VERSION; }

// Loads a model file. Returns an opaque handle (free it with xy_spm_free), or null with the
// reason in err.
__attribute__((visibility("default"))) void* xy_spm_load(const char* path, char* err, size_t err_len) {
  try {
    if (path == nullptr) {
      set_error(err, err_len, "null path");
      return nullptr;
    }
    auto* sp = new sentencepiece::SentencePieceProcessor();
    const auto status = sp->Load(path);
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      delete sp;
      return nullptr;
    }
    return sp;
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("exception: ") + e.what());
  } catch (...) {
    set_error(err, err_len, "unknown exception");
  }
  return nullptr;
}

__attribute__((visibility("default"))) void xy_spm_free(void* h) {
  try {
    delete static_cast<sentencepiece::SentencePieceProcessor*>(h);
  } catch (...) {
  }
}

// Encodes `len` bytes of UTF-8 (no BOS/EOS). Returns the number of ids; they are written to `out`
// only when that number is <= cap (call again with a larger buffer otherwise). Returns -1 with
// the reason in err on failure.
__attribute__((visibility("default"))) int64_t xy_spm_encode(const void* h, const char* text, size_t len,
                                                            int32_t* out, size_t cap, char* err,
                                                            size_t err_len) {
  try {
    if (h == nullptr || (text == nullptr && len > 0)) {
      set_error(err, err_len, "null handle or text");
      return -1;
    }
    std::vector<int> ids;
    const auto status = processor(h)->Encode(std::string_view(text == nullptr ? "" : text, len), &ids);
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      return -1;
    }
    if (ids.size() <= cap && !ids.empty()) {
      static_assert(sizeof(int) == sizeof(int32_t), "int must be 32 bits");
      std::memcpy(out, ids.data(), ids.size() * sizeof(int32_t));
    }
    return static_cast<int64_t>(ids.size());
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("exception: ") + e.what());
  } catch (...) {
    set_error(err, err_len, "unknown exception");
  }
  return -1;
}

// Decodes `n` ids into UTF-8. Returns the length of the text (no terminating NUL is written or
// counted); the bytes are written to `out` only when that length is <= cap. Returns -1 with the
// reason in err on failure (e.g. an id outside [0, vocab)).
__attribute__((visibility("default"))) int64_t xy_spm_decode(const void* h, const int32_t* ids, size_t n,
                                                            char* out, size_t cap, char* err,
                                                            size_t err_len) {
  try {
    if (h == nullptr || (ids == nullptr && n > 0)) {
      set_error(err, err_len, "null handle or ids");
      return -1;
    }
    const int size = processor(h)->GetPieceSize();
    std::vector<int> v(n);
    for (size_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= size) {
        set_error(err, err_len, "id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                    " is outside the vocabulary [0, " + std::to_string(size) + ")");
        return -1;
      }
      v[i] = ids[i];
    }
    std::string text;
    const auto status = processor(h)->Decode(v, &text);
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      return -1;
    }
    if (text.size() <= cap && !text.empty()) std::memcpy(out, text.data(), text.size());
    return static_cast<int64_t>(text.size());
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("exception: ") + e.what());
  } catch (...) {
    set_error(err, err_len, "unknown exception");
  }
  return -1;
}

// Vocabulary size and special ids (-1 when the model has none); -1 on a null handle.
__attribute__((visibility("default"))) int32_t xy_spm_vocab_size(const void* h) {
  try {
    return h ? processor(h)->GetPieceSize() : -1;
  } catch (...) {
    return -1;
  }
}
__attribute__((visibility("default"))) int32_t xy_spm_bos_id(const void* h) {
  try {
    return h ? processor(h)->bos_id() : -1;
  } catch (...) {
    return -1;
  }
}
__attribute__((visibility("default"))) int32_t xy_spm_eos_id(const void* h) {
  try {
    return h ? processor(h)->eos_id() : -1;
  } catch (...) {
    return -1;
  }
}
__attribute__((visibility("default"))) int32_t xy_spm_unk_id(const void* h) {
  try {
    return h ? processor(h)->unk_id() : -1;
  } catch (...) {
    return -1;
  }
}
__attribute__((visibility("default"))) int32_t xy_spm_pad_id(const void* h) {
  try {
    return h ? processor(h)->pad_id() : -1;
  } catch (...) {
    return -1;
  }
}

// Trains a model. `args` holds one `key=value` per line ('\n'-separated; a leading "--" is
// allowed and blank lines are ignored), the keys of spm_train (input, model_prefix, vocab_size,
// model_type, ..., minloglevel). Lines rather than SentencePiece's space-separated command string,
// so that values (paths) may contain spaces; they are passed to SentencePieceTrainer::Train's
// key/value form. Returns 0 on success, -1 with SentencePiece's message in err on failure.
__attribute__((visibility("default"))) int xy_spm_train(const char* args, char* err, size_t err_len) {
  try {
    if (args == nullptr) {
      set_error(err, err_len, "null args");
      return -1;
    }
    std::unordered_map<std::string, std::string> kwargs;
    const std::string all(args);
    size_t begin = 0;
    while (begin <= all.size()) {
      size_t end = all.find('\n', begin);
      if (end == std::string::npos) end = all.size();
      std::string line = all.substr(begin, end - begin);
      begin = end + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      if (line.compare(0, 2, "--") == 0) line.erase(0, 2);
      const size_t eq = line.find('=');
      if (eq == 0 || eq == std::string::npos) {
        set_error(err, err_len, "training argument '" + line + "' is not key=value");
        return -1;
      }
      kwargs[line.substr(0, eq)] = line.substr(eq + 1);
    }
    const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs);
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      return -1;
    }
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, std::string("exception: ") + e.what());
  } catch (...) {
    set_error(err, err_len, "unknown exception");
  }
  return -1;
}

}  // extern "C"
