// What the xy-node launcher and xy-node-engine share: the usage text, option parsing, and the
// malloc tuning of `preprocess`.
#include <sys/auxv.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

#include "actors/exit_codes.hpp"
#include "io/atomic_file.hpp"
#include "io/error_text.hpp"
#include "apps/commands.hpp"

const char* xy_usage() {
  return "usage: xy-node <command> [options]\n"
         "\n"
         "commands:\n"
         "  train    train a model as configured (xy-node train --config config/tiny.toml)\n"
         "  preprocess  tokenize JSONL corpora into token shards (docs/DATA.md)\n"
         "  verify   check a checkpoint against its manifest (sizes and SHA-256)\n"
         "  export   write a checkpoint as a Hugging Face folder (config.json + safetensors)\n"
         "  doctor   preflight checks of this node and its peers (xy-node doctor --config FILE)\n"
         "  status   live state of a running job (xy-node status --config FILE | --address HOST:PORT)\n"
         "  report   a run's metrics as one HTML file of charts (xy-node report RUN_DIR [--out FILE])\n"
         "\n"
         "Run 'xy-node <command> --help' for the options of a command.\n"
         "Exit codes: 0 done, 1 error, 2 bad usage or configuration, 3 stalled (watchdog report),\n"
         "4 a peer node was lost, 5 the watchdog itself was stuck (docs/OPERATIONS.md).\n";
}

int parse_options(cxxopts::Options& opts, int argc, char** argv, const char* name,
                  cxxopts::ParseResult& args) {
  try {
    args = opts.parse(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "xy-node " << name << ": " << e.what() << "\n" << opts.help();
    return xy::kExitUsage;
  }
  if (args.count("help")) {
    std::cout << opts.help();
    return xy::kExitOk;
  }
  return -1;
}

std::optional<long long> parse_integer(const std::string& s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  for (size_t j = i; j < s.size(); ++j)
    if (s[j] < '0' || s[j] > '9') return std::nullopt;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return std::nullopt;
  return v;
}

std::optional<double> parse_finite(const std::string& s) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v)) return std::nullopt;
  return v;
}

int run_guarded(int argc, char** argv, int (*command)(int, char**)) {
  const std::string who = "xy-node" + (argc > 1 ? std::string(" ") + argv[1] : std::string());
  try {
    return command(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << who << ": error: " << xy::without_backtrace(e.what()) << "\n";
  } catch (...) {
    std::cerr << who << ": error: an unknown exception\n";
  }
  return xy::kExitError;
}

int unknown_command(const std::string& cmd) {
  std::cerr << "xy-node: unknown command '" << cmd << "'\n" << xy_usage();
  return xy::kExitUsage;
}

int run_light_command(int argc, char** argv) {
  // A peer that died closes its sockets: writing to them must be an error (EPIPE) that the
  // control plane reports, not a SIGPIPE that kills this node without a word. (An ignored signal
  // stays ignored across the launcher's exec of the engine.)
  std::signal(SIGPIPE, SIG_IGN);
  // Files xy creates are owner-only unless XY_UMASK says otherwise (docs/OPERATIONS.md, "Security").
  try {
    xy::apply_file_mode_policy();
  } catch (const std::exception& e) {
    std::cerr << "xy-node: " << e.what() << "\n";
    return xy::kExitUsage;
  }
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << xy_usage();
    return argc < 2 ? xy::kExitUsage : xy::kExitOk;
  }
  const std::string cmd = argv[1];
  if (cmd == "preprocess") {
    tune_malloc_for_preprocessing(argv);
    return cmd_preprocess(argc - 1, argv + 1);
  }
  if (cmd == "status") return cmd_status(argc - 1, argv + 1);
  if (cmd == "report") return cmd_report(argc - 1, argv + 1);
  return -1;
}

void tune_malloc_for_preprocessing(char** argv) {
  const char* off = std::getenv("XY_MALLOC_TUNING");
  if (off && std::string(off) == "0") return;
  // Once only (XY_MALLOC_TUNED marks the re-executed process), and never in a secure-execution
  // process (setuid or file capabilities), where glibc drops GLIBC_TUNABLES.
  if (std::getenv("XY_MALLOC_TUNED") || getauxval(AT_SECURE)) return;
  const char* cur = std::getenv("GLIBC_TUNABLES");
  const std::string tunables = cur ? cur : "";
  if (tunables.find("glibc.malloc.tcache_count") != std::string::npos) return;
  const std::string v = (tunables.empty() ? "" : tunables + ":") + "glibc.malloc.tcache_count=4000";
  if (setenv("GLIBC_TUNABLES", v.c_str(), 1) != 0 || setenv("XY_MALLOC_TUNED", "1", 1) != 0) return;
  execv("/proc/self/exe", argv);
  if (cur) setenv("GLIBC_TUNABLES", cur, 1); else unsetenv("GLIBC_TUNABLES");
  unsetenv("XY_MALLOC_TUNED");
}

int node_index_from(const xy::Config& cfg, std::optional<int> flag) {
  const int nodes = static_cast<int>(cfg.topology.nodes.size());
  const std::string valid = "; valid: 0.." + std::to_string(nodes - 1) + " (" + cfg.source + " has " +
                            std::to_string(nodes) + " [[topology.nodes]])";
  long long index = cfg.topology.node_index;
  std::string from = "topology.node_index";
  if (flag) {
    index = *flag;
    from = "--node-index";
  } else {
    for (const char* var : {"XY_NODE_INDEX", "NODE_RANK", "SLURM_NODEID"})
      if (const char* v = std::getenv(var)) {
        const std::optional<long long> parsed = parse_integer(v);
        if (!parsed)
          throw xy::ConfigError(std::string(var) + " = '" + v + "' (environment) is not an integer" + valid);
        index = *parsed;
        from = std::string(var) + " (environment)";
        break;
      }
  }
  if (index < 0 || index >= nodes)
    throw xy::ConfigError(from + " = " + std::to_string(index) + " is not a node index" + valid);
  return static_cast<int>(index);
}

void override_work_dir(xy::Config& cfg, const std::string& dir) {
  if (dir.empty()) throw xy::ConfigError("--work-dir: valid: a directory, not ''");
  const bool default_ckpt = cfg.checkpoint.dir == cfg.data.work_dir + "/checkpoints";
  cfg.data.work_dir = dir;
  if (default_ckpt) cfg.checkpoint.dir = dir + "/checkpoints";
}
