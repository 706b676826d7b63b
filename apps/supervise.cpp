// `xy-node train --restarts N`: the launcher stays as a small supervisor (no LibTorch) and runs the
// engine as its child; when the job ends with a stall (exit 3), a lost node (exit 4), a stuck
// watchdog (exit 5) or the engine is killed by a signal nobody asked for, it starts the engine again
// from `latest` in checkpoint.dir, after a backoff, up to N times. Every node runs its own
// supervisor: a stall or a lost node ends the job on every node (the watchdog and the heartbeats
// see to that), so each node restarts and the rendezvous forms again. A child that is stopped
// (SIGSTOP: a frozen node) for longer than control.heartbeat_s has been declared lost by its peers;
// it is killed and restarted with them. See docs/OPERATIONS.md, "Automatic restart".
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "actors/exit_codes.hpp"
#include "apps/commands.hpp"
#include "health/metrics.hpp"
#include "io/manifest.hpp"

namespace {

std::atomic<int> g_forwarded{0};  // the signal a user sent (SIGINT, SIGTERM): no restart after it
std::atomic<pid_t> g_child{0};

void forward_signal(int sig) {
  g_forwarded = sig;
  const pid_t c = g_child.load();
  if (c > 0) ::kill(c, sig);
}

// The value of option `name` in argv (`--name V` or `--name=V`), or "" when absent.
std::string option_value(const std::vector<std::string>& a, const std::string& name) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == name && i + 1 < a.size()) return a[i + 1];
    if (a[i].rfind(name + "=", 0) == 0) return a[i].substr(name.size() + 1);
  }
  return "";
}

// argv without option `name` (and its value when `takes_value`).
std::vector<std::string> without_option(const std::vector<std::string>& a, const std::string& name,
                                        bool takes_value) {
  std::vector<std::string> out;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == name) {
      if (takes_value) ++i;
      continue;
    }
    if (a[i].rfind(name + "=", 0) == 0) continue;
    out.push_back(a[i]);
  }
  return out;
}

const char* exit_meaning(int code) {
  switch (code) {
    case xy::kExitStall: return "stalled (the watchdog's report is above)";
    case xy::kExitPeerLost: return "a node was lost";
    case xy::kExitWatchdogStuck: return "the watchdog was stuck";
    default: return "failed";
  }
}

// What the supervisor needs of the configuration; read leniently: the engine reports any problem.
struct JobFacts {
  std::string checkpoint_dir, work_dir;
  double heartbeat_s = 10;
  int node_index = 0;
  int nodes = 1;
};

JobFacts job_facts(const std::vector<std::string>& args) {
  JobFacts f;
  std::string cfg_path = option_value(args, "--config");
  if (cfg_path.empty()) cfg_path = option_value(args, "-c");
  xy::Config cfg = xy::load_config(cfg_path);  // throws xy::ConfigError
  if (const std::string wd = option_value(args, "--work-dir"); !wd.empty()) override_work_dir(cfg, wd);
  f.checkpoint_dir = cfg.checkpoint.dir;
  f.work_dir = cfg.data.work_dir;
  f.heartbeat_s = cfg.control.heartbeat_s;
  f.nodes = static_cast<int>(cfg.topology.nodes.size());
  const std::string ni = option_value(args, "--node-index");
  f.node_index = node_index_from(cfg, ni.empty() ? std::nullopt
                                                 : std::optional<int>(static_cast<int>(
                                                       parse_integer(ni).value_or(-1))));
  return f;
}

// One line in <work_dir>/metrics.jsonl (node 0 only): the restart, for the log and the pictures.
void log_restart(const JobFacts& f, int attempt, int restarts, const std::string& why) {
  if (f.node_index != 0) return;
  try {
    xy::append_metrics_event(f.work_dir, {{"event", "restart"}, {"attempt", attempt}, {"of", restarts},
                                          {"reason", why}, {"time", static_cast<double>(std::time(nullptr))}});
  } catch (const std::exception& e) {
    std::cerr << "xy-node train: " << e.what() << " (the restart is not in the metrics log)\n";
  }
}

// Runs the engine once; returns its wait status.
int run_child(const std::string& engine, const std::vector<std::string>& args, int attempt,
              double stopped_limit_s) {
  std::vector<char*> cargv;
  for (const auto& s : args) cargv.push_back(const_cast<char*>(s.c_str()));
  cargv.push_back(nullptr);
  const pid_t supervisor = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("cannot start the engine: fork: ") + std::strerror(errno));
  if (pid == 0) {
    // The engine does not outlive its supervisor (killed, or its terminal gone): it gets SIGTERM.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != supervisor) ::_exit(xy::kExitError);  // it died before the prctl
    ::setenv("XY_RESTART_ATTEMPT", std::to_string(attempt).c_str(), 1);
    ::execv(engine.c_str(), cargv.data());
    std::cerr << "xy-node train: cannot run the engine '" << engine << "': " << std::strerror(errno) << "\n";
    ::_exit(xy::kExitError);
  }
  g_child = pid;
  // Polled rather than blocked in waitpid: a child stopped for too long must be noticed.
  auto stopped_since = std::chrono::steady_clock::time_point::max();
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG | WUNTRACED | WCONTINUED);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
    const auto now = std::chrono::steady_clock::now();
    if (r == pid && WIFSTOPPED(status)) {
      stopped_since = now;
    } else if (r == pid && WIFCONTINUED(status)) {
      stopped_since = std::chrono::steady_clock::time_point::max();
    } else if (r == pid) {
      break;  // exited or killed
    }
    // A frozen node: its peers declare it lost after heartbeat_s and restart; this one follows.
    if (stopped_since != std::chrono::steady_clock::time_point::max() &&
        now - stopped_since > std::chrono::duration<double>(stopped_limit_s)) {
      std::cerr << "xy-node train: the engine (pid " << pid << ") has been stopped for "
                << stopped_limit_s << " s (a frozen node); ending it\n";
      ::kill(pid, SIGKILL);
      stopped_since = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  g_child = 0;
  return status;
}

}  // namespace

int supervise_train(const std::string& engine, int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  const std::string n_text = option_value(args, "--restarts");
  const auto n = parse_integer(n_text);
  if (!n || *n < 0 || *n > 1000) {
    std::cerr << "xy-node train: --restarts " << n_text << ": valid: an integer from 0 to 1000\n";
    return xy::kExitUsage;
  }
  const std::string b_text = option_value(args, "--restart-backoff");
  const auto backoff = b_text.empty() ? std::optional<double>(10.0) : parse_finite(b_text);
  if (!backoff || *backoff < 0 || *backoff > 3600) {
    std::cerr << "xy-node train: --restart-backoff " << b_text << ": valid: seconds from 0 to 3600\n";
    return xy::kExitUsage;
  }
  args = without_option(without_option(args, "--restarts", true), "--restart-backoff", true);
  args[0] = engine;
  JobFacts facts;
  try {
    facts = job_facts(args);
  } catch (const std::exception&) {
    // A bad configuration or flag: the engine says what is wrong, once, with its exit code.
    const int status = run_child(engine, args, 0, 1e9);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);

  std::vector<std::string> run = args;
  for (int attempt = 0;; ++attempt) {
    const int status = run_child(engine, run, attempt, std::max(1.0, facts.heartbeat_s));
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (g_forwarded) return code;  // the user stopped it
    const bool restartable = (WIFEXITED(status) && (code == xy::kExitStall || code == xy::kExitPeerLost ||
                                                    code == xy::kExitWatchdogStuck)) ||
                             WIFSIGNALED(status);
    if (!restartable) return code;
    const std::string why = WIFEXITED(status)
                                ? "exit " + std::to_string(code) + ": " + exit_meaning(code)
                                : std::string("killed by signal ") + std::to_string(WTERMSIG(status)) +
                                      " (" + strsignal(WTERMSIG(status)) + ")";
    if (attempt >= *n) {
      std::cerr << "xy-node train: the job ended (" << why << ") and " << *n
                << " restarts are spent (--restarts); giving up\n";
      return code;
    }
    // From `latest` when there is a checkpoint; else from the start, as the first attempt did.
    std::string latest;
    try {
      latest = xy::read_latest_checkpoint(facts.checkpoint_dir);
    } catch (const std::exception&) {
    }
    run = args;
    if (!latest.empty()) {
      run = without_option(without_option(run, "--resume", true), "--overwrite-checkpoints", false);
      run.push_back("--resume");
      run.push_back("latest");
    }
    // With several nodes, every node's previous engine must have ended before any new one joins
    // the rendezvous on node 0's port: the peers notice within heartbeat_s, and a node whose
    // ranks do not stop is ended 10 s after its error (node.cpp). So never sooner than that.
    const double settle_s = facts.nodes > 1 ? facts.heartbeat_s + 12 : 0;
    const double wait_s = std::max(settle_s, std::min(300.0, *backoff * static_cast<double>(1 << std::min(attempt, 8))));
    std::cerr << "xy-node train: the job ended (" << why << "); restart " << attempt + 1 << " of " << *n
              << " from " << (latest.empty() ? std::string("the start (no checkpoint yet)") : latest)
              << " in " << wait_s << " s\n";
    log_restart(facts, attempt + 1, static_cast<int>(*n), why);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
    while (std::chrono::steady_clock::now() < until && !g_forwarded)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (g_forwarded) return code;
  }
}
