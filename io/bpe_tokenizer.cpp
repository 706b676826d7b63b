// xy::BpeTokenizer: loading and validating a Hugging Face tokenizer.json, and decoding (the encoder
// is bpe_encode.cpp). Every refusal names the file, the JSON key path and the value.
#include "io/bpe_tokenizer.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/bpe_impl.hpp"

namespace xy {
namespace bpe {
namespace {

using json = nlohmann::json;

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for U+0100 onwards.
struct ByteMap {
  std::string chars[256];
  int16_t byte_of[0x144];  // code point -> byte, -1 for none
  ByteMap() {
    std::fill(std::begin(byte_of), std::end(byte_of), int16_t{-1});
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : 256 + extra++;
      append_utf8(chars[b], cp);
      byte_of[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// The length of the well-formed UTF-8 sequence at s[i], or 0 with *bad set to the length of its
// maximal ill-formed prefix (Unicode's "maximal subpart", what Rust's from_utf8_lossy replaces).
size_t utf8_seq(std::string_view s, size_t i, size_t* bad) {
  const auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = at(i);
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c == 0xE0) need = 2, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC) need = 2;
  else if (c == 0xED) need = 2, hi = 0x9F;
  else if (c >= 0xEE && c <= 0xEF) need = 2;
  else if (c == 0xF0) need = 3, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) need = 3;
  else if (c == 0xF4) need = 3, hi = 0x8F;
  else return *bad = 1, 0;
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size() || at(i + k) < lo || at(i + k) > hi) return *bad = k, 0;
    lo = 0x80, hi = 0xBF;
  }
  return need + 1;
}

std::string short_dump(const json& v) {
  std::string d = v.dump();
  if (d.size() > 80) d = d.substr(0, 77) + "...";
  return d;
}

// Reads one tokenizer.json into an Impl, refusing what it does not implement.
class Loader {
 public:
  Loader(const std::string& file, BpeTokenizer::Impl& t) : file_(file), t_(t) {}

  void load() {
    std::ifstream in(file_, std::ios::binary);
    if (!in) throw TokenizerError("cannot read tokenizer '" + file_ + "': " + std::strerror(errno));
    std::stringstream buf;
    buf << in.rdbuf();
    const std::string text = buf.str();
    json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) {
      try {
        const json again = json::parse(text);  // throws: only for the message
        (void)again;
      } catch (const json::exception& e) {
        throw TokenizerError(file_ + ": not valid JSON: " + e.what());
      }
    }
    if (!root.is_object()) fail("(top level)", root, "is not a JSON object");
    t_.file = file_;
    model(member(root, "model", "model"));
    added_tokens(root);
    normalizer(root.contains("normalizer") ? root["normalizer"] : json(), "normalizer");
    pre_tokenizer(root);
    decoder(root.contains("decoder") ? root["decoder"] : json());
    finish();
  }

 private:
  [[noreturn]] void fail(const std::string& key, const json& value, const std::string& what) const {
    throw TokenizerError(file_ + ": " + key + ": " + short_dump(value) + " " + what);
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw TokenizerError(file_ + ": " + key + ": " + what);
  }
  const json& member(const json& obj, const char* name, const std::string& key) const {
    auto it = obj.find(name);
    if (it == obj.end()) fail(key, "is missing");
    return *it;
  }
  bool flag(const json& obj, const char* name, const std::string& key, bool fallback) const {
    auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(key + "." + name, *it, "is not true or false");
    return it->get<bool>();
  }
  std::string type_of(const json& v, const std::string& key) const {
    if (!v.is_object()) fail(key, v, "is not a JSON object");
    const json& ty = member(v, "type", key + ".type");
    if (!ty.is_string()) fail(key + ".type", ty, "is not a string");
    return ty.get<std::string>();
  }
  // null, or a value that changes nothing ("" / false / 0).
  bool unset(const json& obj, const char* name) const {
    auto it = obj.find(name);
    return it == obj.end() || it->is_null() || (it->is_string() && it->get_ref<const std::string&>().empty()) ||
           (it->is_boolean() && !it->get<bool>()) || (it->is_number() && it->get<double>() == 0.0);
  }

  void model(const json& m) {
    const std::string type = type_of(m, "model");
    if (type != "BPE") fail("model.type", m["type"], "is not supported (byte-level BPE only)");
    struct Refused {
      const char* name;
      const char* why;
    };
    for (const Refused& r : {Refused{"dropout", "BPE dropout, a training-time randomization"},
                             Refused{"unk_token", "an unknown-token fallback; byte-level BPE covers every byte"},
                             Refused{"byte_fallback", "<0x..> byte tokens, SentencePiece-style BPE: give its .model file"},
                             Refused{"continuing_subword_prefix", "a WordPiece-style prefix"},
                             Refused{"end_of_word_suffix", "an end-of-word suffix"}})
      if (!unset(m, r.name)) fail(std::string("model.") + r.name, m[r.name], std::string("is not supported (") + r.why + ")");
    t_.ignore_merges = flag(m, "ignore_merges", "model", false);

    const json& vocab = member(m, "vocab", "model.vocab");
    if (!vocab.is_object() || vocab.empty()) fail("model.vocab", vocab, "is not a non-empty object of token: id");
    std::unordered_map<std::string, int32_t> by_str;
    by_str.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const std::string key = "model.vocab[" + json(it.key()).dump() + "]";
      if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() >= INT32_MAX)
        fail(key, *it, "is not an id in [0, 2^31 - 1)");
      const auto id = static_cast<int32_t>(it->get<int64_t>());
      set_token(id, it.key(), BpeTokenizer::Impl::kModel, key);
      if (in_model_.size() <= static_cast<size_t>(id)) in_model_.resize(static_cast<size_t>(id) + 1, false);
      in_model_[static_cast<size_t>(id)] = true;
      by_str.emplace(it.key(), id);
    }

    const json& merges = member(m, "merges", "model.merges");
    if (!merges.is_array()) fail("model.merges", merges, "is not an array");
    t_.merges.reserve(merges.size());
    auto id_of = [&](const std::string& s, const std::string& key, const json& v) {
      auto it = by_str.find(s);
      if (it == by_str.end()) fail(key, v, "names " + json(s).dump() + ", which is not in model.vocab");
      return it->second;
    };
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& e = merges[i];
      const std::string key = "model.merges[" + std::to_string(i) + "]";
      std::string a, b;
      if (e.is_string()) {  // "a b"
        const std::string& s = e.get_ref<const std::string&>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail(key, e, "is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        fail(key, e, "is neither \"a b\" nor [\"a\", \"b\"]");
      }
      const int32_t left = id_of(a, key, e), right = id_of(b, key, e);
      t_.merges.put(left, right, static_cast<uint32_t>(i), id_of(a + b, key, e));
    }
  }

  void set_token(int32_t id, const std::string& s, uint8_t kind, const std::string& key) {
    if (static_cast<size_t>(id) >= t_.token_str.size()) {
      t_.token_str.resize(static_cast<size_t>(id) + 1);
      t_.kind.resize(static_cast<size_t>(id) + 1, BpeTokenizer::Impl::kNone);
    }
    auto& k = t_.kind[static_cast<size_t>(id)];
    if (k != BpeTokenizer::Impl::kNone && t_.token_str[static_cast<size_t>(id)] != s)
      fail(key, json(id), "is also the id of " + json(t_.token_str[static_cast<size_t>(id)]).dump());
    t_.token_str[static_cast<size_t>(id)] = s;
    k = std::max(k, kind);
  }

  void added_tokens(const json& root) {
    auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null()) return;
    if (!it->is_array()) fail("added_tokens", *it, "is not an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& a = (*it)[i];
      const std::string key = "added_tokens[" + std::to_string(i) + "]";
      if (!a.is_object()) fail(key, a, "is not an object");
      AddedToken tok;
      const json& content = member(a, "content", key + ".content");
      if (!content.is_string() || content.get_ref<const std::string&>().empty())
        fail(key + ".content", content, "is not a non-empty string");
      tok.content = content.get<std::string>();
      const json& id = member(a, "id", key + ".id");
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= INT32_MAX)
        fail(key + ".id", id, "is not an id in [0, 2^31 - 1)");
      tok.id = static_cast<int32_t>(id.get<int64_t>());
      tok.special = flag(a, "special", key, false);
      tok.lstrip = flag(a, "lstrip", key, false);
      tok.rstrip = flag(a, "rstrip", key, false);
      tok.normalized = flag(a, "normalized", key, !tok.special);
      if (flag(a, "single_word", key, false))
        fail(key + ".single_word", json(true), "is not supported (added tokens that match whole words only)");
      set_token(tok.id, tok.content, tok.special ? BpeTokenizer::Impl::kSpecial : BpeTokenizer::Impl::kAdded,
                key + ".id");
      t_.added.push_back(std::move(tok));
    }
  }

  void normalizer(const json& n, const std::string& key) {
    if (n.is_null()) return;
    const std::string type = type_of(n, key);
    if (type == "NFC") {
      t_.nfc = true;
    } else if (type == "Sequence") {
      const json& list = member(n, "normalizers", key + ".normalizers");
      if (!list.is_array()) fail(key + ".normalizers", list, "is not an array");
      for (size_t i = 0; i < list.size(); ++i) normalizer(list[i], key + ".normalizers[" + std::to_string(i) + "]");
    } else {
      fail(key + ".type", json(type), "is not supported (NFC, a Sequence of it, or null)");
    }
  }

  void pre_tokenizer(const json& root) {
    auto it = root.find("pre_tokenizer");
    if (it == root.end() || it->is_null())
      fail("pre_tokenizer", "is null; a byte-level BPE needs a ByteLevel pre-tokenizer");
    pre_step(*it, "pre_tokenizer");
    bool seen = false;
    for (size_t i = 0; i < t_.steps.size(); ++i) {
      if (!t_.steps[i].byte_level) continue;
      if (seen || i + 1 != t_.steps.size())
        fail("pre_tokenizer", "has a step after ByteLevel or two ByteLevel steps; supported: "
                              "Split steps, then one ByteLevel");
      seen = true;
    }
    if (!seen) fail("pre_tokenizer", "has no ByteLevel step (byte-level BPE only)");
  }

  void pre_step(const json& p, const std::string& key) {
    const std::string type = type_of(p, key);
    if (type == "Sequence") {
      const json& list = member(p, "pretokenizers", key + ".pretokenizers");
      if (!list.is_array()) fail(key + ".pretokenizers", list, "is not an array");
      for (size_t i = 0; i < list.size(); ++i) pre_step(list[i], key + ".pretokenizers[" + std::to_string(i) + "]");
    } else if (type == "Split") {
      const json& pattern = member(p, "pattern", key + ".pattern");
      if (!pattern.is_object() || !pattern.contains("Regex") || !pattern["Regex"].is_string())
        fail(key + ".pattern", pattern, "is not supported ({\"Regex\": \"...\"} only)");
      const json& behavior = member(p, "behavior", key + ".behavior");
      if (behavior != "Isolated") fail(key + ".behavior", behavior, "is not supported (Isolated only)");
      if (flag(p, "invert", key, false)) fail(key + ".invert", json(true), "is not supported (false only)");
      Step st;
      st.regex = regex(pattern["Regex"].get<std::string>(), key + ".pattern.Regex");
      t_.steps.push_back(st);
    } else if (type == "ByteLevel") {
      Step st;
      st.byte_level = true;
      st.add_prefix_space = flag(p, "add_prefix_space", key, true);
      if (flag(p, "use_regex", key, true)) st.regex = regex(kGpt2Regex, key + ".use_regex");
      t_.steps.push_back(st);
    } else {
      fail(key + ".type", json(type), "is not supported (Split, ByteLevel or a Sequence of them)");
    }
  }

  const Regex* regex(const std::string& pattern, const std::string& key) {
    std::string error;
    std::unique_ptr<Regex> re = compile_regex(pattern, &error);
    if (!re) fail(key, json(pattern), error);
    t_.regexes.push_back(std::move(re));
    return t_.regexes.back().get();
  }

  void decoder(const json& d) {
    if (d.is_null()) return;
    const std::string type = type_of(d, "decoder");
    if (type != "ByteLevel") fail("decoder.type", json(type), "is not supported (ByteLevel or null)");
  }

  // The byte forms, the byte tokens, the added tokens' matching forms, BOS/EOS.
  void finish() {
    const ByteMap& bm = byte_map();
    const size_t n = t_.token_str.size();
    t_.token_bytes.assign(n, std::string());
    std::vector<bool> byte_level(n, false);
    in_model_.resize(n, false);
    for (size_t id = 0; id < n; ++id) {
      const std::string& s = t_.token_str[id];
      std::string bytes;
      bool ok = true;
      for (size_t i = 0; i < s.size() && ok;) {
        size_t bad = 0;
        const size_t len = utf8_seq(s, i, &bad);
        uint32_t cp = static_cast<unsigned char>(s[i]);
        if (len == 2) cp = ((cp & 0x1Fu) << 6) | (s[i + 1] & 0x3F);
        ok = (len == 1 || len == 2) && cp < 0x144 && bm.byte_of[cp] >= 0;
        if (ok) bytes += static_cast<char>(bm.byte_of[cp]);
        i += len > 0 ? len : bad;
      }
      // The ByteLevel decoder's rule: a token not made of byte characters decodes as its text.
      t_.token_bytes[id] = ok ? bytes : s;
      byte_level[id] = ok && !s.empty();
    }
    t_.raw_vocab.reserve(n);
    for (size_t id = 0; id < n; ++id)
      if (byte_level[id] && in_model_[id])  // `tokenizers` looks in the model's vocabulary only
        t_.raw_vocab.emplace(t_.token_bytes[id], static_cast<int32_t>(id));
    for (int b = 0; b < 256; ++b) {
      const std::string one(1, static_cast<char>(b));
      auto f = t_.raw_vocab.find(one);
      if (f == t_.raw_vocab.end()) {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "0x%02X", b);
        fail("model.vocab", std::string("has no token for the byte ") + hex + " (" + json(bm.chars[b]).dump() +
                                "): a byte-level vocabulary holds all 256");
      }
      t_.byte_id[b] = f->second;
    }
    for (AddedToken& a : t_.added) {
      a.match = a.normalized && t_.nfc ? nfc(a.content) : a.content;
      if (a.content == "<|begin_of_text|>") t_.bos = a.id;
      if (a.content == "<|end_of_text|>") t_.eos = a.id;
    }
    if (t_.eos < 0)
      for (const AddedToken& a : t_.added)
        if (a.content == "<|endoftext|>") t_.eos = a.id;
    t_.raw_added.build(t_.added, /*normalized=*/false);
    t_.normalized_added.build(t_.added, /*normalized=*/true);
    t_.vocab_size = static_cast<int64_t>(n);
  }

  std::string file_;
  BpeTokenizer::Impl& t_;
  std::vector<bool> in_model_;  // by id: a token of model.vocab
};

}  // namespace

const std::string& byte_char(uint8_t b) { return byte_map().chars[b]; }

size_t invalid_utf8_at(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    // ASCII 8 bytes at a time.
    if (i + 8 <= s.size()) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    size_t bad = 0;
    const size_t len = utf8_seq(s, i, &bad);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view s) {
  std::string r;
  r.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t bad = 0;
    const size_t len = utf8_seq(s, i, &bad);
    if (len > 0) {
      r.append(s.data() + i, len);
      i += len;
    } else {
      r += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return r;
}

}  // namespace bpe

BpeTokenizer::BpeTokenizer() : impl_(std::make_unique<Impl>()) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::load_json(const std::string& file) {
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  bpe::Loader(file, *tok->impl_).load();
  tok->impl_->instance = bpe::next_instance();
  tok->path_ = file;
  return tok;
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  const size_t bad = bpe::invalid_utf8_at(text);
  if (bad != std::string_view::npos)
    throw TokenizerError("encoding with '" + impl_->file + "': the text is not valid UTF-8 (byte " +
                         std::to_string(bad) + " of " + std::to_string(text.size()) + ")");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 16);
  impl_->encode(text, ids);
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= impl_->vocab_size || impl_->kind[static_cast<size_t>(id)] == Impl::kNone)
      throw TokenizerError("decoding with '" + impl_->file + "': no token has id " + std::to_string(id) +
                           " (vocabulary " + std::to_string(impl_->vocab_size) + ")");
    bytes += impl_->token_bytes[static_cast<size_t>(id)];
  }
  return bpe::utf8_lossy(bytes);
}

int64_t BpeTokenizer::vocab_size() const { return impl_->vocab_size; }
int32_t BpeTokenizer::bos_id() const { return impl_->bos; }
int32_t BpeTokenizer::eos_id() const { return impl_->eos; }

const std::string& BpeTokenizer::token(int32_t id) const {
  static const std::string none;
  if (id < 0 || id >= impl_->vocab_size) return none;
  return impl_->token_str[static_cast<size_t>(id)];
}

bool BpeTokenizer::is_added(int32_t id) const {
  return id >= 0 && id < impl_->vocab_size && impl_->kind[static_cast<size_t>(id)] >= Impl::kAdded;
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->vocab_size && impl_->kind[static_cast<size_t>(id)] == Impl::kSpecial;
}

}  // namespace xy
