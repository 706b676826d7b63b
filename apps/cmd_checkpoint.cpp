// `xy-node verify CHECKPOINT`: checks that a checkpoint is complete and intact (every rank file
// present with the manifest's size and SHA-256) and summarises it. Exit 0 if good, 1 if not.
#include <cxxopts.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "ckpt/checkpoint_io.hpp"
#include "actors/engine.hpp"
#include "apps/commands.hpp"
#include "io/error_text.hpp"
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

// `xy-node export CHECKPOINT --out DIR`: a checkpoint (through the same reader and verification
// as resume) as a Hugging Face folder: config.json + safetensors (sharded, with an index, above
// --shard-gb) in bf16 or fp32, from the fp32 master weights. Progress on stderr.
int cmd_export(int argc, char** argv) {
  cxxopts::Options opts("xy-node export",
                        "Write a checkpoint as a Hugging Face LlamaForCausalLM folder.");
  opts.add_options()
      ("checkpoint", "a checkpoint directory, or 'latest' with --dir", cxxopts::value<std::string>())
      ("dir", "the checkpoint root that 'latest' refers to", cxxopts::value<std::string>()->default_value("."))
      ("out", "the folder to write (must not exist or be empty)", cxxopts::value<std::string>())
      ("dtype", "bf16 or fp32", cxxopts::value<std::string>()->default_value("bf16"))
      ("shard-gb", "largest safetensors file, in GiB", cxxopts::value<double>()->default_value("5"))
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
                      static_cast<int64_t>(shard_gb * 1073741824.0), progress);
    std::printf("xy: exported %s (step %lld) to %s (%s)\n", dir.c_str(),
                static_cast<long long>(man.step), out.c_str(), dtype_name.c_str());
    return xy::kExitOk;
  } catch (const std::exception& e) {
    std::cerr << "xy-node export: " << xy::without_backtrace(e.what()) << "\n";
    return xy::kExitError;
  }
}
