// `xy-node doctor`: preflight checks of this node and its peers, printed as a pass/fail table with
// the fix for each failure (docs/OPERATIONS.md, "Preflight doctor"). `train` runs it first.
//
// Peers: while it runs, the doctor listens on this node's control port (topology.nodes[i].port)
// and answers each connection with one JSON line of its facts (versions, wall clock); it asks
// every other node's doctor the same, so that the checks cover versions, reachability of each
// node's interface, the ports and the clock skew. Run it on every node at about the same time.
// The facts served carry the node's transport settings, and after asking, node 0 and each other
// node measure their link over Gloo (apps/doctor_links.cpp).
//
// The checks of this node are apps/doctor_checks.cpp, one function each; this file asks the
// peers, runs the list and prints the table.
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "apps/commands.hpp"
#include "apps/doctor.hpp"
#include "io/config.hpp"
#include "io/threads.hpp"

namespace xy {
namespace doctor {

std::string printable(std::string s) {
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s;
}

namespace {

using json = nlohmann::json;

// The versions compared between nodes: facts key, and its name in the table.
const std::pair<const char*, const char*> kVersions[] = {
    {"xy", "xy"}, {"torch", "torch"}, {"cuda", "CUDA runtime"}, {"cuda_driver", "CUDA driver"},
    {"nccl", "NCCL"}};

// What is wrong with a peer's facts (local_facts() of another node), or "" when they have every
// field the checks read, with its type.
std::string peer_facts_problem(const json& j) {
  if (!j.is_object()) return "expected a JSON object, got " + std::string(j.type_name());
  for (const char* k : {"xy", "torch", "cuda", "cuda_driver", "nccl", "hostname"})
    if (!j.contains(k) || !j[k].is_string()) return std::string("no string '") + k + "'";
  if (!j.contains("time_us") || !j["time_us"].is_number()) return "no number 'time_us'";
  return "";
}

// Connects to host:port within timeout_s and reads one line; "" + err on failure.
std::string ask_peer(const std::string& host, int port, double timeout_s, std::string* err) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  do {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
      *err = gai_strerror(rc);
      return "";
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    const bool ok = connect(fd, res->ai_addr, res->ai_addrlen) == 0;
    freeaddrinfo(res);
    if (ok) {
      std::string line;
      char buf[4096];
      pollfd p{fd, POLLIN, 0};
      // One line of facts is ~300 bytes: a peer sending more without a newline is not a doctor.
      while (line.find('\n') == std::string::npos && line.size() < 65536 && poll(&p, 1, 2000) > 0) {
        const ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        line.append(buf, n);
      }
      close(fd);
      if (!line.empty()) return line.substr(0, line.find('\n'));
      *err = "connected, but no answer (not an xy doctor?)";
      return "";
    }
    *err = std::strerror(errno);
    close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (std::chrono::steady_clock::now() < until);
  return "";
}

// Answers each connection to `listener` with this node's facts (local_facts, and what `extra`
// adds: the transport settings and whether it probes), one JSON line, until `serving` is false
// (the peers' ask_peer).
void serve_facts(int listener, int me, const json& extra, const std::atomic<bool>& serving) {
  while (serving) {
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    int c = accept(listener, nullptr, nullptr);
    if (c < 0) continue;
    json facts = local_facts(me);
    facts.update(extra);
    const std::string line = facts.dump() + "\n";
    (void)!write(c, line.data(), line.size());
    close(c);
  }
}

// Node p as seen from here: its doctor's answer (reach), then, when it answered with facts, the
// versions, the transport settings and the clock skew compared with ours (its facts in *answer).
std::vector<Row> check_peer(const Context& c, int p, double wait_s, json* answer) {
  const std::string& n = c.n;
  const json& facts = c.facts;
  const NodeSpec& peer = c.cfg.topology.nodes[p];
  const std::string pn = std::to_string(p);
  std::string err;
  const auto t0 = std::chrono::system_clock::now();
  const std::string line = ask_peer(peer.host, peer.port, wait_s, &err);
  const auto t1 = std::chrono::system_clock::now();
  if (line.empty())
    return {{"reach node " + pn, n, "FAIL",
             "no doctor answered at " + peer.host + ":" + std::to_string(peer.port) + ": " + err,
             "run `xy-node doctor` on node " + pn + " at the same time; if it runs, check that " +
                 peer.host + " is node " + pn + "'s address on a network this node reaches "
                 "(firewall, wrong interface: set topology.nodes[" + pn + "].host)"}};
  // What arrives from the network is checked before use: a malformed answer is a failed check
  // naming the peer and what is wrong, never an exception (nlohmann's type_error ended the
  // asker with exit 134 on an answer of `42`).
  json theirs;
  std::string problem;
  try {
    theirs = json::parse(line);
    problem = peer_facts_problem(theirs);
  } catch (const std::exception& e) {
    problem = "not JSON (" + std::string(e.what()) + ")";
  }
  if (!problem.empty())
    return {{"reach node " + pn, n, "FAIL",
             "unreadable answer from " + peer.host + ":" + std::to_string(peer.port) + ": " + problem +
                 "; it sent: " + printable(line.substr(0, 80)),
             "something else listens on " + peer.host + ":" + std::to_string(peer.port) +
                 " (or another xy version): check topology.nodes[" + pn + "]"}};
  *answer = theirs;
  std::vector<Row> rows;
  rows.push_back({"reach node " + pn, n, "PASS", peer.host + ":" + std::to_string(peer.port) + " (" +
                  printable(theirs["hostname"].get<std::string>()) + ")", ""});
  std::string diff;
  for (const auto& [k, name] : kVersions)
    if (theirs[k].get<std::string>() != facts[k].get<std::string>())
      diff += std::string(diff.empty() ? "" : "; ") + name + " " + printable(theirs[k].get<std::string>()) +
              " on node " + pn + ", " + facts[k].get<std::string>() + " on node " + n;
  if (diff.empty())
    rows.push_back({"same versions as node " + pn, n, "PASS",
                    "xy, LibTorch, CUDA runtime, CUDA driver, NCCL match", ""});
  else
    rows.push_back({"same versions as node " + pn, n, "FAIL", diff,
                    "install the same xy build, LibTorch, CUDA runtime, CUDA driver and NCCL on "
                    "every node (a mismatch hangs or corrupts collectives)"});
  rows.push_back(check_transport(c, p, theirs));
  const double mid_us = std::chrono::duration_cast<std::chrono::microseconds>(
                            (t0.time_since_epoch() + t1.time_since_epoch()) / 2).count();
  const double skew = std::abs(theirs["time_us"].get<double>() - mid_us) / 1e6;
  std::ostringstream d;
  d << skew << " s";
  if (skew <= 1.0)
    rows.push_back({"clock skew to node " + pn, n, "PASS", d.str(), ""});
  else
    rows.push_back({"clock skew to node " + pn, n, "FAIL", d.str() + " (more than 1 s)",
                    "synchronise the clocks (chrony or systemd-timesyncd on every node)"});
  return rows;
}

// The table (or the JSON array) of `rows` on `out`; returns the number of failed checks.
int print_rows(const std::vector<Row>& rows, std::ostream& out, bool as_json) {
  int failed = 0, skipped = 0;
  for (const auto& r : rows) {
    failed += r.result == "FAIL";
    skipped += r.result == "SKIP";
  }
  if (as_json) {
    json j = json::array();
    for (const auto& r : rows)
      j.push_back({{"check", r.check}, {"node", r.node}, {"result", r.result}, {"detail", r.detail}, {"fix", r.fix}});
    out << j.dump(2) << "\n";
  } else {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%-27s %-5s %-6s %s\n", "check", "node", "result", "detail");
    out << buf;
    for (const auto& r : rows) {
      std::snprintf(buf, sizeof buf, "%-27s %-5s %-6s ", r.check.c_str(), r.node.c_str(), r.result.c_str());
      out << buf << r.detail << "\n";
      if (!r.fix.empty()) out << "    fix: " << r.fix << "\n";
    }
    out << "doctor: " << rows.size() - failed - skipped << " passed, " << failed << " failed";
    if (skipped > 0) out << ", " << skipped << " skipped";
    out << "\n";
  }
  return failed;
}

}  // namespace
}  // namespace doctor

bool doctor_probe_hung() { return doctor::g_gpu_hung; }

std::string doctor_environment_problem() {
  if (const char* v = std::getenv("XY_DOCTOR_GPU_TIMEOUT")) {
    const std::optional<double> s = parse_finite(v);
    if (!s || !(*s > 0 && *s <= doctor::kMaxSeconds))
      return std::string("XY_DOCTOR_GPU_TIMEOUT = '") + v +
             "' (environment): valid: seconds > 0 and <= 2592000 (30 days)";
  }
  if (const char* v = std::getenv("XY_DOCTOR_GPU_STALL")) {
    const std::optional<long long> d = parse_integer(v);
    if (!d || *d < 0 || *d > INT_MAX)
      return std::string("XY_DOCTOR_GPU_STALL = '") + v + "' (environment): valid: a device index >= 0";
  }
  return "";
}

int run_doctor(const Config& cfg, int me, double wait_s, std::ostream& out, bool as_json, bool probe) {
  using namespace doctor;
  // The order of the table.
  static constexpr Check kChecks[] = {
      check_versions,   check_one_nccl,     check_one_libtorch, check_gpus,
      check_interface,  check_control_port, check_rendezvous_port,
      check_open_files, check_locked_memory, check_host_memory, check_checkpoint_disk,
  };
  Context c{cfg, me, std::to_string(me), cfg.topology.nodes.at(me), local_facts(me)};
  c.transport = transport_facts(cfg, me);
  const int nodes = static_cast<int>(cfg.topology.nodes.size());
  if (!probe) c.no_probe = "not asked for (--no-probe; train's preflight does not probe)";
  std::vector<Row> rows;
  for (const Check check : kChecks)
    if (std::optional<Row> row = check(c)) rows.push_back(std::move(*row));
  // Node 0 serves the probe's rendezvous on its port + 1: it probes only when that is free.
  for (const Row& r : rows)
    if (r.check == "rendezvous port free" && r.result != "PASS" && c.no_probe.empty())
      c.no_probe = "the rendezvous port is taken (above)";

  // Peers: serve our facts, ask theirs.
  std::atomic<bool> serving{true};
  std::thread server;
  const json extra = {{"transport", c.transport}, {"probe", c.no_probe.empty()}};
  if (c.listener >= 0)
    server = start_thread("the doctor's answering thread", [&] { serve_facts(c.listener, me, extra, serving); });
  std::vector<json> peers(nodes);
  for (int p = 0; p < nodes; ++p)
    if (p != me)
      for (Row& row : check_peer(c, p, wait_s, &peers[p])) rows.push_back(std::move(row));
  // The link probe: a few seconds at most (each direction's transfer stops after ~0.3 s).
  if (nodes > 1)
    for (Row& row : probe_links(c, peers, std::clamp(wait_s, 5.0, 20.0))) rows.push_back(std::move(row));
  // Keep answering for the peers that are still asking.
  if (c.listener >= 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(nodes > 1 ? 1500 : 0));
    serving = false;
    server.join();
    close(c.listener);
  }
  return print_rows(rows, out, as_json);
}

}  // namespace xy

int cmd_doctor(int argc, char** argv) {
  cxxopts::Options opts("xy-node doctor", "Preflight checks of this node and its peers.");
  opts.add_options()
      ("c,config", "configuration file (TOML)", cxxopts::value<std::string>())
      ("node-index", "this process's entry in [[topology.nodes]] (default as for train)",
       cxxopts::value<int>())
      ("wait", "seconds to wait for each peer's doctor", cxxopts::value<double>()->default_value("30"))
      ("gpu-timeout", "seconds each GPU gets to answer the probe (default 20, or XY_DOCTOR_GPU_TIMEOUT)",
       cxxopts::value<double>())
      ("json", "print the checks as JSON")
      ("no-probe", "skip the link probe (the timed Gloo exchange between node 0 and each other node)")
      ("facts", "print what this node reports to its peers (versions, host, clock) as JSON and exit")
      ("h,help", "show this help");
  cxxopts::ParseResult args;
  if (const int rc = parse_options(opts, argc, argv, "doctor", args); rc >= 0) return rc;
  if (args.count("facts")) {
    std::cout << xy::doctor::local_facts(-1).dump() << "\n";
    return 0;
  }
  // Seconds are > 0 and at most 30 days, as the config's deadlines (docs/CONFIG.md).
  const double wait_s = args["wait"].as<double>();
  if (!(wait_s >= 0 && wait_s <= xy::doctor::kMaxSeconds)) {
    std::cerr << "xy-node doctor: --wait " << wait_s << ": valid: seconds >= 0 and <= 2592000 (30 days)\n";
    return 2;
  }
  if (args.count("gpu-timeout")) {
    const double t = args["gpu-timeout"].as<double>();
    if (!(t > 0 && t <= xy::doctor::kMaxSeconds)) {
      std::cerr << "xy-node doctor: --gpu-timeout " << t
                << ": valid: seconds > 0 and <= 2592000 (30 days)\n";
      return 2;
    }
    xy::doctor::g_gpu_timeout_flag_s = t;
  }
  if (!args.count("config")) {
    std::cerr << "xy-node doctor: --config FILE is required\n";
    return 2;
  }
  xy::Config cfg;
  int me = 0;
  try {
    cfg = xy::load_config(args["config"].as<std::string>());
    me = node_index_from(cfg, args.count("node-index") ? std::optional<int>(args["node-index"].as<int>())
                                                       : std::nullopt);
    if (const std::string p = xy::doctor_environment_problem(); !p.empty()) throw xy::ConfigError(p);
  } catch (const xy::ConfigError& e) {
    std::cerr << "xy-node doctor: " << e.what() << "\n";
    return 2;
  }
  const int failed = xy::run_doctor(cfg, me, wait_s, std::cout, args.count("json") > 0,
                                   args.count("no-probe") == 0);
  if (xy::doctor::g_gpu_hung) {
    // A probe thread is stuck in the driver: do not run exit handlers that may wait for it.
    std::cout.flush();
    std::fflush(nullptr);
    std::_Exit(1);
  }
  return failed == 0 ? 0 : 1;
}

