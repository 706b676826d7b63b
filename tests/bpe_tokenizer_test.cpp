// Tests xy::BpeTokenizer on small tokenizer.json files written here: merges by rank against a naive
// reference BPE, ignore_merges, the pre-tokenizer regexes, added tokens (leftmost-longest,
// lstrip/rstrip), NFC, round trips on random UTF-8, refusals naming file and key, and threads.
#include <gtest/gtest.h>
#include <utf8proc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "io/bpe_tokenizer.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using xy::BpeTokenizer;
using xy::Tokenizer;
using xy::TokenizerError;

namespace {

std::string temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "xy_bpe_test_XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

// Raw bytes -> tokenizer.json's byte-level form ("Ġ" for a space).
std::string bl(const std::string& raw) {
  std::string s;
  for (unsigned char c : raw) s += xy::bpe::byte_char(c);
  return s;
}

std::string utf8(uint32_t cp) {
  std::string s;
  utf8proc_uint8_t b[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), b);
  s.append(reinterpret_cast<const char*>(b), static_cast<size_t>(n));
  return s;
}

std::string reference_nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                              &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::string r(reinterpret_cast<const char*>(out), n < 0 ? 0 : static_cast<size_t>(n));
  std::free(out);
  return r;
}

// A tokenizer.json: the 256 byte tokens (ids 0..255, byte order), then `tokens` (raw bytes),
// `merges` (raw byte pairs, in rank order), and the given parts.
struct Spec {
  std::vector<std::string> tokens;
  std::vector<std::pair<std::string, std::string>> merges;
  bool ignore_merges = false;
  bool legacy_merges = false;  // "a b" strings instead of ["a", "b"]
  json normalizer;             // null
  json pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  json added = json::array();
};

json make_json(const Spec& sp) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bl(std::string(1, static_cast<char>(b)))] = b;
  for (const std::string& t : sp.tokens)
    if (!vocab.contains(bl(t))) vocab[bl(t)] = static_cast<int>(vocab.size());
  json merges = json::array();
  for (const auto& [a, b] : sp.merges) {
    if (sp.legacy_merges) merges.push_back(bl(a) + " " + bl(b));
    else merges.push_back({bl(a), bl(b)});
  }
  return {{"version", "1.0"},
          {"added_tokens", sp.added},
          {"normalizer", sp.normalizer},
          {"pre_tokenizer", sp.pre_tokenizer},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
            {"ignore_merges", sp.ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
}

json added_token(int id, const std::string& content, bool special, bool lstrip = false, bool rstrip = false,
                 bool normalized = false) {
  return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", lstrip}, {"rstrip", rstrip},
          {"normalized", normalized}, {"special", special}};
}

class BpeTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = temp_dir(); }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const json& j, const std::string& name = "tokenizer.json") {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << j.dump();
    return path;
  }
  std::unique_ptr<BpeTokenizer> load(const Spec& sp) { return BpeTokenizer::load_json(write(make_json(sp))); }

  // The message of the TokenizerError that loading `j` throws ("" if none).
  std::string error_of(const json& j) {
    const std::string path = write(j, "bad.json");
    try {
      BpeTokenizer::load_json(path);
    } catch (const TokenizerError& e) {
      return e.what();
    }
    return "";
  }
  std::string dir_;
};

// Naive BPE: merge the lowest-ranked adjacent pair (the leftmost of equal ranks) until none is left.
std::vector<int32_t> naive_bpe(const std::string& word, const std::map<std::pair<std::string, std::string>, int>& rank,
                               const std::map<std::string, int32_t>& id) {
  std::vector<std::string> sym;
  for (char c : word) sym.emplace_back(1, c);
  for (;;) {
    int best = -1, best_rank = INT32_MAX;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = rank.find({sym[i], sym[i + 1]});
      if (it != rank.end() && it->second < best_rank) best = static_cast<int>(i), best_rank = it->second;
    }
    if (best < 0) break;
    sym[static_cast<size_t>(best)] += sym[static_cast<size_t>(best) + 1];
    sym.erase(sym.begin() + best + 1);
  }
  std::vector<int32_t> ids;
  for (const auto& s : sym) ids.push_back(id.at(s));
  return ids;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (auto i : ids) s += (s.empty() ? "" : " ") + std::to_string(i);
  return s;
}

}  // namespace

TEST_F(BpeTest, MergesByRankMatchNaiveReference) {
  // Random merges over a small alphabet (with a 2-byte character, so that merges cross UTF-8
  // boundaries), some producing a token another pair also produces.
  std::mt19937 rng(7);
  const std::vector<std::string> alphabet = {"a", "b", "c", " ", "\xC3", "\xA9"};
  for (bool legacy : {false, true}) {
    Spec sp;
    sp.legacy_merges = legacy;
    std::vector<std::string> pool = alphabet;
    std::set<std::pair<std::string, std::string>> seen;
    while (sp.merges.size() < 400) {
      const std::string& a = pool[rng() % pool.size()];
      const std::string& b = pool[rng() % pool.size()];
      if (a.size() + b.size() > 12 || !seen.insert({a, b}).second) continue;
      sp.merges.emplace_back(a, b);
      if (std::find(pool.begin(), pool.end(), a + b) == pool.end()) pool.push_back(a + b);
    }
    sp.tokens = pool;
    auto tok = load(sp);
    const json j = make_json(sp);
    std::map<std::pair<std::string, std::string>, int> rank;
    for (size_t i = 0; i < sp.merges.size(); ++i) rank[sp.merges[i]] = static_cast<int>(i);
    std::map<std::string, int32_t> id;
    for (int b = 0; b < 256; ++b) id[std::string(1, static_cast<char>(b))] = b;
    for (const std::string& t : pool) id[t] = j["model"]["vocab"][bl(t)].get<int32_t>();
    int compared = 0, long_words = 0;
    for (int n = 0; n < 3000; ++n) {
      const size_t len = 1 + rng() % (n % 10 == 0 ? 400 : 40);  // short (scan) and long (heap) words
      std::string w;
      while (w.size() < len) w += alphabet[rng() % 4] + (rng() % 5 == 0 ? std::string("\xC3\xA9") : "");
      const auto got = tok->encode(w);
      const auto want = naive_bpe(w, rank, id);
      ASSERT_EQ(ids_str(got), ids_str(want)) << "word '" << w << "' (" << w.size() << " bytes), legacy " << legacy;
      ++compared;
      long_words += w.size() > 48;
    }
    EXPECT_GT(long_words, 200);
    std::printf("%d words (%d longer than 48 bytes) equal to the naive BPE (legacy merges %d)\n", compared,
                long_words, legacy);
  }
}

TEST_F(BpeTest, IgnoreMergesEmitsAWholeVocabularyWord) {
  Spec sp;
  sp.tokens = {"ab", "abc"};
  sp.merges = {{"a", "b"}};  // "abc" has no merge path: only ignore_merges reaches it
  sp.ignore_merges = true;
  auto with = load(sp);
  sp.ignore_merges = false;
  auto without = load(sp);
  const int32_t ab = 256, abc = 257;
  EXPECT_EQ(with->encode("abc"), (std::vector<int32_t>{abc}));
  EXPECT_EQ(without->encode("abc"), (std::vector<int32_t>{ab, 'c'}));
  EXPECT_EQ(with->encode("abcc"), (std::vector<int32_t>{ab, 'c', 'c'}));
}

TEST_F(BpeTest, SplitRegexPiecesAreTheLlama3Ones) {
  // With ignore_merges and whole words in the vocabulary, each pre-token shows as one id.
  Spec sp;
  sp.tokens = {"Hello", " world", "'S", " ", "123", "45", "\n\n", " !!", "\xE4\xBD\xA0\xE5\xA5\xBD"};
  sp.ignore_merges = true;
  sp.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  auto tok = load(sp);
  auto id = [&](const std::string& raw) {
    for (int32_t i = 0; i < tok->vocab_size(); ++i)
      if (tok->token(i) == bl(raw)) return i;
    return -1;
  };
  const std::vector<int32_t> want = {id("Hello"), id(" world"), id("'S"), id(" "), id("123"), id("45"),
                                     id("\n\n"), id("\xE4\xBD\xA0\xE5\xA5\xBD"), id(" !!")};
  EXPECT_EQ(ids_str(tok->encode("Hello world'S 12345\n\n\xE4\xBD\xA0\xE5\xA5\xBD !!")), ids_str(want));
  // \s is Oniguruma's: U+180E is not white space there (it is in PCRE2's \s).
  const std::string mvs = "\xE1\xA0\x8E";
  EXPECT_EQ(xy::bpe::onig_to_pcre2(R"(\s+|[^\s\p{L}])"), R"([\t-\r\x{20}\x{85}\p{Z}]+|[^\t-\r\x{20}\x{85}\p{Z}\p{L}])");
  const auto ids = tok->encode("a" + mvs + "b");
  EXPECT_EQ(tok->decode(ids), "a" + mvs + "b");
}

TEST_F(BpeTest, ByteLevelPrefixSpaceAndGpt2Regex) {
  Spec sp;
  sp.tokens = {" hello", " world", "'s", " 42"};
  sp.ignore_merges = true;
  sp.pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  auto tok = load(sp);
  EXPECT_EQ(tok->encode("hello world's 42"), (std::vector<int32_t>{256, 257, 258, 259}));
  EXPECT_EQ(tok->encode(" hello"), tok->encode("hello"));
}

TEST_F(BpeTest, AddedTokensLeftmostLongestAndStrip) {
  Spec sp;
  sp.added = json::array({added_token(300, "<|a|>", true), added_token(301, "<|a|><|b|>", true),
                          added_token(302, "<m>", false, /*lstrip=*/true, /*rstrip=*/false),
                          added_token(303, "<r>", false, /*lstrip=*/false, /*rstrip=*/true)});
  auto tok = load(sp);
  auto bytes = [](const std::string& s) {
    std::vector<int32_t> v;
    for (unsigned char c : s) v.push_back(c);
    return v;
  };
  auto cat = [](std::vector<std::vector<int32_t>> parts) {
    std::vector<int32_t> v;
    for (auto& p : parts) v.insert(v.end(), p.begin(), p.end());
    return v;
  };
  EXPECT_EQ(tok->encode("x<|a|><|b|>y"), cat({bytes("x"), {301}, bytes("y")}));  // the longest
  EXPECT_EQ(tok->encode("x<|a|><|c|>"), cat({bytes("x"), {300}, bytes("<|c|>")}));
  EXPECT_EQ(tok->encode("x \t <m> y"), cat({bytes("x"), {302}, bytes(" y")}));  // lstrip takes the spaces
  EXPECT_EQ(tok->encode("x <r> \n y"), cat({bytes("x "), {303}, bytes("y")}));  // rstrip
  EXPECT_EQ(tok->encode("<|a|>"), (std::vector<int32_t>{300}));
  EXPECT_TRUE(tok->is_special(300));
  EXPECT_TRUE(tok->is_added(302));
  EXPECT_FALSE(tok->is_special(302));
  EXPECT_FALSE(tok->is_added('x'));
  EXPECT_EQ(tok->decode({300, 'z'}), "<|a|>z");  // added tokens decode as their content
  EXPECT_EQ(tok->vocab_size(), 304);
}

TEST_F(BpeTest, NfcOnAndOff) {
  const std::string decomposed = "caf" + std::string("e\xCC\x81");  // e + U+0301
  const std::string composed = "caf\xC3\xA9";                        // U+00E9
  Spec sp;
  auto off = load(sp);
  sp.normalizer = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  auto on = load(sp);
  EXPECT_EQ(on->encode(decomposed), on->encode(composed));
  EXPECT_NE(off->encode(decomposed), off->encode(composed));
  EXPECT_EQ(on->decode(on->encode(decomposed)), composed);

  // The fast path: strings of code points it calls inert are NFC already, and nfc() is
  // utf8proc's NFC on strings mixing combining marks, Hangul jamo and inert code points.
  std::mt19937 rng(3);
  std::vector<uint32_t> inert, any;
  for (uint32_t cp = 0; cp < 0x110000; cp += 1 + rng() % 7) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    (xy::bpe::nfc_inert(cp) ? inert : any).push_back(cp);
  }
  for (uint32_t cp : {0x300u, 0x301u, 0x327u, 0x1161u, 0x11A8u, 0x3099u, 0xB3Eu, 0x2126u, 0x212Bu, 0x0344u})
    any.push_back(cp);
  for (uint32_t cp : {0x41u, 0x65u, 0x1100u, 0xAC00u, 0x304Bu, 0xB47u, 0xC0u, 0x4E00u}) inert.push_back(cp);
  int changed = 0;
  for (int n = 0; n < 4000; ++n) {
    std::string pure, mixed;
    for (int k = 0; k < 12; ++k) {
      pure += utf8(inert[rng() % inert.size()]);
      mixed += utf8(rng() % 2 ? inert[rng() % inert.size()] : any[rng() % any.size()]);
    }
    ASSERT_EQ(reference_nfc(pure), pure);
    ASSERT_TRUE(xy::bpe::nfc_is_identity(pure));
    const std::string want = reference_nfc(mixed);
    ASSERT_EQ(xy::bpe::nfc(mixed), want);
    changed += want != mixed;
  }
  EXPECT_GT(changed, 100);
  EXPECT_GT(inert.size(), 100000u);
}

TEST_F(BpeTest, RoundTripsRandomUtf8) {
  Spec sp;
  std::mt19937 rng(11);
  for (int k = 0; k < 200; ++k) {  // some merges, so that tokens span characters
    std::string a(1, static_cast<char>(rng() % 256)), b(1, static_cast<char>(rng() % 256));
    if (std::find(sp.merges.begin(), sp.merges.end(), std::make_pair(a, b)) == sp.merges.end()) {
      sp.merges.emplace_back(a, b);
      sp.tokens.push_back(a + b);
    }
  }
  sp.pre_tokenizer = {{"type", "Sequence"},
                      {"pretokenizers",
                       {{{"type", "Split"}, {"pattern", {{"Regex", R"(\p{N}{1,3}|\s+(?!\S)|\s+|\p{L}+)"}}},
                         {"behavior", "Isolated"}, {"invert", false}},
                        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}};
  sp.added = json::array({added_token(1000, "<|endoftext|>", true)});
  auto tok = load(sp);
  for (int n = 0; n < 2000; ++n) {
    std::string s;
    const int len = 1 + static_cast<int>(rng() % 60);
    for (int k = 0; k < len; ++k) {
      const uint32_t r = rng() % 10;
      uint32_t cp = r < 4 ? 0x20 + rng() % 0x5F : r < 6 ? rng() % 0x800 : r < 8 ? 0x4E00 + rng() % 0x5000 : rng() % 0x110000;
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0x20;
      s += utf8(cp);
      if (rng() % 50 == 0) s += "<|endoftext|>";
    }
    const auto ids = tok->encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size());
    ASSERT_EQ(tok->decode(ids), s);
  }
}

TEST_F(BpeTest, Utf8Handling) {
  auto tok = load(Spec());
  EXPECT_THROW(tok->encode("ok \xC3("), TokenizerError);
  try {
    tok->encode("abc\xFF");
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8 (byte 3 of 4)"), std::string::npos) << e.what();
  }
  // decode replaces ill-formed sequences as Rust's from_utf8_lossy: maximal subparts.
  EXPECT_EQ(xy::bpe::utf8_lossy("a\xF0\x9F\x98" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(xy::bpe::utf8_lossy("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(xy::bpe::utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode({0xE4, 0xBD}), "\xEF\xBF\xBD");  // half a character
  EXPECT_EQ(tok->decode({0xE4, 0xBD, 0xA0}), "\xE4\xBD\xA0");
  EXPECT_THROW(tok->decode({256}), TokenizerError);
  EXPECT_THROW(tok->decode({-1}), TokenizerError);
}

TEST_F(BpeTest, LoadPicksTheKindAndTheDocumentSeparators) {
  Spec sp;
  sp.added = json::array({added_token(256, "<|begin_of_text|>", true), added_token(257, "<|end_of_text|>", true),
                          added_token(258, "<|endoftext|>", true)});
  const std::string file = write(make_json(sp));
  for (const std::string& p : {file, dir_, dir_ + "/"}) {
    auto tok = Tokenizer::load(p);
    EXPECT_EQ(tok->bos_id(), 256) << p;
    EXPECT_EQ(tok->eos_id(), 257) << p;
    EXPECT_EQ(tok->path(), Tokenizer::file_of(p));
    EXPECT_EQ(tok->encode("a<|end_of_text|>"), (std::vector<int32_t>{'a', 257}));
  }
  EXPECT_EQ(Tokenizer::file_of(dir_), dir_ + "/tokenizer.json");
  sp.added = json::array({added_token(256, "<|endoftext|>", true), added_token(257, "<|im_end|>", true)});
  auto qwen_like = BpeTokenizer::load_json(write(make_json(sp), "q.json"));
  EXPECT_EQ(qwen_like->bos_id(), -1);
  EXPECT_EQ(qwen_like->eos_id(), 256);
  fs::remove(file);
  try {
    Tokenizer::load(dir_);
    FAIL() << "a directory without tokenizer.json loaded";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("without a tokenizer.json"), std::string::npos) << e.what();
  }
}

TEST_F(BpeTest, RefusalsNameFileKeyAndValue) {
  const json good = make_json(Spec());
  struct Case {
    std::function<void(json&)> edit;
    std::string want;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["model"]["type"] = "Unigram"; }, "model.type: \"Unigram\" is not supported (byte-level BPE only)"},
      {[](json& j) { j["model"]["byte_fallback"] = true; }, "model.byte_fallback: true is not supported"},
      {[](json& j) { j["model"]["dropout"] = 0.1; }, "model.dropout: 0.1 is not supported"},
      {[](json& j) { j["model"]["unk_token"] = "<unk>"; }, "model.unk_token: \"<unk>\" is not supported"},
      {[](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }, "model.continuing_subword_prefix: \"##\""},
      {[](json& j) { j["model"]["merges"] = json::array({json::array({"a", "zz"})}); }, "model.merges[0]: [\"a\",\"zz\"] names \"zz\", which is not in model.vocab"},
      {[](json& j) { j["model"]["merges"] = json::array({"a b c"}); }, "model.merges[0]: \"a b c\" is not two tokens"},
      {[](json& j) { j["model"]["vocab"].erase(xy::bpe::byte_char('q')); }, "model.vocab: has no token for the byte 0x71"},
      {[](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, "normalizer.type: \"NFKC\" is not supported"},
      {[](json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Lowercase"}}}}}; },
       "normalizer.normalizers[0].type: \"Lowercase\" is not supported"},
      {[](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, "pre_tokenizer.type: \"Metaspace\" is not supported"},
      {[](json& j) { j["pre_tokenizer"] = nullptr; }, "pre_tokenizer: is null"},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Removed"}, {"invert", false}};
       },
       "pre_tokenizer.behavior: \"Removed\" is not supported (Isolated only)"},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}, {"invert", false}},
                                                  {{"type", "ByteLevel"}}}}};
       },
       "pre_tokenizer.pretokenizers[0].pattern.Regex: \"(a\" does not compile"},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Isolated"}, {"invert", false}};
       },
       "pre_tokenizer: has no ByteLevel step"},
      {[](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "decoder.type: \"WordPiece\" is not supported"},
      {[](json& j) {
         j["added_tokens"] = {{{"id", 300}, {"content", "<x>"}, {"single_word", true}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", false}, {"special", true}}};
       },
       "added_tokens[0].single_word: true is not supported"},
      {[](json& j) { j["added_tokens"] = {added_token(5, "<x>", true)}; }, "added_tokens[0].id: 5 is also the id of"},
  };
  for (const Case& c : cases) {
    json j = good;
    c.edit(j);
    const std::string e = error_of(j);
    EXPECT_NE(e.find(dir_ + "/bad.json: "), std::string::npos) << e;
    EXPECT_NE(e.find(c.want), std::string::npos) << "got: " << e << "\nwant: " << c.want;
  }
  try {
    BpeTokenizer::load_json(dir_ + "/missing.json");
    FAIL() << "a missing file loaded";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read tokenizer '" + dir_ + "/missing.json'"), std::string::npos)
        << e.what();
  }
}

TEST_F(BpeTest, NotJsonNamesTheFile) {
  const std::string path = dir_ + "/t.json";
  std::ofstream(path) << "{\"model\": ";
  try {
    BpeTokenizer::load_json(path);
    FAIL();
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": not valid JSON"), std::string::npos) << e.what();
  }
}

TEST_F(BpeTest, ThreadsEncodingAtOnceGiveTheSerialIds) {
  Spec sp;
  std::mt19937 rng(5);
  for (int k = 0; k < 300; ++k) {
    std::string a(1, static_cast<char>('a' + rng() % 6)), b(1, static_cast<char>('a' + rng() % 6));
    std::string ab = a + b;
    if (std::find(sp.tokens.begin(), sp.tokens.end(), ab) != sp.tokens.end()) continue;
    sp.merges.emplace_back(a, b);
    sp.tokens.push_back(ab);
  }
  sp.pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  auto tok = load(sp);
  std::vector<std::string> texts;
  for (int n = 0; n < 400; ++n) {
    std::string s;
    for (int k = 0; k < 200; ++k) s += static_cast<char>(rng() % 4 == 0 ? ' ' : 'a' + rng() % 6);
    texts.push_back(s);
  }
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(tok->encode(t));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep)
        for (size_t i = t; i < texts.size() + t; ++i) {
          const size_t k = i % texts.size();
          if (tok->encode(texts[k]) != serial[k]) ++wrong;
        }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}
