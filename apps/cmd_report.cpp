// `xy-node report RUN_DIR [--out FILE]`: a run's metrics log (RUN_DIR/metrics.jsonl) as one
// self-contained HTML file (default RUN_DIR/report.html): a summary table and charts of loss,
// learning rate, gradient norm, throughput and the time split, restarts marked. No network: the
// styles, the chart script (health/charts_js.hpp, shared with the status page) and the data (the
// log's lines as JSON) are inside the file. Run by the launcher itself, without LibTorch.
#include <ctime>
#include <iostream>
#include <string>

#include <cxxopts.hpp>

#include "actors/exit_codes.hpp"
#include "apps/commands.hpp"
#include "health/charts_js.hpp"
#include "health/metrics.hpp"
#include "io/atomic_file.hpp"

namespace {

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

}  // namespace

namespace xy {

// The page for these lines (a JSON array from read_metrics). '<' inside the embedded JSON is
// written \u003c, so that no string in the log ("</script>" in a restart reason) ends the script.
std::string report_html(const nlohmann::json& lines, const std::string& source) {
  // Only the fields the charts and the summary read go into the page: a long run's page is then
  // about half the log's size (100,000 steps: 44 MB of log).
  static const char* const kDrawn[] = {"step", "time", "event", "eval", "loss", "lr", "grad_norm", "tokens",
                                       "tokens_per_s", "compute_s", "wait_optimizer_s", "exposed_comm_s",
                                       "end_of_step_s", "wait_batch_s", "attempt", "of", "reason"};
  nlohmann::json slim = nlohmann::json::array();
  for (const auto& l : lines) {
    nlohmann::json o = nlohmann::json::object();
    for (const char* k : kDrawn)
      if (auto it = l.find(k); it != l.end()) o[k] = *it;
    slim.push_back(std::move(o));
  }
  std::string data = slim.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string safe;
  safe.reserve(data.size());
  for (char c : data) safe += c == '<' ? std::string("\\u003c") : std::string(1, c);
  char when[64] = "";
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now));
  return std::string("<!doctype html>\n<html><head><meta charset=\"utf-8\">\n<title>xy report: ") +
         html_escape(source) + "</title>\n<style>body{font:14px sans-serif;margin:1em}" + charts_css() +
         "</style>\n</head><body>\n<h1>xy run report</h1>\n<p class=\"xy-source\">" + html_escape(source) +
         ", " + std::to_string(lines.size()) + " lines; made " + when +
         "</p>\n<div id=\"xy-report\"></div>\n<script type=\"application/json\" id=\"xy-data\">" + safe +
         "</script>\n<script>" + charts_js() +
         "</script>\n<script>xyCharts.render(document.getElementById('xy-report'), "
         "JSON.parse(document.getElementById('xy-data').textContent));</script>\n</body></html>\n";
}

}  // namespace xy

int cmd_report(int argc, char** argv) {
  cxxopts::Options opts("xy-node report", "Write a run's metrics log as one HTML file (charts and a summary).");
  opts.add_options()
      ("run_dir", "the run's work directory (with metrics.jsonl)", cxxopts::value<std::string>())
      ("o,out", "the HTML file to write (default RUN_DIR/report.html)", cxxopts::value<std::string>())
      ("h,help", "show this help");
  opts.parse_positional({"run_dir"});
  opts.positional_help("RUN_DIR");
  cxxopts::ParseResult args;
  if (const int rc = parse_options(opts, argc, argv, "report", args); rc >= 0) return rc;
  if (!args.count("run_dir")) {
    std::cerr << "xy-node report: give the run's directory (xy-node report RUN_DIR [--out FILE])\n";
    return xy::kExitUsage;
  }
  const std::string dir = args["run_dir"].as<std::string>();
  const std::string log = dir + "/metrics.jsonl";
  const std::string out = args.count("out") ? args["out"].as<std::string>() : dir + "/report.html";
  nlohmann::json lines;
  try {
    lines = xy::read_metrics(log);
  } catch (const std::exception& e) {
    std::cerr << "xy-node report: " << e.what() << "\n";
    // No log there: the argument is wrong (2); a damaged log is bad data (1).
    return std::string(e.what()).rfind("no metrics log", 0) == 0 ? xy::kExitUsage : xy::kExitError;
  }
  try {
    xy::write_file_atomic(out, xy::report_html(lines, log));
  } catch (const std::exception& e) {
    std::cerr << "xy-node report: " << e.what() << "\n";
    return xy::kExitError;
  }
  std::cout << "wrote " << out << " (" << lines.size() << " lines of " << log << ")\n";
  return xy::kExitOk;
}
