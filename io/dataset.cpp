// Corpus -> tokenizer -> token cache -> samples (see dataset.hpp).
#include "io/atomic_file.hpp"
#include "io/dataset.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/corpus.hpp"
#include "io/hf_config.hpp"
#include "preprocess/preprocess.hpp"
#include "io/shards.hpp"
#include "io/tokenizer.hpp"

namespace fs = std::filesystem;

namespace xy {
namespace {

// What the token cache was made from: input names, sizes and mtimes, tokenizer path and size.
nlohmann::json cache_key(const Config& cfg, const std::string& tokenizer) {
  nlohmann::json k;
  for (const auto& in : cfg.data.inputs) {
    std::error_code ec;
    const auto size = fs::file_size(in, ec);
    const auto mtime = fs::last_write_time(in, ec).time_since_epoch().count();
    k["inputs"].push_back({{"path", in}, {"bytes", ec ? -1 : static_cast<int64_t>(size)},
                           {"mtime", mtime}});
  }
  std::error_code ec;
  k["tokenizer"] = {{"path", tokenizer},
                    {"bytes", static_cast<int64_t>(fs::file_size(Tokenizer::file_of(tokenizer), ec))}};
  k["text_field"] = cfg.data.text_field;
  return k;
}

// The file a tokenizer path names, absolute (what a checkpoint records: export may run elsewhere).
std::string absolute_file(const std::string& tokenizer) {
  std::error_code ec;
  const fs::path p = fs::absolute(Tokenizer::file_of(tokenizer), ec);
  return ec ? Tokenizer::file_of(tokenizer) : p.lexically_normal().string();
}

// data.shards: the memory-mapped output of `xy-node preprocess`, checked against the config.
PreparedData prepare_shards(const Config& cfg, std::ostream& log) {
  std::shared_ptr<ShardSamples> shards;
  try {
    // Verified before training: every shard's CRC-32 and every id below the vocabulary (an id
    // beyond it would end the first step in an embedding's index error). Cost: docs/DATA.md.
    shards = ShardSamples::open(cfg.data.shards, cfg.data.seq_len, /*verify=*/true);
  } catch (const ShardError& e) {
    throw std::runtime_error(std::string(e.what()) + " (data.shards in " + cfg.source + ")");
  }
  const ShardManifest& m = shards->manifest();
  PreparedData out;
  out.tokenizer_path = cfg.data.tokenizer.empty() ? m.tokenizer_path : cfg.data.tokenizer;
  if (!cfg.data.tokenizer.empty()) {
    const std::string sha = sha256_file(Tokenizer::file_of(cfg.data.tokenizer));
    // data.tokenizer is model.init_from's when the config left it empty (load_config).
    const bool from_model = !cfg.model.init_from.empty() &&
                            cfg.data.tokenizer == hf_folder_tokenizer(cfg.model.init_from);
    if (sha != m.tokenizer_sha256)
      throw std::runtime_error(
          (from_model ? "the tokenizer of model.init_from, '" : "data.tokenizer '") + cfg.data.tokenizer +
          "' (sha256 " + sha + ") is not the tokenizer the shards in '" + cfg.data.shards +
          "' were made with ('" + m.tokenizer_path + "', sha256 " + m.tokenizer_sha256 + "); " +
          (from_model ? "preprocess again with the model's tokenizer: its ids are what the model's "
                        "embedding rows mean"
                      : "leave data.tokenizer empty or preprocess again"));
  }
  if (cfg.model.vocab_size != 0 && cfg.model.vocab_size < m.vocab)
    throw std::runtime_error("model.vocab_size = " + std::to_string(cfg.model.vocab_size) +
                             " is smaller than the vocabulary of the shards' tokenizer (" +
                             std::to_string(m.vocab) + ", " + cfg.data.shards + "/manifest.json)");
  out.vocab = m.vocab;
  out.eos_id = m.eos_id;
  // The shards' tokenizer as recorded (its file need not exist here; export checks it).
  out.tokenizer = {absolute_file(out.tokenizer_path), m.tokenizer_sha256, m.vocab, m.bos_id, m.eos_id};
  out.documents = m.documents;
  out.tokens = m.tokens;
  out.samples = shards;
  log << "xy: " << cfg.data.shards << ": " << m.shard_sizes.size() << " shards, " << m.documents
      << " documents, " << m.tokens << " tokens (" << m.packing << " packing); CRC-32 and ids "
      << "verified in " << std::fixed << std::setprecision(2) << shards->verify_seconds() << " s"
      << std::defaultfloat << std::endl;
  if (shards->size() == 0)
    throw std::runtime_error("the shards in '" + cfg.data.shards + "' hold " +
                             std::to_string(m.tokens) + " tokens: not one sample of data.seq_len = " +
                             std::to_string(cfg.data.seq_len));
  return out;
}

}  // namespace

PreparedData prepare_data(const Config& cfg, std::ostream& log) {
  if (!cfg.data.shards.empty()) return prepare_shards(cfg, log);
  const fs::path work = cfg.data.work_dir;
  fs::create_directories(work);
  for (const auto& in : cfg.data.inputs)
    if (!fs::exists(in))
      throw std::runtime_error("data input '" + in + "' (data.inputs in " + cfg.source +
                               ") does not exist");

  PreparedData out;
  out.tokenizer_path = cfg.data.tokenizer;
  if (out.tokenizer_path.empty()) {
    out.tokenizer_path = (work / "tokenizer.model").string();
    if (!fs::exists(out.tokenizer_path)) {
      const std::string text = (work / "corpus.txt").string();
      {
        std::ofstream o(text);
        CorpusStats st;
        for_each_document(cfg.data.inputs, cfg.data.text_field, [&](const std::string& doc) {
          // SentencePiece reads one sentence per line (and skips lines over 4192 bytes): give
          // it each non-empty line of the document.
          size_t start = 0;
          while (start < doc.size()) {
            size_t end = doc.find('\n', start);
            if (end == std::string::npos) end = doc.size();
            std::string line = doc.substr(start, end - start);
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (!line.empty()) o << line << '\n';
            start = end + 1;
          }
        }, &st);
        if (!o) throw std::runtime_error("cannot write " + text);
      }
      log << "xy: training a " << cfg.data.tokenizer_vocab << "-piece BPE tokenizer on "
          << text << std::endl;
      Tokenizer::train(text, (work / "tokenizer").string(), cfg.data.tokenizer_vocab);
    }
  }
  auto tok = Tokenizer::load(out.tokenizer_path);
  out.vocab = tok->vocab_size();
  out.eos_id = tok->eos_id();
  out.tokenizer = {absolute_file(out.tokenizer_path), sha256_file(tok->path()), out.vocab, tok->bos_id(),
                   out.eos_id};

  const fs::path cache = work / "tokens.bin", meta = work / "tokens.json";
  const nlohmann::json key = cache_key(cfg, out.tokenizer_path);
  std::vector<int32_t> ids;
  bool cached = false;
  if (fs::exists(cache) && fs::exists(meta)) {
    std::ifstream m(meta);
    nlohmann::json stored = nlohmann::json::parse(m, nullptr, /*allow_exceptions=*/false);
    if (!stored.is_discarded() && stored.value("key", nlohmann::json()) == key) {
      int64_t vocab = 0;
      ids = read_token_file(cache.string(), &vocab);
      out.documents = stored.value("documents", int64_t{0});
      cached = true;
    }
  }
  if (!cached) {
    CorpusStats st;
    ids = tokenize_corpus(cfg.data.inputs, cfg.data.text_field, *tok, &st);
    out.documents = st.documents;
    log << "xy: tokenized " << st.documents << " documents into " << ids.size() << " tokens";
    if (st.skipped) log << " (" << st.skipped << " lines skipped; first: " << st.first_problem << ")";
    log << std::endl;
    write_token_file(cache.string(), ids, out.vocab);
    write_file_atomic(meta.string(),
                      nlohmann::json{{"key", key}, {"documents", st.documents}, {"tokens", ids.size()}}.dump(2));
  }
  out.tokens = static_cast<int64_t>(ids.size());
  out.samples = std::make_shared<TokenSamples>(std::move(ids), cfg.data.seq_len, out.vocab);
  if (out.samples->size() == 0)
    throw std::runtime_error("the corpus has " + std::to_string(out.tokens) +
                             " tokens: not one sample of data.seq_len = " +
                             std::to_string(cfg.data.seq_len));
  return out;
}

std::vector<EvalSet> prepare_eval_sets(const Config& cfg, const std::string& tokenizer_path,
                                       std::ostream& log) {
  std::vector<EvalSet> sets;
  std::shared_ptr<Tokenizer> tok;
  for (const std::string& spec : cfg.eval.sets) {
    EvalSet set;
    const size_t eq = spec.find('=');
    set.name = spec.substr(0, eq);
    set.path = spec.substr(eq + 1);
    const std::string where = "eval set '" + set.name + "' (" + set.path + ", eval.sets in " + cfg.source + ")";
    std::error_code ec;
    if (!fs::exists(set.path, ec)) throw std::runtime_error(where + ": does not exist");
    if (fs::is_directory(set.path, ec)) {
      std::shared_ptr<ShardSamples> shards;
      try {
        shards = ShardSamples::open(set.path, cfg.data.seq_len, /*verify=*/true);
      } catch (const ShardError& e) {
        throw std::runtime_error(where + ": " + e.what());
      }
      if (shards->manifest().tokenizer_sha256 != sha256_file(Tokenizer::file_of(tokenizer_path)))
        throw std::runtime_error(where + ": made with the tokenizer '" + shards->manifest().tokenizer_path +
                                 "', not this job's '" + tokenizer_path + "'");
      set.samples = shards;
    } else {
      if (!tok) tok = Tokenizer::load(tokenizer_path);
      CorpusStats st;
      std::vector<int32_t> ids = tokenize_corpus({set.path}, cfg.data.text_field, *tok, &st);
      set.samples = std::make_shared<TokenSamples>(std::move(ids), cfg.data.seq_len, tok->vocab_size());
    }
    if (set.samples->size() == 0)
      throw std::runtime_error(where + ": not one sample of data.seq_len = " + std::to_string(cfg.data.seq_len) +
                               " tokens");
    const int64_t used = std::min(cfg.eval.samples, set.samples->size());
    log << "xy: eval set '" << set.name << "': " << set.samples->size() << " samples of "
        << cfg.data.seq_len << " tokens in " << set.path << "; " << used << " used" << std::endl;
    sets.push_back(std::move(set));
  }
  return sets;
}

}  // namespace xy
