// `xy-node status`: the live state of a running job from its nodes' status servers
// (GET /status on control.http_host or the node's host, port control.http_port + node index):
// per rank step, phase, unit, in-flight operations with their ages; per node loss, tokens/s,
// memory. Refreshes every second on a terminal; prints once when piped, or as JSON with --json.
#include <unistd.h>

#include <httplib.h>

#include <chrono>
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

json fetch(const Target& t) {
  httplib::Client c(t.host, t.port);
  c.set_connection_timeout(2, 0);
  c.set_read_timeout(2, 0);
  auto res = c.Get("/status");
  if (!res || res->status != 200)
    return {{"error", "no answer from " + t.host + ":" + std::to_string(t.port) +
                          (res ? " (HTTP " + std::to_string(res->status) + ")" : "")}};
  try {
    return json::parse(res->body);
  } catch (const std::exception& e) {
    return {{"error", std::string("unreadable answer: ") + e.what()}};
  }
}

std::string render(const std::vector<json>& all) {
  std::ostringstream o;
  char buf[256];
  for (const auto& s : all) {
    if (s.contains("error")) {
      o << s["error"].get<std::string>() << "\n";
      continue;
    }
    std::snprintf(buf, sizeof buf, "node %d (%s): step %lld of %lld | loss %s | %.0f tok/s | memory %.0f MiB\n",
                  s["node"].get<int>(), s["name"].get<std::string>().c_str(),
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
        x << op["kind"].get<std::string>();
        if (op["seq"].get<uint64_t>()) x << " #" << op["seq"].get<uint64_t>();
        if (op["unit"].get<int>() >= 0) x << " u" << op["unit"].get<int>();
        x.precision(2);
        x << std::fixed << " (" << op["age_s"].get<double>() << "/" << op["limit_s"].get<double>() << ")";
        ops += (ops.empty() ? "" : ", ") + x.str();
      }
      std::snprintf(buf, sizeof buf, "  %4d %6lld %-10s %4s %9.1f  ", r["rank"].get<int>(),
                    static_cast<long long>(r["step"].get<int64_t>()), r["phase"].get<std::string>().c_str(),
                    r["unit"].get<int>() >= 0 ? std::to_string(r["unit"].get<int>()).c_str() : "",
                    r["shard_bytes"].get<double>() / 1048576.0);
      o << buf << (ops.empty() ? "-" : ops) << "\n";
    }
    for (const auto& op : s["node_ops"])
      o << "  node: " << op["kind"].get<std::string>() << " (step " << op["step"] << "), "
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
    if (colon == std::string::npos) {
      std::cerr << "xy-node status: --address wants HOST:PORT, got '" << a << "'\n";
      return 2;
    }
    targets.push_back({a.substr(0, colon), std::atoi(a.c_str() + colon + 1)});
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
    std::cout << "\033[H\033[2J" << text << "(refreshing every " << args["interval"].as<double>()
              << " s; Ctrl-C to quit)\n" << std::flush;
    std::this_thread::sleep_for(std::chrono::duration<double>(args["interval"].as<double>()));
  }
}
