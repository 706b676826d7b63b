// `xy-node status`: the live state of a running job from its nodes' status servers
// (GET /status on control.http_host or the node's host, port control.http_port + node index):
// per rank step, phase, unit, in-flight operations with their ages; per node loss, tokens/s,
// memory. Refreshes every second on a terminal; prints once when piped, or as JSON with --json.
#include <unistd.h>

#include <httplib.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <thread>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "apps/commands.hpp"

namespace {

using json = nlohmann::json;

struct Target {
  std::string host;
  int port;
};

// What is wrong with a /status document (health/status_server.cpp writes it), or "" when every
// field render() reads is there with its type. A node's answer is checked before use: a malformed
// one is a one-line error naming the node's address, never an exception or an assertion.
std::string status_problem(const json& s) {
  if (!s.is_object()) return std::string("expected a JSON object, got ") + s.type_name();
  if (s.contains("error")) return "an 'error' member (xy's /status has none)";  // fetch()'s marker
  auto integer = [](const json& o, const char* k) { return o.contains(k) && o[k].is_number_integer(); };
  auto number = [](const json& o, const char* k) { return o.contains(k) && o[k].is_number(); };
  auto string = [](const json& o, const char* k) { return o.contains(k) && o[k].is_string(); };
  auto array = [](const json& o, const char* k) { return o.contains(k) && o[k].is_array(); };
  for (const char* k : {"node", "step", "steps_total"})
    if (!integer(s, k)) return std::string("'") + k + "' is not an integer";
  if (!string(s, "name")) return "'name' is not a string";
  for (const char* k : {"tokens_per_s", "resident_bytes"})
    if (!number(s, k)) return std::string("'") + k + "' is not a number";
  if (!s.contains("loss") || !(s["loss"].is_null() || s["loss"].is_number()))
    return "'loss' is neither a number nor null";
  if (!array(s, "ranks")) return "'ranks' is not an array";
  if (!array(s, "node_ops")) return "'node_ops' is not an array";
  auto op_problem = [&](const json& op) -> std::string {
    if (!op.is_object()) return "an operation is not an object";
    if (!string(op, "kind")) return "an operation's 'kind' is not a string";
    for (const char* k : {"seq", "unit", "step"})
      if (!integer(op, k)) return std::string("an operation's '") + k + "' is not an integer";
    if (!op["seq"].is_number_unsigned()) return "an operation's 'seq' is negative";
    for (const char* k : {"age_s", "limit_s"})
      if (!number(op, k)) return std::string("an operation's '") + k + "' is not a number";
    return "";
  };
  for (const auto& r : s["ranks"]) {
    if (!r.is_object()) return "a rank is not an object";
    for (const char* k : {"rank", "step", "unit"})
      if (!integer(r, k)) return std::string("a rank's '") + k + "' is not an integer";
    if (!string(r, "phase")) return "a rank's 'phase' is not a string";
    if (!number(r, "shard_bytes")) return "a rank's 'shard_bytes' is not a number";
    if (!array(r, "ops")) return "a rank's 'ops' is not an array";
    for (const auto& op : r["ops"])
      if (std::string p = op_problem(op); !p.empty()) return p;
  }
  for (const auto& op : s["node_ops"])
    if (std::string p = op_problem(op); !p.empty()) return p;
  // Integers that render() prints as int.
  for (const json* v : {&s["node"]})
    if (v->get<int64_t>() < INT_MIN || v->get<int64_t>() > INT_MAX) return "'node' is out of range";
  return "";
}

json fetch(const Target& t) {
  const std::string where = t.host + ":" + std::to_string(t.port);
  httplib::Client c(t.host, t.port);
  c.set_connection_timeout(2, 0);
  c.set_read_timeout(2, 0);
  auto res = c.Get("/status");
  if (!res || res->status != 200)
    return {{"error", "no answer from " + where +
                          (res ? " (HTTP " + std::to_string(res->status) + ")" : "")}};
  json doc;
  std::string problem;
  try {
    doc = json::parse(res->body);
    problem = status_problem(doc);
  } catch (const std::exception& e) {
    problem = "not JSON (" + std::string(e.what()) + ")";
  }
  if (!problem.empty())
    return {{"error", "unreadable /status from " + where + ": " + problem + " (not an xy status server?)"}};
  return doc;
}

// A string from the network as it may be printed on a terminal: control characters (escape
// sequences) as '?'.
std::string printable(std::string s) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s;
}

std::string render(const std::vector<json>& all) {
  std::ostringstream o;
  char buf[256];
  for (const auto& s : all) {
    if (s.contains("error")) {  // fetch()'s own message
      o << s["error"].get<std::string>() << "\n";
      continue;
    }
    std::snprintf(buf, sizeof buf, "node %d (%s): step %lld of %lld | loss %s | %.0f tok/s | memory %.0f MiB\n",
                  s["node"].get<int>(), printable(s["name"].get<std::string>()).c_str(),
                  static_cast<long long>(s["step"].get<int64_t>()),
                  static_cast<long long>(s["steps_total"].get<int64_t>()),
                  s["loss"].is_null() ? "-" : std::to_string(s["loss"].get<double>()).c_str(),
                  s["tokens_per_s"].get<double>(), s["resident_bytes"].get<double>() / 1048576.0);
    o << buf;
    std::snprintf(buf, sizeof buf, "  %4s %6s %-10s %4s %9s  %s\n", "rank", "step", "phase", "unit",
                  "shard MiB", "in-flight operations (age s / deadline s)");
    o << buf;
    for (const auto& r : s["ranks"]) {
      std::string ops;
      for (const auto& op : r["ops"]) {
        std::ostringstream x;
        x << printable(op["kind"].get<std::string>());
        if (op["seq"].get<uint64_t>()) x << " #" << op["seq"].get<uint64_t>();
        if (op["unit"].get<int>() >= 0) x << " u" << op["unit"].get<int>();
        x.precision(2);
        x << std::fixed << " (" << op["age_s"].get<double>() << "/" << op["limit_s"].get<double>() << ")";
        ops += (ops.empty() ? "" : ", ") + x.str();
      }
      std::snprintf(buf, sizeof buf, "  %4d %6lld %-10s %4s %9.1f  ", r["rank"].get<int>(),
                    static_cast<long long>(r["step"].get<int64_t>()), printable(r["phase"].get<std::string>()).c_str(),
                    r["unit"].get<int>() >= 0 ? std::to_string(r["unit"].get<int>()).c_str() : "",
                    r["shard_bytes"].get<double>() / 1048576.0);
      o << buf << (ops.empty() ? "-" : ops) << "\n";
    }
    for (const auto& op : s["node_ops"])
      o << "  node: " << printable(op["kind"].get<std::string>()) << " (step " << op["step"] << "), "
        << op["age_s"].get<double>() << " s\n";
  }
  return o.str();
}

}  // namespace

int cmd_status(int argc, char** argv) {
  cxxopts::Options opts("xy-node status", "Show the live state of a running job.");
  opts.add_options()
      ("c,config", "the job's configuration: ask every node's status server", cxxopts::value<std::string>())
      ("address", "ask one status server at HOST:PORT", cxxopts::value<std::string>())
      ("json", "print the nodes' /status documents once, as a JSON array")
      ("once", "print once, even on a terminal")
      ("interval", "seconds between refreshes on a terminal", cxxopts::value<double>()->default_value("1"))
      ("h,help", "show this help");
  cxxopts::ParseResult args;
  if (const int rc = parse_options(opts, argc, argv, "status", args); rc >= 0) return rc;
  std::vector<Target> targets;
  if (args.count("address")) {
    const std::string a = args["address"].as<std::string>();
    const auto colon = a.rfind(':');
    const std::optional<long long> port =
        colon == std::string::npos ? std::nullopt : parse_integer(a.substr(colon + 1));
    if (colon == std::string::npos || colon == 0 || !port || *port < 1 || *port > 65535) {
      std::cerr << "xy-node status: --address '" << a << "': valid: HOST:PORT with a port in 1..65535\n";
      return 2;
    }
    targets.push_back({a.substr(0, colon), static_cast<int>(*port)});
  } else if (args.count("config")) {
    xy::Config cfg;
    try {
      cfg = xy::load_config(args["config"].as<std::string>());
    } catch (const xy::ConfigError& e) {
      std::cerr << "xy-node status: " << e.what() << "\n";
      return 2;
    }
    if (cfg.control.http_port == 0) {
      std::cerr << "xy-node status: " << cfg.source
                << " serves no status (control.http_port = 0); set control.http_port and restart "
                   "the job, or use --address\n";
      return 2;
    }
    for (size_t i = 0; i < cfg.topology.nodes.size(); ++i)
      targets.push_back({cfg.control.http_host.empty() ? cfg.topology.nodes[i].host : cfg.control.http_host,
                         cfg.control.http_port + static_cast<int>(i)});
  } else {
    std::cerr << "xy-node status: give --config FILE or --address HOST:PORT\n" << opts.help();
    return 2;
  }
  const double interval = args["interval"].as<double>();
  if (!(interval > 0 && interval <= 86400)) {
    std::cerr << "xy-node status: --interval " << interval << ": valid: seconds > 0 and <= 86400 (a day)\n";
    return 2;
  }
  const bool live = !args.count("json") && !args.count("once") && isatty(STDOUT_FILENO);
  for (;;) {
    std::vector<json> all;
    bool any = false;
    for (const auto& t : targets) {
      all.push_back(fetch(t));
      any = any || !all.back().contains("error");
    }
    if (args.count("json")) {
      std::cout << json(all).dump(2) << "\n";
      return any ? 0 : 1;
    }
    const std::string text = render(all);
    if (!live) {
      std::cout << text;
      return any ? 0 : 1;
    }
    std::cout << "\033[H\033[2J" << text << "(refreshing every " << interval
              << " s; Ctrl-C to quit)\n" << std::flush;
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  }
}
