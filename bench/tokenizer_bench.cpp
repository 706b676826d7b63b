// Single-thread encoding speed of tokenizers on the same text (bench/RESULTS.md, "tokenizers"):
// every document of the inputs (default: the bundled sample), encoded one after the other, several
// passes; MB/s of text and tokens/s per tokenizer, and each one's ratio to the first (the baseline,
// e.g. the Llama-2 SentencePiece model). A byte-level BPE's first pass fills its per-thread cache
// of pre-tokens; the later passes are printed apart.
//
// usage: tokenizer_bench [--passes N] [--input FILE.jsonl[.gz]]... LABEL=TOKENIZER...
//   e.g. tokenizer_bench llama2-spm=build/assets/llama2-tokenizer.model \
//          llama3=build/assets/llama3/tokenizer.json qwen3=build/assets/qwen3/tokenizer.json
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "io/corpus.hpp"
#include "io/tokenizer.hpp"

using namespace xy;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  int passes = 3;
  std::vector<std::string> inputs;
  std::vector<std::pair<std::string, std::string>> toks;  // label, path
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--passes" && i + 1 < argc) {
      passes = std::max(2, std::atoi(argv[++i]));
    } else if (a == "--input" && i + 1 < argc) {
      inputs.push_back(argv[++i]);
    } else if (a.find('=') != std::string::npos) {
      toks.emplace_back(a.substr(0, a.find('=')), a.substr(a.find('=') + 1));
    } else {
      std::fprintf(stderr, "usage: tokenizer_bench [--passes N] [--input FILE]... LABEL=TOKENIZER...\n");
      return 2;
    }
  }
  if (toks.empty()) {
    std::fprintf(stderr, "usage: tokenizer_bench [--passes N] [--input FILE]... LABEL=TOKENIZER...\n");
    return 2;
  }
  if (inputs.empty()) inputs.push_back("data/sample/fincorpus_sample.jsonl.gz");

  std::vector<std::string> docs;
  size_t bytes = 0;
  try {
    for_each_document(inputs, "text", [&](const std::string& d) { docs.push_back(d); bytes += d.size(); }, nullptr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
    return 1;
  }
  std::printf("%zu documents, %.2f MB of text; %d passes per tokenizer, one thread\n", docs.size(), bytes / 1e6,
              passes);
  std::printf("%-12s %10s %12s %12s %12s %14s %10s\n", "tokenizer", "vocab", "tokens", "pass 1 MB/s",
              "later MB/s", "later tok/s", "vs first");
  double base = 0;
  for (const auto& [label, path] : toks) {
    std::unique_ptr<Tokenizer> tok;
    try {
      tok = Tokenizer::load(path);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
      return 1;
    }
    size_t tokens = 0;
    double first = 0, best_later = 1e30;
    for (int p = 0; p < passes; ++p) {
      size_t n = 0;
      const auto t0 = Clock::now();
      for (const std::string& d : docs) n += tok->encode(d).size();
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      tokens = n;
      if (p == 0) first = s;
      else best_later = std::min(best_later, s);
    }
    const double mbs = bytes / 1e6 / best_later;
    if (base == 0) base = mbs;
    std::printf("%-12s %10lld %12zu %12.2f %12.2f %14.0f %9.2fx\n", label.c_str(),
                static_cast<long long>(tok->vocab_size()), tokens, bytes / 1e6 / first, mbs, tokens / best_later,
                mbs / base);
  }
  return 0;
}
