// Tests `xy-node preprocess` as a process: SIGKILLed mid-run and rerun with the same command it
// produces the same output as an uninterrupted run, and it runs without LibTorch loaded; a too-low
// `ulimit -n` is refused up front.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/preprocess_test.hpp"

using namespace xy;
using namespace xy::test;

namespace {

#ifndef XY_NODE_BIN
#error "XY_NODE_BIN (the xy-node executable) must be defined by the build"
#endif

// Starts `xy-node preprocess args...` with stdout/stderr to `log`; returns its pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& log, int nofile = 0) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (nofile > 0) {
      struct rlimit rl = {static_cast<rlim_t>(nofile), static_cast<rlim_t>(nofile)};
      ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(XY_NODE_BIN));
    argv.push_back(const_cast<char*>("preprocess"));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(XY_NODE_BIN, argv.data());
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class PreprocessCli : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = sample_tokenizer();
    dir_ = make_temp_dir("xy_preprocess_cli_test");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string tok_, dir_;
};

TEST_F(PreprocessCli, SigkilledRunResumesToTheSameOutput) {
  // The reference, in-process and uninterrupted.
  auto ref = base_options(tok_, dir_ + "/ref", {kSampleCorpus});
  ref.shard_tokens = 20000;
  ref.chunk_bytes = 16 << 10;
  run_quiet(ref);
  const std::vector<std::string> args = {"--tokenizer", tok_, "--output", dir_ + "/out",
                                         "--shard-tokens", "20000", "--chunk-bytes", "16384",
                                         "--memory-mb", "64", "--threads", "1", kSampleCorpus};
  // Kill it twice, at different points, then let it finish.
  int kills = 0;
  for (int target : {3, 11}) {
    const pid_t pid = spawn(args, dir_ + "/log" + std::to_string(target));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!fs::exists(dir_ + "/out/" + ("shard-000" + std::string(target < 10 ? "0" : "") +
                                         std::to_string(target) + ".bin")) &&
           std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) FAIL() << "xy-node exited before the kill:\n"
                                                          << read_all(dir_ + "/log" + std::to_string(target));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // xy-node runs preprocess without LibTorch (apps/launcher.cpp): none of its libraries is
    // mapped, while the tokenizer's module is (the check of the maps themselves).
    const std::string maps = read_all("/proc/" + std::to_string(pid) + "/maps");
    EXPECT_NE(maps.find("libxy_spm"), std::string::npos) << maps.substr(0, 2000);
    EXPECT_EQ(maps.find("libtorch"), std::string::npos) << "LibTorch is loaded by xy-node preprocess";
    EXPECT_EQ(maps.find("libc10"), std::string::npos) << "LibTorch's c10 is loaded by xy-node preprocess";
    ::kill(pid, SIGKILL);
    EXPECT_EQ(wait_exit(pid), 128 + SIGKILL);
    ++kills;
    EXPECT_FALSE(fs::exists(dir_ + "/out/manifest.json")) << "killed after shard " << target;
  }
  EXPECT_EQ(kills, 2);
  const pid_t pid = spawn(args, dir_ + "/log_final");
  ASSERT_EQ(wait_exit(pid), 0) << read_all(dir_ + "/log_final");
  const std::string log = read_all(dir_ + "/log_final");
  std::cout << log;
  EXPECT_NE(log.find("resuming"), std::string::npos);
  expect_same_dirs(dir_ + "/ref", dir_ + "/out");
}

TEST_F(PreprocessCli, TooLowOpenFileLimitIsRefusedUpFront) {
  const pid_t pid = spawn({"--tokenizer", tok_, "--output", dir_ + "/out", kSampleCorpus},
                          dir_ + "/log", /*nofile=*/12);
  EXPECT_EQ(wait_exit(pid), 1);
  const std::string log = read_all(dir_ + "/log");
  std::cout << log;
  EXPECT_NE(log.find("ulimit -n"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir_ + "/out"));
}

TEST_F(PreprocessCli, BadUsageIsExitTwo) {
  EXPECT_EQ(wait_exit(spawn({"--output", dir_ + "/out", kSampleCorpus}, dir_ + "/log")), 2);
  EXPECT_NE(read_all(dir_ + "/log").find("--tokenizer is required"), std::string::npos);
}

// Every numeric flag: a value out of range, overflowing, negative or not a number is one line
// naming the flag, exit 2, with nothing written. (--shard-mb 2^44 wrapped to 0 tokens per shard
// and wrote empty shards forever: each run here is killed after 20 s.)
TEST_F(PreprocessCli, BadNumericFlagsAreOneLineExitTwo) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--shard-mb", "17592186044416"}, {"--shard-mb", "0"}, {"--shard-mb", "-1"},
      {"--shard-mb", "12abc"}, {"--shard-mb", "99999999999999999999999"},
      {"--shard-tokens", "-3"}, {"--shard-tokens", "9223372036854775807"},
      {"--memory-mb", "9223372036854775807"}, {"--memory-mb", "8"}, {"--memory-mb", "lots"},
      {"--max-line-bytes", "-1"}, {"--max-line-bytes", "1e3"},
      {"--chunk-bytes", "-1"}, {"--chunk-bytes", "99999999999"},
      {"--threads", "-1"}, {"--threads", "100000"}, {"--threads", "4294967297"}, {"--threads", ""},
      {"--report", "-1"}, {"--report", "x"},
      {"--progress-every", "0"}, {"--progress-every", "-1"}, {"--progress-every", "nan"},
      {"--progress-every", "inf"}, {"--progress-every", "5s"},
      {"--stop-after-shards", "-2"}, {"--seq-len", "-1"}, {"--seq-len", "99999999999"},
      {"--group-docs", "0"}, {"--group-docs", " 7"},
  };
  int i = 0;
  for (const auto& [flag, value] : cases) {
    const std::string out = dir_ + "/out" + std::to_string(i), log = dir_ + "/log" + std::to_string(i);
    ++i;
    const pid_t pid = spawn({"--tokenizer", tok_, "--output", out, "--progress", "none", flag, value, kSampleCorpus}, log);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (::waitpid(pid, &status, WNOHANG) != pid) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    const std::string text = read_all(log);
    EXPECT_EQ(rc, 2) << flag << " " << value << ":\n" << text;
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << flag << " " << value << ":\n" << text;
    EXPECT_EQ(text.rfind("xy-node preprocess: " + flag + " ", 0), 0u) << flag << " " << value << ":\n" << text;
    EXPECT_FALSE(fs::exists(out)) << flag << " " << value << " created the output";
  }
}

}  // namespace
