// xy-node: the one command of xy. `xy-node <command> [options]`; `xy-node <command> --help`.
//
// This binary does not link LibTorch, whose loading and static initialisation cost ~0.7 s per
// process start on the CPU build and more on the CUDA one: `preprocess` and `status` run here, and
// for every other command it executes xy-node-engine (built next to it) in place, with the same
// arguments and environment: the process id stays the same, so supervisors, `timeout` and signals
// see one process.
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <iostream>
#include <string>

#include "actors/exit_codes.hpp"
#include "apps/commands.hpp"

namespace {

// The directory of this executable (where xy-node-engine is built and installed).
std::string self_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

int launch(int argc, char** argv) {
  if (const int rc = run_light_command(argc, argv); rc >= 0) return rc;
  const std::string cmd = argv[1];
  if (cmd != "train" && cmd != "verify" && cmd != "export" && cmd != "doctor")
    return unknown_command(cmd);
  const std::string engine = self_dir() + "/xy-node-engine";
  // `train --restarts N`: this process stays, as the engine's supervisor (apps/supervise.cpp).
  if (cmd == "train")
    for (int i = 2; i < argc; ++i)
      if (std::string(argv[i]) == "--restarts" || std::string(argv[i]).rfind("--restarts=", 0) == 0)
        return supervise_train(engine, argc, argv);
  ::execv(engine.c_str(), argv);
  const int e = errno;
  std::cerr << "xy-node " << cmd << ": cannot run the engine '" << engine << "': " << std::strerror(e)
            << " (xy-node-engine is built and installed next to xy-node: "
               "cmake --build build --target xy-node)\n";
  return xy::kExitError;
}

}  // namespace

int main(int argc, char** argv) { return run_guarded(argc, argv, launch); }
