// Fault injection (see faults.hpp): parsing of XY_FAULT and the slow path of fault::maybe().
#include "health/faults.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace xy::fault {
namespace detail {
std::atomic<bool> any{false};
}  // namespace detail

namespace {

struct Fault {
  std::string name;
  std::string point;       // where it fires
  int rank = -1;           // -1 = any
  int64_t step = -1;
  int unit = -1;
  int64_t seq = -1;
  double seconds = -1;     // < 0: forever
  bool fired = false;
};

const std::map<std::string, std::string>& points() {
  static const std::map<std::string, std::string> p = {
      {"skip-collective", "collective"}, {"reorder", "collective"}, {"sleep-compute", "compute"},
      {"block-batch", "batch"},          {"block-adam", "adam"},   {"block-checkpoint", "checkpoint"},
      {"stop-node", "step"},             {"kill-node", "step"},    {"block-watchdog", "watchdog"},
      {"overflow", "gradient"}};
  return p;
}

std::mutex mu;
std::vector<Fault> faults;  // guarded by mu
std::once_flag env_once;
std::string env_description;

std::string valid_faults() {
  std::string s;
  for (const auto& [name, point] : points()) s += (s.empty() ? "" : ", ") + name;
  return s;
}

std::string describe(const Fault& f) {
  std::ostringstream o;
  o << f.name;
  if (f.rank >= 0) o << " rank=" << f.rank;
  if (f.step >= 0) o << " step=" << f.step;
  if (f.unit >= 0) o << " unit=" << f.unit;
  if (f.seq >= 0) o << " seq=" << f.seq;
  if (f.seconds >= 0) o << " seconds=" << f.seconds;
  return o.str();
}

void sleep_for(double seconds) {
  if (seconds < 0) block_forever();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

}  // namespace

void configure(const std::string& spec) {
  std::vector<Fault> parsed;
  std::stringstream all(spec);
  std::string item;
  while (std::getline(all, item, ';')) {
    if (item.find_first_not_of(" \t") == std::string::npos) continue;
    Fault f;
    const auto colon = item.find(':');
    f.name = item.substr(0, colon);
    auto it = points().find(f.name);
    if (it == points().end())
      throw std::invalid_argument("fault injection: unknown fault '" + f.name + "'; valid: " + valid_faults());
    f.point = it->second;
    if (colon != std::string::npos) {
      std::stringstream kvs(item.substr(colon + 1));
      std::string kv;
      while (std::getline(kvs, kv, ',')) {
        const auto eq = kv.find('=');
        const std::string key = kv.substr(0, eq), val = eq == std::string::npos ? "" : kv.substr(eq + 1);
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(val.c_str(), &end);
        if (val.empty() || *end != '\0' || !std::isfinite(v) || errno == ERANGE)
          throw std::invalid_argument("fault injection: " + f.name + ": '" + kv + "' is not key=number");
        // Integers in range (a cast of 1e300 or 1.5 to int would be undefined or a silent other
        // value); seconds up to 30 days.
        auto whole = [&](double max) {
          if (v < 0 || v > max || v != std::floor(v))
            throw std::invalid_argument("fault injection: " + f.name + ": " + key + " = " + val +
                                        "; valid: an integer 0.." + std::to_string(static_cast<int64_t>(max)));
          return v;
        };
        if (key == "rank") f.rank = static_cast<int>(whole(INT_MAX));
        else if (key == "step") f.step = static_cast<int64_t>(whole(0x1p53));
        else if (key == "unit") f.unit = static_cast<int>(whole(INT_MAX));
        else if (key == "seq") f.seq = static_cast<int64_t>(whole(0x1p53));
        else if (key == "seconds") {
          if (!(v >= 0 && v <= 30 * 24 * 3600.0))
            throw std::invalid_argument("fault injection: " + f.name + ": seconds = " + val +
                                        "; valid: 0..2592000 (leave it out: forever)");
          f.seconds = v;
        } else
          throw std::invalid_argument("fault injection: " + f.name + ": unknown key '" + key +
                                      "'; valid: rank, step, unit, seq, seconds");
      }
    }
    parsed.push_back(f);
  }
  std::lock_guard<std::mutex> lock(mu);
  faults = std::move(parsed);
  detail::any = !faults.empty();
}

std::string configure_from_env() {
  std::call_once(env_once, [] {
    const char* v = std::getenv("XY_FAULT");
    if (!v || !*v) return;
    configure(v);
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& f : faults) env_description += (env_description.empty() ? "" : "; ") + describe(f);
  });
  return env_description;
}

[[noreturn]] void block_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

bool reorder(int rank, uint64_t seq) {
  if (!detail::any.load(std::memory_order_relaxed)) return false;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& f : faults)
    if (f.name == "reorder" && !f.fired && (f.rank < 0 || f.rank == rank) &&
        (f.seq < 0 || static_cast<uint64_t>(f.seq) <= seq)) {
      f.fired = true;
      std::fprintf(stderr, "xy: fault injection: rank %d issues the collective after #%llu in its place\n",
                   rank, static_cast<unsigned long long>(seq));
      return true;
    }
  return false;
}

namespace detail {
bool maybe_slow(const char* point, int rank, int64_t step, int unit, uint64_t seq) {
  Fault hit;
  {
    std::lock_guard<std::mutex> lock(mu);
    Fault* match = nullptr;
    for (auto& f : faults) {
      if (f.fired || f.point != point || f.name == "reorder") continue;
      if (f.rank >= 0 && f.rank != rank) continue;
      if (f.step >= 0 && f.step != step) continue;
      if (f.unit >= 0 && f.unit != unit) continue;
      if (f.seq >= 0 && static_cast<uint64_t>(f.seq) != seq) continue;
      match = &f;
      break;
    }
    if (!match) return false;
    // `overflow` without a step fires at every matching call (forced repeated overflow).
    if (match->name != "overflow" || match->step >= 0) match->fired = true;
    hit = *match;
  }
  std::fprintf(stderr, "xy: fault injection: %s fires (rank %d, step %lld, unit %d, seq %llu)\n",
               describe(hit).c_str(), rank, static_cast<long long>(step), unit,
               static_cast<unsigned long long>(seq));
  std::fflush(stderr);
  if (hit.name == "overflow") {
    return true;  // the caller makes the gradient infinite
  } else if (hit.name == "stop-node") {
    ::kill(::getpid(), SIGSTOP);
  } else if (hit.name == "kill-node") {
    ::kill(::getpid(), SIGKILL);
  } else if (hit.name == "skip-collective") {
    block_forever();
  } else {
    sleep_for(hit.seconds);
  }
  return true;
}
}  // namespace detail

}  // namespace xy::fault
