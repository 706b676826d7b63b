// The metrics log (health/metrics.hpp): metrics.jsonl that survives resumes, and its TensorBoard
// mirror.
//
// An existing file whose line is not JSON is refused with one line naming path:line: the log is
// the run's record, and guessing past a damaged line could drop or duplicate steps silently; the
// user moves the file away (or fixes the line) and starts again. One exception: a last line
// without its newline is a write the process did not finish (power loss, a full disk), the one
// damage the log itself can cause; it is dropped.
#include "health/metrics.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "health/tensorboard.hpp"
#include "io/atomic_file.hpp"

namespace xy {
namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The whole file, or nullopt-like false when it does not exist. Throws naming the path otherwise.
bool read_file(const std::string& path, std::string& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    throw std::runtime_error("cannot read the metrics log " + path + ": " + std::strerror(errno));
  }
  out.clear();
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error("cannot read the metrics log " + path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return true;
}

struct Line {
  std::string text;  // without the newline
  nlohmann::json value;
};

// Splits and parses; a torn last line (no newline, not JSON) is dropped, any other line that is
// not a JSON object throws "path:N: ...".
std::vector<Line> parse_lines(const std::string& path, const std::string& data, bool* torn) {
  std::vector<Line> lines;
  size_t pos = 0;
  size_t number = 0;
  if (torn) *torn = false;
  while (pos < data.size()) {
    const size_t nl = data.find('\n', pos);
    const bool last_unterminated = nl == std::string::npos;
    std::string text = data.substr(pos, last_unterminated ? std::string::npos : nl - pos);
    pos = last_unterminated ? data.size() : nl + 1;
    ++number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank
    nlohmann::json v = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (v.is_discarded() || !v.is_object()) {
      if (last_unterminated) {
        if (torn) *torn = true;
        break;
      }
      throw std::runtime_error(path + ":" + std::to_string(number) + ": " +
                               (v.is_discarded() ? "not JSON" : "not a JSON object") +
                               " (the metrics log is damaged; move it away to start a new one)");
    }
    lines.push_back({std::move(text), std::move(v)});
  }
  return lines;
}

// A step or evaluation line after `start_step` (what a resume from start_step writes again).
bool after(const nlohmann::json& v, int64_t start_step) {
  if (v.contains("event")) return false;
  const auto it = v.find("step");
  return it != v.end() && it->is_number() && it->get<double>() > static_cast<double>(start_step);
}

std::string dump_line(const nlohmann::json& v) {
  // NaN and infinities become null; bytes that are not UTF-8 (a reason from a log) become U+FFFD.
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

MetricsLog::MetricsLog(const std::string& work_dir, int64_t start_step, bool tensorboard)
    : path_(work_dir + "/metrics.jsonl") {
  make_dir_no_link(work_dir);
  std::string data;
  if (read_file(path_, data)) {
    bool torn = false;
    const std::vector<Line> lines = parse_lines(path_, data, &torn);
    std::string kept;
    bool dropped = torn;
    for (const Line& l : lines) {
      if (after(l.value, start_step)) {
        dropped = true;
        continue;
      }
      kept += l.text;
      kept += '\n';
    }
    if (dropped) write_file_atomic(path_, kept);
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd_ < 0) throw std::runtime_error("cannot open the metrics log " + path_ + ": " + std::strerror(errno));
  if (tensorboard) {
    tb_ = std::make_unique<TensorBoardWriter>(work_dir + "/tb", unix_now());
    tb_->session_start(start_step + 1, unix_now());
  }
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::step(const nlohmann::json& line) {
  nlohmann::json l = line;
  if (!l.contains("time")) l["time"] = unix_now();
  std::lock_guard<std::mutex> lock(mu_);
  append(l);
  if (!tb_ || !l.contains("step") || !l["step"].is_number()) return;
  std::vector<std::pair<std::string, float>> values;
  for (const auto& [k, v] : l.items())
    if (k != "step" && k != "time" && v.is_number()) values.emplace_back("train/" + k, v.get<float>());
  tb_->scalars(l["step"].get<int64_t>(), l["time"].get<double>(), values);
}

void MetricsLog::eval(const nlohmann::json& line) {
  nlohmann::json l = line;
  if (!l.contains("time")) l["time"] = unix_now();
  std::lock_guard<std::mutex> lock(mu_);
  append(l);
  if (!tb_ || !l.contains("step") || !l["step"].is_number() || !l.contains("eval") || !l["eval"].is_string())
    return;
  const std::string name = l["eval"].get<std::string>();
  std::vector<std::pair<std::string, float>> values;
  for (const char* k : {"loss", "ppl"})
    if (l.contains(k) && l[k].is_number()) values.emplace_back("eval/" + name + "/" + k, l[k].get<float>());
  tb_->scalars(l["step"].get<int64_t>(), l["time"].get<double>(), values);
}

void MetricsLog::event(const nlohmann::json& line) {
  nlohmann::json l = line;
  if (!l.contains("time")) l["time"] = unix_now();
  std::lock_guard<std::mutex> lock(mu_);
  append(l);
}

// Called under mu_: one write() of the whole line with O_APPEND, so that lines of two writers (the
// supervisor's restart events and a node) never interleave, and a crash leaves whole lines (or a
// torn last one, which the next open drops).
void MetricsLog::append(nlohmann::json line) {
  const std::string s = dump_line(line);
  write_all_fd(fd_, s.data(), s.size(), path_);
}

void append_metrics_event(const std::string& work_dir, const nlohmann::json& line) {
  const std::string path = work_dir + "/metrics.jsonl";
  nlohmann::json l = line;
  if (!l.contains("time")) l["time"] = unix_now();
  const std::string s = dump_line(l);
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot open the metrics log " + path + ": " + std::strerror(errno));
  try {
    write_all_fd(fd, s.data(), s.size(), path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

nlohmann::json read_metrics(const std::string& path) {
  std::string data;
  if (!read_file(path, data)) throw std::runtime_error("no metrics log at " + path);
  nlohmann::json out = nlohmann::json::array();
  for (Line& l : parse_lines(path, data, nullptr)) out.push_back(std::move(l.value));
  return out;
}

}  // namespace xy
