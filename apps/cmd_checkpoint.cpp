// `xy-node verify CHECKPOINT`: checks that a checkpoint is complete and intact (every rank file
// present with the manifest's size and SHA-256) and summarises it. Exit 0 if good, 1 if not.
#include <cxxopts.hpp>

#include <cstdio>
#include <iostream>

#include "actors/checkpoint_io.hpp"
#include "actors/engine.hpp"
#include "apps/commands.hpp"

int cmd_verify(int argc, char** argv) {
  cxxopts::Options opts("xy-node verify", "Check a checkpoint against its manifest.");
  opts.add_options()
      ("checkpoint", "a checkpoint directory, or 'latest' with --dir", cxxopts::value<std::string>())
      ("dir", "the checkpoint root that 'latest' refers to", cxxopts::value<std::string>()->default_value("."))
      ("h,help", "show this help");
  opts.parse_positional({"checkpoint"});
  opts.positional_help("CHECKPOINT");
  cxxopts::ParseResult args;
  try {
    args = opts.parse(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "xy-node verify: " << e.what() << "\n" << opts.help();
    return xy::kExitUsage;
  }
  if (args.count("help") || !args.count("checkpoint")) {
    std::cout << opts.help();
    return args.count("help") ? xy::kExitOk : xy::kExitUsage;
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
    std::cerr << "xy-node verify: " << e.what() << "\n";
    return xy::kExitError;
  }
}
