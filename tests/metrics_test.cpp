// The metrics log (health/metrics.cpp) and the TensorBoard writer (health/tensorboard.cpp): lines
// appended once, every step exactly once across a resume, a damaged file refused naming path:line,
// and event files read back by readers that are not xy's: tests/tb_read.py (standard-library
// Python) always, TensorBoard's own EventAccumulator where the tensorboard package is installed.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "health/metrics.hpp"
#include "health/tensorboard.hpp"

using namespace xy;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// A fresh directory per case and process (ctest runs cases of one binary in parallel processes).
std::string fresh_dir(const std::string& name) {
  const std::string d = "/tmp/xy_metrics_test_" + std::to_string(::getpid()) + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

json step_line(int64_t step, double loss) {
  return {{"step", step}, {"loss", loss}, {"grad_norm", 1.5 + step}, {"lr", 1e-3 * step}, {"tokens", 64 * step}};
}

// The steps of a metrics log, counted.
std::map<int64_t, int> step_counts(const json& lines) {
  std::map<int64_t, int> n;
  for (const auto& l : lines)
    if (!l.contains("event") && !l.contains("eval")) n[l["step"].get<int64_t>()]++;
  return n;
}

// stdout of a command (and its exit status).
std::string run(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = ::pclose(p);
  *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return out;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) v.push_back(l);
  return v;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().string());
  std::sort(v.begin(), v.end());
  return v;
}

// "scalar STEP TAG VALUE" lines from tb_read.py, as (tag, step) -> value.
std::map<std::pair<std::string, int64_t>, double> scalars_of(const std::vector<std::string>& lines) {
  std::map<std::pair<std::string, int64_t>, double> m;
  for (const auto& l : lines) {
    std::istringstream in(l);
    std::string kind, tag, value;
    int64_t step;
    in >> kind >> step >> tag >> value;
    if (kind == "scalar") m[{tag, step}] = std::stod(value);
  }
  return m;
}

const std::string kReader = std::string(XY_SOURCE_DIR) + "/tests/tb_read.py";

// The process's directories go at the end (fresh_dir makes them under one parent).
struct RemoveTestDirs : ::testing::Environment {
  void TearDown() override { fs::remove_all("/tmp/xy_metrics_test_" + std::to_string(::getpid())); }
};
::testing::Environment* const remove_test_dirs = ::testing::AddGlobalTestEnvironment(new RemoveTestDirs);

}  // namespace

TEST(Metrics, AppendsOneLinePerCallOwnerOnly) {
  const std::string d = fresh_dir("append");
  {
    MetricsLog log(d, 0, false);
    log.event({{"event", "start"}, {"step", 0}, {"resumed_from", nullptr}});
    for (int s = 1; s <= 3; ++s) log.step(step_line(s, 5.0 - s));
    log.eval({{"eval", "val"}, {"step", 3}, {"loss", 2.5}, {"ppl", std::exp(2.5)}});
    log.step({{"step", 4}, {"loss", std::nan("")}});  // an overflowed step: null, still one line
  }
  const json lines = read_metrics(d + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[0]["event"], "start");
  for (const auto& l : lines) EXPECT_TRUE(l["time"].is_number()) << l.dump();
  EXPECT_EQ(lines[2]["loss"].get<double>(), 3.0);
  EXPECT_EQ(lines[4]["eval"], "val");
  EXPECT_TRUE(lines[5]["loss"].is_null());
  struct stat st;
  ASSERT_EQ(::stat((d + "/metrics.jsonl").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// A run to step 10, killed, restarted by the supervisor and resumed from the checkpoint at step 6:
// steps 7..10 and the evaluation at 10 are written again, once each; the events all stay.
TEST(Metrics, ResumeDropsWhatFollowsTheResumedStepEachStepOnce) {
  const std::string d = fresh_dir("resume");
  {
    MetricsLog log(d, 0, false);
    log.event({{"event", "start"}, {"step", 0}, {"resumed_from", nullptr}});
    for (int s = 1; s <= 10; ++s) log.step(step_line(s, 10.0 - s));
    log.eval({{"eval", "val"}, {"step", 5}, {"loss", 4.0}});
    log.eval({{"eval", "val"}, {"step", 10}, {"loss", 3.0}});
  }
  append_metrics_event(d, {{"event", "restart"}, {"attempt", 1}, {"of", 3}, {"reason", "killed"}});
  {
    MetricsLog log(d, 6, false);
    // Right after the open: nothing after step 6 is left but the events.
    const json mid = read_metrics(d + "/metrics.jsonl");
    for (const auto& l : mid)
      if (!l.contains("event")) EXPECT_LE(l["step"].get<int64_t>(), 6) << l.dump();
    log.event({{"event", "start"}, {"step", 6}, {"resumed_from", "step-00000006"}});
    for (int s = 7; s <= 12; ++s) log.step(step_line(s, 100.0 + s));
    log.eval({{"eval", "val"}, {"step", 10}, {"loss", 2.0}});
    log.event({{"event", "end"}, {"step", 12}, {"exit_code", 0}});
  }
  const json lines = read_metrics(d + "/metrics.jsonl");
  const auto counts = step_counts(lines);
  ASSERT_EQ(counts.size(), 12u);
  for (const auto& [step, n] : counts) EXPECT_EQ(n, 1) << "step " << step;
  std::vector<std::string> events;
  std::vector<double> evals;
  for (const auto& l : lines) {
    if (l.contains("event")) events.push_back(l["event"]);
    if (l.contains("eval")) evals.push_back(l["loss"]);
    if (!l.contains("event") && !l.contains("eval")) {
      const int64_t s = l["step"];
      EXPECT_EQ(l["loss"].get<double>(), s <= 6 ? 10.0 - s : 100.0 + s) << "step " << s;
    }
  }
  EXPECT_EQ(events, (std::vector<std::string>{"start", "restart", "start", "end"}));
  EXPECT_EQ(evals, (std::vector<double>{4.0, 2.0}));
}

TEST(Metrics, ADamagedLineIsRefusedNamingPathAndLine) {
  const std::string d = fresh_dir("bad");
  const std::string path = d + "/metrics.jsonl";
  const std::string content = "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"loss\": \n{\"step\": 3}\n";
  std::ofstream(path) << content;
  try {
    MetricsLog log(d, 0, false);
    FAIL() << "opened a damaged log";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2: not JSON"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line";
  }
  EXPECT_EQ(slurp(path), content) << "a refused log is left as it was";
  EXPECT_THROW(read_metrics(path), std::runtime_error);
  std::ofstream(path) << "{\"step\": 1}\n[1, 2]\n";
  try {
    read_metrics(path);
    FAIL() << "read a line that is not an object";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2: not a JSON object"), std::string::npos) << e.what();
  }
}

// The last write of a process killed mid-line (no newline): dropped on open, not refused.
TEST(Metrics, ATornLastLineIsDropped) {
  const std::string d = fresh_dir("torn");
  const std::string path = d + "/metrics.jsonl";
  std::ofstream(path) << "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"lo";
  EXPECT_EQ(read_metrics(path).size(), 1u);
  {
    MetricsLog log(d, 1, false);
    log.step(step_line(2, 1.0));
  }
  const json lines = read_metrics(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["step"], 2);
  EXPECT_EQ(lines[1]["loss"].get<double>(), 1.0);
}

TEST(Metrics, LinesFromManyThreadsStayWhole) {
  const std::string d = fresh_dir("threads");
  {
    MetricsLog log(d, 0, false);
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < 250; ++i)
          log.event({{"event", "note"}, {"thread", t}, {"i", i}, {"pad", std::string(300, 'x')}});
      });
    for (auto& t : ts) t.join();
  }
  EXPECT_EQ(read_metrics(d + "/metrics.jsonl").size(), 1000u);
}

TEST(TensorBoard, Crc32cAndRecordFraming) {
  // The CRC-32C check value (RFC 3720's polynomial, "123456789").
  EXPECT_EQ(TensorBoardWriter::crc32c("123456789", 9), 0xe3069283u);
  const std::string r = TensorBoardWriter::record("abc");
  ASSERT_EQ(r.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(r.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(r.substr(12, 3), "abc");
}

// Known scalars through MetricsLog, decoded by tests/tb_read.py: the version record, a START at
// step 1 (a fresh run), every step's numeric fields as train/<field> and the evaluation's.
TEST(TensorBoard, IndependentReaderDecodesWhatWasWritten) {
  const std::string d = fresh_dir("tb");
  {
    MetricsLog log(d, 0, true);
    for (int s = 1; s <= 3; ++s) log.step(step_line(s, 5.0 - 0.25 * s));
    log.eval({{"eval", "val"}, {"step", 3}, {"loss", 4.125}, {"ppl", 61.87}});
  }
  const auto files = event_files(d + "/tb");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_NE(files[0].find("/events.out.tfevents."), std::string::npos);
  int rc = 0;
  const auto out = lines_of(run("python3 " + kReader + " " + files[0], &rc));
  ASSERT_EQ(rc, 0);
  ASSERT_GE(out.size(), 2u);
  EXPECT_EQ(out[0], "version brain.Event:2");
  EXPECT_EQ(out[1], "start 1");
  const auto got = scalars_of(out);
  std::map<std::pair<std::string, int64_t>, double> want;
  for (int s = 1; s <= 3; ++s) {
    const json line = step_line(s, 5.0 - 0.25 * s);
    for (const auto& [k, v] : line.items())
      if (k != "step") want[{"train/" + k, s}] = static_cast<float>(v.get<double>());
  }
  want[{"eval/val/loss", 3}] = 4.125f;
  want[{"eval/val/ppl", 3}] = 61.87f;
  EXPECT_EQ(got, want);
}

// A damaged record is caught by the reader (so that the test above could fail).
TEST(TensorBoard, IndependentReaderRejectsABadCrc) {
  const std::string d = fresh_dir("tbbad");
  std::string file;
  {
    TensorBoardWriter w(d, 1e9);
    w.scalars(1, 1e9, {{"a", 1.0f}});
    file = w.path();
  }
  std::string bytes = slurp(file);
  bytes[bytes.size() - 6] ^= 1;  // inside the last record's data
  std::ofstream(file, std::ios::binary) << bytes;
  int rc = 0;
  run("python3 " + kReader + " " + file + " 2>&1", &rc);
  EXPECT_EQ(rc, 1);
}

// A run to step 4, resumed from step 2 with other values: TensorBoard's own reader, which purges
// on SessionLog START, must show each step once with the resumed run's values.
// The resumed run's own file starts with a START at step 3 (tb_read.py, always).
TEST(TensorBoard, EventAccumulatorSeesTheResumedValues) {
  const std::string d = fresh_dir("tbresume");
  {
    MetricsLog log(d, 0, true);
    for (int s = 1; s <= 4; ++s) log.step({{"step", s}, {"loss", 10.0 + s}});
  }
  {
    MetricsLog log(d, 2, true);
    for (int s = 3; s <= 5; ++s) log.step({{"step", s}, {"loss", 20.0 + s}});
  }
  const auto files = event_files(d + "/tb");
  ASSERT_EQ(files.size(), 2u);
  int rc = 0;
  const auto second = lines_of(run("python3 " + kReader + " " + files[1], &rc));
  ASSERT_EQ(rc, 0);
  ASSERT_GE(second.size(), 3u);
  EXPECT_EQ(second[1], "start 3");
  EXPECT_EQ(second[2], "scalar 3 train/loss 23.0");
  // TensorBoard itself has no Debian package: CI's machines read the files with tb_read.py only
  // (above and in the other tests); where TensorBoard is installed (the GPU machine), its own
  // EventAccumulator must also see each step once with the resumed values.
  run("python3 -c 'import tensorboard' 2>/dev/null", &rc);
  if (rc != 0) {
    std::printf("TensorBoard is not installed here: its EventAccumulator was not run\n");
    return;
  }
  const auto got = scalars_of(lines_of(run("python3 " + kReader + " " + files[0] + " --tensorboard", &rc)));
  ASSERT_EQ(rc, 0);
  std::map<std::pair<std::string, int64_t>, double> want;
  for (int s = 1; s <= 5; ++s) want[{"train/loss", s}] = static_cast<float>(s <= 2 ? 10.0 + s : 20.0 + s);
  EXPECT_EQ(got, want);
}
