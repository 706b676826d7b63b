// `xy-node preprocess`: the command line over xy::preprocess (preprocess/preprocess.hpp; docs/DATA.md).
#include <unistd.h>

#include <cxxopts.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.hpp"
#include "preprocess/preprocess.hpp"

namespace {
constexpr int kOk = 0, kError = 1, kUsage = 2;  // as xy-node's other commands

// The integer value of --name: all of it digits (an optional leading '-'), within int64.
bool parse_int(const cxxopts::ParseResult& a, const char* name, int64_t& out, std::string& bad) {
  const std::string v = a[name].as<std::string>();
  int64_t x = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  if (r.ec == std::errc::result_out_of_range) {
    bad = std::string("--") + name + " " + v + " is out of range (not a 64-bit integer)";
    return false;
  }
  if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size()) {
    bad = std::string("--") + name + " '" + v + "' is not an integer";
    return false;
  }
  out = x;
  return true;
}

// A number of seconds: a whole decimal number, finite (the range is check_options').
bool parse_seconds(const cxxopts::ParseResult& a, const char* name, double& out, std::string& bad) {
  const std::string v = a[name].as<std::string>();
  char* end = nullptr;
  errno = 0;
  const double x = v.empty() || std::isspace(static_cast<unsigned char>(v[0])) ? 0 : std::strtod(v.c_str(), &end);
  if (v.empty() || end != v.c_str() + v.size() || errno == ERANGE || !std::isfinite(x)) {
    bad = std::string("--") + name + " '" + v + "' is not a number of seconds";
    return false;
  }
  out = x;
  return true;
}
}  // namespace

int cmd_preprocess(int argc, char** argv) {
  cxxopts::Options opts("xy-node preprocess",
                        "Tokenize JSONL corpora (plain, .gz, .zst) into packed token shards for "
                        "training (data.shards). Rerun the same command to resume. See docs/DATA.md.");
  opts.positional_help("INPUT...");
  xy::PreprocessOptions d;
  opts.add_options()
      ("o,output", "output directory (shards, manifest.json)", cxxopts::value<std::string>())
      ("t,tokenizer", "SentencePiece .model file, or a Hugging Face tokenizer.json (or its directory)",
       cxxopts::value<std::string>())
      ("text-field", "JSON key holding each document's text",
       cxxopts::value<std::string>()->default_value(d.text_field))
      ("packing", "concat (BOS ids EOS per document, concatenated) or llm-code (groups of "
       "--group-docs documents, each padded with EOS to a multiple of --seq-len; EOS masked "
       "from the labels)", cxxopts::value<std::string>()->default_value(d.packing))
      ("seq-len", "llm-code: the training sample length groups are padded to",
       cxxopts::value<std::string>()->default_value("0"))
      ("group-docs", "llm-code: documents per padded group",
       cxxopts::value<std::string>()->default_value(std::to_string(d.group_documents)))
      ("j,threads", "encoding threads; 0 = all cores", cxxopts::value<std::string>()->default_value("0"))
      ("shard-mb", "shard size in MiB of tokens (default 256)", cxxopts::value<std::string>())
      ("shard-tokens", "shard size in tokens (overrides --shard-mb)", cxxopts::value<std::string>())
      ("memory-mb", "bound on the text and tokens in flight",
       cxxopts::value<std::string>()->default_value(std::to_string(d.memory_mb)))
      ("max-line-bytes", "longer lines are skipped (line_too_long)",
       cxxopts::value<std::string>()->default_value(std::to_string(d.max_line_bytes)))
      ("chunk-bytes", "bytes of text per unit of work and between resume points; 0 = from "
       "--memory-mb and --threads", cxxopts::value<std::string>()->default_value("0"))
      ("strict", "stop at the first bad line (exit 1 with file:line)")
      ("report", "bad lines reported with file:line",
       cxxopts::value<std::string>()->default_value(std::to_string(d.report_limit)))
      ("progress", "auto | tty | lines | none",
       cxxopts::value<std::string>()->default_value(d.progress))
      ("progress-every", "seconds between progress lines when not on a TTY",
       cxxopts::value<std::string>()->default_value("10"))
      ("stop-after-shards", "testing: stop as if killed after N shards",
       cxxopts::value<std::string>()->default_value("0"))
      ("inputs", "JSONL files, directories or globs", cxxopts::value<std::vector<std::string>>())
      ("h,help", "show this help");
  opts.parse_positional({"inputs"});
  cxxopts::ParseResult a;
  if (const int rc = parse_options(opts, argc, argv, "preprocess", a); rc >= 0) return rc;
  for (const char* req : {"output", "tokenizer", "inputs"})
    if (!a.count(req)) {
      std::cerr << "xy-node preprocess: " << (std::string(req) == "inputs" ? "INPUT..." : "--" + std::string(req))
                << " is required\n" << opts.help();
      return kUsage;
    }
  xy::PreprocessOptions o;
  o.inputs = a["inputs"].as<std::vector<std::string>>();
  o.output = a["output"].as<std::string>();
  o.tokenizer = a["tokenizer"].as<std::string>();
  o.text_field = a["text-field"].as<std::string>();
  o.packing = a["packing"].as<std::string>();
  o.strict = a.count("strict") > 0;
  o.progress = a["progress"].as<std::string>();
  // Numbers are parsed here, whole and checked (cxxopts would wrap or say "failed to parse"
  // without the flag), then their ranges by xy::check_options: each problem is one line naming
  // the flag, exit 2, before anything is read or written.
  std::string bad;
  int64_t threads = 0, report = 0;
  if (!(parse_int(a, "seq-len", o.seq_len, bad) && parse_int(a, "group-docs", o.group_documents, bad) &&
        parse_int(a, "threads", threads, bad) && parse_int(a, "memory-mb", o.memory_mb, bad) &&
        parse_int(a, "max-line-bytes", o.max_line_bytes, bad) &&
        parse_int(a, "chunk-bytes", o.chunk_bytes, bad) && parse_int(a, "report", report, bad) &&
        parse_int(a, "stop-after-shards", o.stop_after_shards, bad) &&
        (!a.count("shard-mb") || parse_int(a, "shard-mb", o.shard_mb, bad)) &&
        (!a.count("shard-tokens") || parse_int(a, "shard-tokens", o.shard_tokens, bad)) &&
        parse_seconds(a, "progress-every", o.progress_every_s, bad))) {
    std::cerr << "xy-node preprocess: " << bad << "\n";
    return kUsage;
  }
  // Out-of-range values of the int fields are refused by check_options through a clamped copy.
  o.threads = static_cast<int>(std::clamp<int64_t>(threads, -1, xy::kPreprocessMaxThreads + 1));
  o.report_limit = static_cast<int>(std::clamp<int64_t>(report, -1, xy::kPreprocessMaxReports + 1));
  if (threads != o.threads || report != o.report_limit) {
    std::cerr << "xy-node preprocess: "
              << (threads != o.threads ? "--threads " + std::to_string(threads) + " is out of range: it must be 0.." +
                                             std::to_string(xy::kPreprocessMaxThreads) + " (0 = all cores)"
                                       : "--report " + std::to_string(report) + " is out of range: it must be 0.." +
                                             std::to_string(xy::kPreprocessMaxReports))
              << "\n";
    return kUsage;
  }
  if (o.progress != "auto" && o.progress != "tty" && o.progress != "lines" && o.progress != "none") {
    std::cerr << "xy-node preprocess: --progress must be auto, tty, lines or none\n";
    return kUsage;
  }
  if (const std::string e = xy::check_options(o); !e.empty()) {
    std::cerr << "xy-node preprocess: " << e << "\n";
    return kUsage;
  }
  try {
    const xy::PreprocessResult r = xy::preprocess(o, std::cerr);
    if (r.already_complete) return kOk;
    int64_t skipped = 0;
    for (int64_t n : r.problems) skipped += n;
    std::cerr << "preprocess: done: " << r.documents << " documents, " << r.tokens << " tokens";
    if (r.padding) std::cerr << " (" << r.padding << " EOS padding)";
    std::cerr << " in " << r.shards << " shards; " << r.lines << " lines, " << skipped << " skipped";
    bool first = true;
    for (int k = 0; k < xy::kProblemKinds; ++k)
      if (r.problems[static_cast<size_t>(k)]) {
        std::cerr << (first ? " (" : ", ") << xy::problem_name(static_cast<xy::Problem>(k)) << " "
                  << r.problems[static_cast<size_t>(k)];
        first = false;
      }
    if (!first) std::cerr << ")";
    std::cerr << "; " << o.output << "/manifest.json\n";
    return kOk;
  } catch (const std::exception& e) {
    // On a terminal the live progress line is ended first; elsewhere the error is one line.
    std::cerr << (::isatty(2) ? "\n" : "") << "xy-node preprocess: " << e.what() << "\n";
    return kError;
  }
}
