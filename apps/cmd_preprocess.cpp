// `xy-node preprocess`: the command line over xy::preprocess (io/preprocess.hpp; docs/DATA.md).
#include <cxxopts.hpp>

#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.hpp"
#include "io/preprocess.hpp"

namespace {
constexpr int kOk = 0, kError = 1, kUsage = 2;  // as xy-node's other commands
}

int cmd_preprocess(int argc, char** argv) {
  cxxopts::Options opts("xy-node preprocess",
                        "Tokenize JSONL corpora (plain, .gz, .zst) into packed token shards for "
                        "training (data.shards). Rerun the same command to resume. See docs/DATA.md.");
  opts.positional_help("INPUT...");
  xy::PreprocessOptions d;
  opts.add_options()
      ("o,output", "output directory (shards, manifest.json)", cxxopts::value<std::string>())
      ("t,tokenizer", "SentencePiece .model file", cxxopts::value<std::string>())
      ("text-field", "JSON key holding each document's text",
       cxxopts::value<std::string>()->default_value(d.text_field))
      ("packing", "concat (BOS ids EOS per document, concatenated) or llm-code (groups of "
       "--group-docs documents, each padded with EOS to a multiple of --seq-len; EOS masked "
       "from the labels)", cxxopts::value<std::string>()->default_value(d.packing))
      ("seq-len", "llm-code: the training sample length groups are padded to",
       cxxopts::value<int64_t>()->default_value("0"))
      ("group-docs", "llm-code: documents per padded group",
       cxxopts::value<int64_t>()->default_value(std::to_string(d.group_documents)))
      ("j,threads", "encoding threads; 0 = all cores", cxxopts::value<int>()->default_value("0"))
      ("shard-mb", "shard size in MiB of tokens (default 256)", cxxopts::value<int64_t>())
      ("shard-tokens", "shard size in tokens (overrides --shard-mb)", cxxopts::value<int64_t>())
      ("memory-mb", "bound on the text and tokens in flight",
       cxxopts::value<int64_t>()->default_value(std::to_string(d.memory_mb)))
      ("max-line-bytes", "longer lines are skipped (line_too_long)",
       cxxopts::value<int64_t>()->default_value(std::to_string(d.max_line_bytes)))
      ("chunk-bytes", "bytes of text per unit of work and between resume points; 0 = from "
       "--memory-mb and --threads", cxxopts::value<int64_t>()->default_value("0"))
      ("strict", "stop at the first bad line (exit 1 with file:line)")
      ("report", "bad lines reported with file:line",
       cxxopts::value<int>()->default_value(std::to_string(d.report_limit)))
      ("progress", "auto | tty | lines | none",
       cxxopts::value<std::string>()->default_value(d.progress))
      ("progress-every", "seconds between progress lines when not on a TTY",
       cxxopts::value<double>()->default_value("10"))
      ("stop-after-shards", "testing: stop as if killed after N shards",
       cxxopts::value<int64_t>()->default_value("0"))
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
  o.seq_len = a["seq-len"].as<int64_t>();
  o.group_documents = a["group-docs"].as<int64_t>();
  o.threads = a["threads"].as<int>();
  o.memory_mb = a["memory-mb"].as<int64_t>();
  o.max_line_bytes = a["max-line-bytes"].as<int64_t>();
  o.chunk_bytes = a["chunk-bytes"].as<int64_t>();
  o.strict = a.count("strict") > 0;
  o.report_limit = a["report"].as<int>();
  o.progress = a["progress"].as<std::string>();
  o.progress_every_s = a["progress-every"].as<double>();
  o.stop_after_shards = a["stop-after-shards"].as<int64_t>();
  if (a.count("shard-mb")) o.shard_mb = a["shard-mb"].as<int64_t>();
  if (a.count("shard-tokens")) o.shard_tokens = a["shard-tokens"].as<int64_t>();
  if (o.progress != "auto" && o.progress != "tty" && o.progress != "lines" && o.progress != "none") {
    std::cerr << "xy-node preprocess: --progress must be auto, tty, lines or none\n";
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
    std::cerr << "\nxy-node preprocess: " << e.what() << "\n";
    return kError;
  }
}
