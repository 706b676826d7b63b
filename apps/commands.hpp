// The subcommands of xy-node that live in files of their own (argv[0] is the command's name), and
// what the launcher (apps/launcher.cpp) and the engine (apps/engine_main.cpp) share (apps/cli.cpp).
#pragma once

// `xy-node preprocess`: JSONL corpora -> token shards (apps/cmd_preprocess.cpp, docs/DATA.md).
int cmd_preprocess(int argc, char** argv);

// `xy-node verify`: checks a checkpoint's files against its manifest (apps/cmd_checkpoint.cpp).
int cmd_verify(int argc, char** argv);

#include <cxxopts.hpp>

#include <optional>
#include <ostream>
#include <string>

#include "io/config.hpp"

// `xy-node --help`: the commands and exit codes.
const char* xy_usage();

// What both mains do first: ignore SIGPIPE, set the file-mode policy (XY_UMASK), then `xy-node` alone or --help (the usage), and the
// commands that need no LibTorch (preprocess, status, report). Returns their exit code, or -1 when argv[1]
// is another command.
int run_light_command(int argc, char** argv);

// Runs command(argc, argv); whatever escapes it ends the process with one line on stderr and exit
// code 1: never std::terminate's abort, nor a LibTorch backtrace (c10::Error's what() carries one).
int run_guarded(int argc, char** argv, int (*command)(int, char**));

// "unknown command" and the usage on stderr; returns the exit code (2).
int unknown_command(const std::string& cmd);

// SentencePiece allocates and frees many small objects for every document it encodes; a larger
// per-thread cache in glibc's malloc (tcache) takes ~6-11% off preprocessing's CPU time. glibc reads
// its tunables at start-up only, so `preprocess` re-executes itself once with the tunable added to
// GLIBC_TUNABLES (XY_MALLOC_TUNING=0 skips this; if the exec fails it goes on as it is).
void tune_malloc_for_preprocessing(char** argv);

// Strict parsing of values from the environment and from flags given as text: the whole of `s`
// must be a decimal integer (optional leading '-', no spaces, no suffix, in range of long long),
// or a finite number; nullopt otherwise. (atoi would read "abc" and "1x" as 0 and 1.)
std::optional<long long> parse_integer(const std::string& s);
std::optional<double> parse_finite(const std::string& s);

// Parses the options of `xy-node NAME` into `args`. Returns -1 to go on, or the exit code to end
// with: 2 after bad options (the error and the help on stderr), 0 after --help (the help on stdout).
int parse_options(cxxopts::Options& opts, int argc, char** argv, const char* name,
                  cxxopts::ParseResult& args);

// --work-dir DIR: data.work_dir becomes DIR, and so does checkpoint.dir's default
// (<work_dir>/checkpoints) when the file left it at that. Throws xy::ConfigError for an empty DIR.
void override_work_dir(xy::Config& cfg, const std::string& dir);

// This process's node index: `flag` if given, else XY_NODE_INDEX, NODE_RANK (torchrun) or
// SLURM_NODEID from the environment, else topology.node_index. Throws xy::ConfigError (one line
// naming the flag or variable) when it is not an index of topology.nodes, or an environment value
// is not a plain decimal integer ("abc", "1x", "" are refused, not read as 0).
int node_index_from(const xy::Config& cfg, std::optional<int> flag);

namespace xy {
// The preflight checks of node `node_index` (apps/cmd_doctor.cpp): prints the table (or JSON) to
// `out`, waits up to wait_s for each peer's doctor; returns the number of failed checks. With
// `probe` (xy-node doctor without --no-probe; not train's preflight) and several nodes, it also
// measures each link to node 0 (apps/doctor_links.cpp).
int run_doctor(const Config& cfg, int node_index, double wait_s, std::ostream& out, bool as_json,
               bool probe = false);
// What is wrong with the doctor's environment variables (XY_DOCTOR_GPU_TIMEOUT: seconds > 0;
// XY_DOCTOR_GPU_STALL: a device index), naming the variable; "" when nothing is.
std::string doctor_environment_problem();
// True when a GPU probe of run_doctor() never returned (its thread is stuck in the driver): the
// process must then end with std::_Exit, whose exit handlers might wait for that thread.
bool doctor_probe_hung();
}  // namespace xy

// `xy-node doctor`: preflight checks (apps/cmd_doctor.cpp, docs/OPERATIONS.md).
int cmd_doctor(int argc, char** argv);

// `xy-node train --restarts N [--restart-backoff S]` (apps/supervise.cpp): runs `engine` with the
// other arguments as a child and restarts it from `latest` after a stall, a lost node or a kill, up
// to N times; returns the last exit code.
int supervise_train(const std::string& engine, int argc, char** argv);

// `xy-node status`: the live state of a running job (apps/cmd_status.cpp, docs/OPERATIONS.md).
int cmd_status(int argc, char** argv);

// `xy-node report`: a run's metrics log as one HTML file (apps/cmd_report.cpp, docs/OPERATIONS.md).
int cmd_report(int argc, char** argv);

// `xy-node export`: a checkpoint as a Hugging Face folder (apps/cmd_checkpoint.cpp).
int cmd_export(int argc, char** argv);
