// `xy-node preprocess`, the encoders (see encoder.hpp): a chunk's lines checked and tokenized.
#include "preprocess/encoder.hpp"

#include <cstring>

#include "io/tokenizer.hpp"

namespace xy {
namespace pp {

namespace {

// Valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool valid_utf8(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

}  // namespace

bool blank(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n' && p[i] != '\f' && p[i] != '\v')
      return false;
  return true;
}

// Checks and encodes one chunk (any worker thread).
Result encode_chunk(Chunk& c, const Tokenizer& tok, const std::string& field) {
  Result r;
  r.end = std::move(c.end);
  r.items.reserve(c.lines.size());
  r.tokens.reserve(c.blob.size() / 2);
  const int32_t bos = tok.bos_id(), eos = tok.eos_id();
  for (LineRec& l : c.lines) {
    Item it;
    it.line = l.line;
    if (l.problem != kNoProblem) {
      it.problem = l.problem;
      it.detail = std::move(l.detail);
      r.items.push_back(std::move(it));
      continue;
    }
    const char* p = c.blob.data() + l.offset;
    auto fail = [&](Problem pr, std::string d) {
      it.problem = static_cast<int8_t>(pr);
      it.detail = std::move(d);
    };
    if (!valid_utf8(reinterpret_cast<const unsigned char*>(p), static_cast<size_t>(l.len))) {
      fail(Problem::kInvalidUtf8, "the line is not valid UTF-8");
    } else {
      json j = json::parse(p, p + l.len, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        // Parse again with exceptions only for the message (rare).
        try {
          const json again = json::parse(p, p + l.len);
          (void)again;
          fail(Problem::kMalformedJson, "malformed JSON");
        } catch (const json::exception& e) {
          fail(Problem::kMalformedJson, std::string("malformed JSON: ") + e.what());
        }
      } else if (!j.is_object()) {
        fail(Problem::kMalformedJson, std::string("not a JSON object but ") + j.type_name());
      } else if (auto f = j.find(field); f == j.end()) {
        fail(Problem::kMissingField, "no \"" + field + "\" field");
      } else if (!f->is_string()) {
        fail(Problem::kNotString, "\"" + field + "\" is " + f->type_name() + ", not a string");
      } else {
        const std::string& text = f->get_ref<const std::string&>();
        if (blank(text.data(), text.size())) {
          fail(Problem::kEmptyText, "\"" + field + "\" is empty");
        } else {
          const size_t before = r.tokens.size();
          if (bos >= 0) r.tokens.push_back(bos);
          const std::vector<int32_t> ids = tok.encode(text);
          r.tokens.insert(r.tokens.end(), ids.begin(), ids.end());
          if (eos >= 0) r.tokens.push_back(eos);
          it.tokens = static_cast<int64_t>(r.tokens.size() - before);
        }
      }
    }
    r.items.push_back(std::move(it));
  }
  std::string().swap(c.blob);
  return r;
}

void encode_chunks(const Tokenizer& tok, const std::string& field, Pipeline& pipe) {
  for (;;) {
    Chunk c;  // per chunk: its line records are freed before the next one is taken
    if (!pipe.take_work(&c)) return;
    const int64_t seq = c.seq;
    Result r = encode_chunk(c, tok, field);
    pipe.put_result(seq, std::move(r));
  }
}

}  // namespace pp
}  // namespace xy
