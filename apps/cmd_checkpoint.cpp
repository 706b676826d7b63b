// `xy-node verify CHECKPOINT`: checks that a checkpoint is complete and intact (every rank file
// present with the manifest's size and SHA-256) and summarises it. Exit 0 if good, 1 if not.
#include <cxxopts.hpp>

#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "ckpt/checkpoint_io.hpp"
#include "actors/engine.hpp"
#include "apps/commands.hpp"
#include "io/error_text.hpp"
#include "io/sha256.hpp"
#include "io/tokenizer.hpp"
#include "model/hf_io.hpp"
#include "model/layout.hpp"

int cmd_verify(int argc, char** argv) {
  cxxopts::Options opts("xy-node verify", "Check a checkpoint against its manifest.");
  opts.add_options()
      ("checkpoint", "a checkpoint directory, or 'latest' with --dir", cxxopts::value<std::string>())
      ("dir", "the checkpoint root that 'latest' refers to", cxxopts::value<std::string>()->default_value("."))
      ("h,help", "show this help");
  opts.parse_positional({"checkpoint"});
  opts.positional_help("CHECKPOINT");
  cxxopts::ParseResult args;
  if (const int rc = parse_options(opts, argc, argv, "verify", args); rc >= 0) return rc;
  if (!args.count("checkpoint")) {
    std::cout << opts.help();
    return xy::kExitUsage;
  }
  try {
    const std::string dir =
        xy::resolve_checkpoint(args["checkpoint"].as<std::string>(), args["dir"].as<std::string>());
    const xy::CheckpointManifest man = xy::read_checkpoint(dir, /*verify=*/true);
    int64_t bytes = 0;
    for (const auto& f : man.files) bytes += f.bytes;
    std::printf("%s: good: step %lld, world size %d, %zu units, %zu files, %.1f MiB, all SHA-256 "
                "match\n",
                dir.c_str(), static_cast<long long>(man.step), man.world_size, man.units.size(),
                man.files.size(), bytes / 1048576.0);
    return xy::kExitOk;
  } catch (const std::exception& e) {
    std::cerr << "xy-node verify: " << xy::without_backtrace(e.what()) << "\n";
    return xy::kExitError;
  }
}

namespace {

// The bytes of a regular file of at most 1 GiB (a tokenizer; a manifest could name /dev/zero), or
// nullopt with the reason in *why.
std::optional<std::string> read_small_file(const std::string& path, std::string* why) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    *why = std::strerror(errno);
    return std::nullopt;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > (int64_t{1} << 30)) {
    *why = "not a regular file of at most 1 GiB";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    *why = "read error";
    return std::nullopt;
  }
  return bytes;
}

std::string sha256_of(const std::string& bytes) {
  xy::Sha256 sha;
  sha.update(bytes.data(), bytes.size());
  return sha.hex();
}

// The files an export copies for the tokenizer file `file` (holding `bytes`): a tokenizer.json,
// with the tokenizer_config.json beside it if there is one, or a SentencePiece model as
// tokenizer.model (how transformers finds them in a folder).
std::vector<std::pair<std::string, std::string>> tokenizer_files(const std::string& file, std::string bytes) {
  std::vector<std::pair<std::string, std::string>> files;
  if (file.size() >= 5 && file.compare(file.size() - 5, 5, ".json") == 0) {
    files.emplace_back("tokenizer.json", std::move(bytes));
    std::string why;
    const std::string beside = (std::filesystem::path(file).parent_path() / "tokenizer_config.json").string();
    if (auto cfg = read_small_file(beside, &why)) files.emplace_back("tokenizer_config.json", std::move(*cfg));
  } else {
    files.emplace_back("tokenizer.model", std::move(bytes));
  }
  return files;
}

std::string id_text(int32_t id) { return id < 0 ? "null" : std::to_string(id); }

}  // namespace

// `xy-node export CHECKPOINT --out DIR`: a checkpoint (through the same reader and verification
// as resume) as a Hugging Face folder: config.json + safetensors (sharded, with an index, above
// --shard-gb) in bf16 or fp32, from the fp32 master weights, with the run's tokenizer (recorded in
// the manifest: its bos/eos ids in config.json and generation_config.json, its files copied when
// unchanged; --tokenizer overrides). Progress on stderr.
int cmd_export(int argc, char** argv) {
  cxxopts::Options opts("xy-node export",
                        "Write a checkpoint as a Hugging Face transformers folder (Llama, Qwen2, Qwen3).");
  opts.add_options()
      ("checkpoint", "a checkpoint directory, or 'latest' with --dir", cxxopts::value<std::string>())
      ("dir", "the checkpoint root that 'latest' refers to", cxxopts::value<std::string>()->default_value("."))
      ("out", "the folder to write (must not exist or be empty)", cxxopts::value<std::string>())
      ("dtype", "bf16 or fp32", cxxopts::value<std::string>()->default_value("bf16"))
      ("shard-gb", "largest safetensors file, in GiB", cxxopts::value<double>()->default_value("5"))
      ("tokenizer", "the tokenizer to copy and take bos/eos ids from (a tokenizer.json, its "
       "directory, or a SentencePiece .model) instead of the one the run recorded",
       cxxopts::value<std::string>())
      ("h,help", "show this help");
  opts.parse_positional({"checkpoint"});
  opts.positional_help("CHECKPOINT");
  cxxopts::ParseResult args;
  if (const int rc = parse_options(opts, argc, argv, "export", args); rc >= 0) return rc;
  if (!args.count("checkpoint") || !args.count("out")) {
    std::cerr << "xy-node export: CHECKPOINT and --out are required\n" << opts.help();
    return xy::kExitUsage;
  }
  const std::string dtype_name = args["dtype"].as<std::string>();
  if (dtype_name != "bf16" && dtype_name != "fp32") {
    std::cerr << "xy-node export: --dtype " << dtype_name << ": valid: bf16, fp32\n";
    return xy::kExitUsage;
  }
  // GiB -> bytes in int64: a sane range, not 1e300 wrapped around (or a file per byte).
  const double shard_gb = args["shard-gb"].as<double>();
  if (!(shard_gb >= 0.001 && shard_gb <= 1048576)) {
    std::cerr << "xy-node export: --shard-gb " << shard_gb << ": valid: 0.001..1048576 (GiB)\n";
    return xy::kExitUsage;
  }
  try {
    const std::string dir =
        xy::resolve_checkpoint(args["checkpoint"].as<std::string>(), args["dir"].as<std::string>());
    const xy::CheckpointManifest man = xy::read_checkpoint(dir, /*verify=*/true);
    // The tokenizer: --tokenizer, else the one the manifest records (copied only when its file
    // still has the recorded SHA-256), else (older manifests) the ids xy always wrote for Llama.
    xy::HfFolderExtras extras;
    extras.generation_config = true;
    if (args.count("tokenizer")) {
      const std::string path = args["tokenizer"].as<std::string>();
      std::unique_ptr<xy::Tokenizer> tok;
      std::optional<std::string> bytes;
      std::string why;
      try {
        tok = xy::Tokenizer::load(path);
        bytes = read_small_file(tok->path(), &why);
      } catch (const xy::TokenizerError& e) {
        why = e.what();
      }
      if (!bytes) {
        std::cerr << "xy-node export: --tokenizer " << path << ": " << why << "\n";
        return xy::kExitUsage;
      }
      if (tok->vocab_size() > man.model.vocab_size) {
        std::cerr << "xy-node export: --tokenizer " << path << " has " << tok->vocab_size()
                  << " ids, more than the model's vocab_size " << man.model.vocab_size << " (" << dir << ")\n";
        return xy::kExitUsage;
      }
      if (man.tokenizer && man.tokenizer->sha256 != sha256_of(*bytes))
        std::cerr << "xy-node export: note: --tokenizer " << path << " is not the tokenizer the run used ("
                  << man.tokenizer->file << ")\n";
      extras.token_ids = {tok->bos_id(), tok->eos_id()};
      extras.files = tokenizer_files(tok->path(), std::move(*bytes));
    } else if (man.tokenizer) {
      const xy::TokenizerRecord& t = *man.tokenizer;
      extras.token_ids = {t.bos_id, t.eos_id};
      std::string why;
      std::optional<std::string> bytes = read_small_file(t.file, &why);
      if (bytes && sha256_of(*bytes) != t.sha256)
        why = "it has changed since training (sha256 " + sha256_of(*bytes) + ", the manifest records " +
              t.sha256 + ")";
      if (!why.empty())
        std::cerr << "xy-node export: the tokenizer was not copied: " << t.file << ": " << why
                  << "; config.json has the recorded ids (bos " << id_text(t.bos_id) << ", eos "
                  << id_text(t.eos_id) << "); --tokenizer PATH copies one\n";
      else
        extras.files = tokenizer_files(t.file, std::move(*bytes));
    } else {
      // Before the record: Llama checkpoints had xy's SentencePiece ids (bos/eos 1/2); for Qwen
      // there is no such guess.
      const bool llama = man.model.family.empty() || man.model.family == "llama";
      extras.token_ids = llama ? xy::HfTokenIds{1, 2} : xy::HfTokenIds{-1, -1};
      std::cerr << "xy-node export: " << dir << "/manifest.json records no tokenizer (written before xy "
                << "recorded it): config.json gets bos/eos " << (llama ? "1/2 (Llama-2's)" : "null")
                << " and no tokenizer is copied; --tokenizer PATH copies one and takes its ids\n";
    }
    const xy::ModelLayout layout = xy::build_layout(man.model, 1, {});
    if (layout.units.size() != man.units.size())
      throw xy::CheckpointError(dir + ": the manifest's units do not match its model shape");
    std::vector<at::Tensor> units;
    for (size_t u = 0; u < man.units.size(); ++u)
      units.push_back(xy::read_unit_state(man, static_cast<int>(u)).master);
    const bool tty = isatty(fileno(stderr));
    int last_pct = -1;
    const auto t0 = std::chrono::steady_clock::now();
    auto progress = [&](uint64_t done, uint64_t total) {
      const int pct = total ? static_cast<int>(100 * done / total) : 100;
      if (pct == last_pct || (!tty && pct % 10 != 0 && pct != 100)) return;
      last_pct = pct;
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "%sxy: export %3d%% (%.0f of %.0f MiB, %.0f MiB/s)%s", tty ? "\r" : "",
                   pct, done / 1048576.0, total / 1048576.0, done / 1048576.0 / std::max(s, 1e-9),
                   tty && pct < 100 ? "" : "\n");
    };
    const std::string out = args["out"].as<std::string>();
    xy::save_hf_model(out, man.model, layout, units,
                      dtype_name == "bf16" ? at::kBFloat16 : at::kFloat,
                      static_cast<int64_t>(shard_gb * 1073741824.0), progress, extras);
    std::string tokenizer = "no tokenizer";
    for (size_t i = 0; i < extras.files.size(); ++i)
      tokenizer = (i ? tokenizer + " + " : std::string()) + extras.files[i].first;
    std::printf("xy: exported %s (step %lld) to %s (%s; %s; bos %s, eos %s)\n", dir.c_str(),
                static_cast<long long>(man.step), out.c_str(), dtype_name.c_str(), tokenizer.c_str(),
                id_text(extras.token_ids.bos).c_str(), id_text(extras.token_ids.eos).c_str());
    return xy::kExitOk;
  } catch (const std::exception& e) {
    std::cerr << "xy-node export: " << xy::without_backtrace(e.what()) << "\n";
    return xy::kExitError;
  }
}
