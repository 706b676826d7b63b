// `xy-node preprocess`: the settings, the plan, the threads and the summary (see preprocess.hpp).
// The parts: reader.cpp (inputs -> chunks of lines), encoder.cpp (chunks -> token ids),
// packer.cpp (ids -> shards, state, manifest); pipeline.hpp holds what travels between them.
#include "preprocess/preprocess.hpp"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "io/threads.hpp"
#include "io/tokenizer.hpp"
#include "preprocess/encoder.hpp"
#include "preprocess/packer.hpp"
#include "preprocess/pipeline.hpp"
#include "preprocess/reader.hpp"

namespace fs = std::filesystem;

namespace xy {

const char* problem_name(Problem p) {
  switch (p) {
    case Problem::kMalformedJson: return "malformed_json";
    case Problem::kMissingField: return "missing_field";
    case Problem::kNotString: return "not_string";
    case Problem::kInvalidUtf8: return "invalid_utf8";
    case Problem::kEmptyText: return "empty_text";
    case Problem::kLineTooLong: return "line_too_long";
    case Problem::kTruncatedFile: return "truncated_file";
    case Problem::kCorruptFile: return "corrupt_file";
  }
  return "?";
}

namespace pp {

std::string errno_text(int e) { return std::strerror(e); }

Plan::Plan() = default;
Plan::~Plan() = default;  // here, where Tokenizer is complete

// ---- the queues between the threads (pipeline.hpp) ------------------------------------------

void Pipeline::acquire() {
  std::unique_lock<std::mutex> lk(mu_);
  // Room: at most max_chunks_ chunks and at most the memory budget.
  cv_.wait(lk, [&] {
    return stop_ || inflight_chunks_ == 0 ||
           (inflight_chunks_ < max_chunks_ && inflight_ + chunk_bytes_ <= budget_);
  });
  inflight_ += chunk_bytes_;
  ++inflight_chunks_;
}

void Pipeline::push_work(Chunk c) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    work_.push_back(std::move(c));
    ++chunks_made_;
  }
  cv_.notify_all();
}

void Pipeline::reader_done() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    reader_done_ = true;
  }
  cv_.notify_all();
}

bool Pipeline::take_work(Chunk* c) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return stop_ || !work_.empty() || reader_done_; });
  if (stop_ || work_.empty()) return false;
  *c = std::move(work_.front());
  work_.pop_front();
  return true;
}

void Pipeline::put_result(int64_t seq, Result r) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    done_.emplace(seq, std::move(r));
  }
  cv_.notify_all();
}

bool Pipeline::take_result(int64_t seq, Result* r) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] {
    return !thread_error_.empty() || done_.count(seq) != 0 || (reader_done_ && seq >= chunks_made_);
  });
  if (!thread_error_.empty()) throw PreprocessError(thread_error_);
  auto it = done_.find(seq);
  if (it == done_.end()) return false;  // the reader is done and every chunk is packed
  *r = std::move(it->second);
  done_.erase(it);
  return true;
}

void Pipeline::release(size_t budget) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    inflight_ -= budget;
    --inflight_chunks_;
  }
  cv_.notify_all();
}

void Pipeline::fail(const std::string& what) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (thread_error_.empty()) thread_error_ = what;
    stop_ = true;
  }
  cv_.notify_all();
}

void Pipeline::stop() {
  stop_ = true;
  cv_.notify_all();
}

namespace {

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof(buf), "%.2f GB", b / 1e9);
  else std::snprintf(buf, sizeof(buf), "%.1f MB", b / 1e6);
  return buf;
}

std::string human_count(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof(buf), "%.2fG", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof(buf), "%.2fM", n / 1e6);
  else if (n >= 1e4) std::snprintf(buf, sizeof(buf), "%.1fk", n / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.0f", n);
  return buf;
}

std::string human_duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(t / 3600), (long long)(t / 60 % 60));
  else if (t >= 60) std::snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof(buf), "%llds", (long long)t);
  return buf;
}

// ---- the run ----------------------------------------------------------------------------------

class Run {
 public:
  Run(const PreprocessOptions& opt, std::ostream& log) : opt_(opt), log_(log), packer_(opt, plan_, log) {}
  ~Run() { stop_threads(); }  // never destroy a joinable thread, whatever was thrown

  PreprocessResult go();

 private:
  void setup();
  json settings_json() const;
  void reader_thread(StartPosition start);
  void encoder_thread();
  void progress(bool final);
  void stop_threads();

  const PreprocessOptions& opt_;
  std::ostream& log_;
  Plan plan_;  // constant after setup()
  Packer packer_;
  std::unique_ptr<Pipeline> pipe_;  // made after setup(), which sizes it
  std::vector<std::thread> threads_v_;

  // Progress.
  using Clock = std::chrono::steady_clock;
  Clock::time_point t0_, last_progress_;
  int64_t raw_at_start_ = 0, text_at_start_ = 0;
  bool tty_ = false, live_ = false;
  bool resumed_ = false;
};

}  // namespace
}  // namespace pp

std::string check_options(const PreprocessOptions& o) {
  auto range = [](const char* flag, int64_t v, int64_t lo, int64_t hi, const char* note = "") {
    if (v >= lo && v <= hi) return std::string();
    return std::string(flag) + " " + std::to_string(v) + " is out of range: it must be " +
           std::to_string(lo) + ".." + std::to_string(hi) + note;
  };
  std::string e;
  if (o.output.empty()) return "--output DIR is required";
  if (o.tokenizer.empty()) return "--tokenizer FILE is required";
  if (o.text_field.empty()) return "--text-field must not be empty";
  if (o.packing != "concat" && o.packing != "llm-code")
    return "--packing '" + o.packing + "' is not one of: concat, llm-code";
  if (o.packing == "llm-code" && o.seq_len < 1)
    return "--packing llm-code pads each group of documents to a multiple of the sample length: "
           "give --seq-len N (the training data.seq_len)";
  if (!(e = range("--seq-len", o.seq_len, 0, kPreprocessMaxSeqLen)).empty()) return e;
  if (!(e = range("--group-docs", o.group_documents, 1, INT64_MAX)).empty()) return e;
  if (!(e = range("--threads", o.threads, 0, kPreprocessMaxThreads, " (0 = all cores)")).empty()) return e;
  if (!(e = range("--shard-mb", o.shard_mb, 1, kPreprocessMaxShardMb)).empty()) return e;
  if (!(e = range("--shard-tokens", o.shard_tokens, 0, kPreprocessMaxShardTokens, " (0 = from --shard-mb)")).empty())
    return e;
  if (!(e = range("--memory-mb", o.memory_mb, 16, kPreprocessMaxMemoryMb)).empty()) return e;
  const int64_t budget = o.memory_mb * (int64_t{1} << 20) / 4;  // fits: memory_mb <= 2^30
  if (!(e = range("--max-line-bytes", o.max_line_bytes, 16, INT64_MAX)).empty()) return e;
  if (o.max_line_bytes > budget)
    return "--max-line-bytes " + std::to_string(o.max_line_bytes) + " exceeds the " +
           std::to_string(budget) + " bytes of text that --memory-mb " + std::to_string(o.memory_mb) +
           " allows in flight; raise --memory-mb or lower --max-line-bytes";
  if (!(e = range("--chunk-bytes", o.chunk_bytes, 0, budget, " (0 = from --memory-mb; at most a quarter of it)")).empty())
    return e;
  if (!(e = range("--report", o.report_limit, 0, kPreprocessMaxReports)).empty()) return e;
  if (!(o.progress_every_s > 0 && o.progress_every_s <= 86400))  // NaN fails too
    return "--progress-every " + std::to_string(o.progress_every_s) +
           " is out of range: it must be a number of seconds in (0, 86400]";
  if (!(e = range("--stop-after-shards", o.stop_after_shards, 0, INT64_MAX)).empty()) return e;
  return "";
}

namespace pp {
namespace {

void Run::setup() {
  if (const std::string e = check_options(opt_); !e.empty()) throw PreprocessError(e);
  plan_.llm_code = opt_.packing == "llm-code";
  if (const std::string m = check_open_file_limit(); !m.empty()) throw PreprocessError(m);

  plan_.threads = opt_.threads > 0 ? opt_.threads : std::max(1u, std::thread::hardware_concurrency());
  // Text in flight costs about 4x its size (the line bytes, the parsed JSON string, the ids).
  plan_.budget = static_cast<size_t>(opt_.memory_mb) * (1u << 20) / 4;  // max_line_bytes <= it (checked)
  // Enough chunks in flight to keep every worker busy while the writer waits for the oldest or
  // syncs a finished shard; by default they share the budget.
  plan_.max_chunks = 4 * (plan_.threads + 1);
  plan_.chunk_bytes = opt_.chunk_bytes > 0
                          ? static_cast<size_t>(opt_.chunk_bytes)
                          : std::clamp<size_t>(plan_.budget / static_cast<size_t>(plan_.max_chunks), 64 << 10, 1 << 20);

  for (const std::string& p : expand_inputs(opt_.inputs)) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0)
      throw PreprocessError("cannot stat input '" + p + "': " + errno_text(errno));
    if (::access(p.c_str(), R_OK) != 0)
      throw PreprocessError("cannot read input '" + p + "': " + errno_text(errno));
    InputInfo in;
    in.path = p;
    in.bytes = static_cast<int64_t>(st.st_size);
    in.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    plan_.total_input_bytes += in.bytes;
    plan_.inputs.push_back(std::move(in));
  }

  try {
    plan_.tok = Tokenizer::load(opt_.tokenizer);
  } catch (const TokenizerError& e) {
    throw PreprocessError(e.what());
  }
  plan_.tok_sha = sha256_file(plan_.tok->path());  // tokenizer.json when given its directory
  plan_.vocab = plan_.tok->vocab_size();
  plan_.bos = plan_.tok->bos_id();
  plan_.eos = plan_.tok->eos_id();
  if (plan_.llm_code && plan_.eos < 0)
    throw PreprocessError("--packing llm-code pads with EOS, but tokenizer '" + opt_.tokenizer +
                          "' has no EOS piece");
  plan_.width = plan_.vocab <= 65536 ? 2 : 4;
  plan_.shard_tokens = opt_.shard_tokens > 0 ? opt_.shard_tokens : (opt_.shard_mb << 20) / plan_.width;
  plan_.out = opt_.output;
  plan_.settings = settings_json();
}

json Run::settings_json() const {
  json s;
  s["inputs"] = json::array();
  for (const auto& in : plan_.inputs)
    s["inputs"].push_back({{"path", in.path}, {"bytes", in.bytes}, {"mtime_ns", in.mtime_ns}});
  s["tokenizer_sha256"] = plan_.tok_sha;
  s["text_field"] = opt_.text_field;
  s["packing"] = opt_.packing;
  s["seq_len"] = plan_.llm_code ? opt_.seq_len : 0;
  s["group_documents"] = plan_.llm_code ? opt_.group_documents : 0;
  s["shard_tokens"] = plan_.shard_tokens;
  s["token_bytes"] = plan_.width;
  s["max_line_bytes"] = opt_.max_line_bytes;
  return s;
}

// Nothing may escape a thread (std::terminate): the first error stops the run, and the packer
// rethrows it.
void Run::reader_thread(StartPosition start) {
  try {
    read_inputs(plan_, start, opt_.max_line_bytes, *pipe_);
  } catch (const std::exception& e) {
    pipe_->fail(e.what());
  } catch (...) {
    pipe_->fail("the reader thread failed with an unknown exception");
  }
  pipe_->reader_done();
}

void Run::encoder_thread() {
  try {
    encode_chunks(*plan_.tok, opt_.text_field, *pipe_);
  } catch (const std::exception& e) {
    pipe_->fail(e.what());
  } catch (...) {
    pipe_->fail("an encoding thread failed with an unknown exception");
  }
}

void Run::stop_threads() {
  if (pipe_) pipe_->stop();
  for (auto& t : threads_v_)
    if (t.joinable()) t.join();
  threads_v_.clear();
}

void Run::progress(bool final) {
  if (opt_.progress == "none") return;
  const auto now = Clock::now();
  const double since_last = std::chrono::duration<double>(now - last_progress_).count();
  const double interval = live_ ? 0.5 : opt_.progress_every_s;
  if (!final && since_last < interval) return;
  last_progress_ = now;
  const double el = std::chrono::duration<double>(now - t0_).count();
  const double raw = static_cast<double>(packer_.raw_read());
  const double total = static_cast<double>(plan_.total_input_bytes);
  const double raw_rate = el > 0 ? (raw - static_cast<double>(raw_at_start_)) / el : 0;
  const double text_rate = el > 0 ? static_cast<double>(packer_.text_bytes() - text_at_start_) / el : 0;
  const double eta = raw_rate > 0 ? (total - raw) / raw_rate : -1;
  std::ostringstream s;
  s << "preprocess: " << human_bytes(raw) << " / " << human_bytes(total) << " read ("
    << std::fixed << std::setprecision(1) << (total > 0 ? 100 * raw / total : 100.0) << "%) | "
    << human_count(static_cast<double>(packer_.documents())) << " docs | "
    << human_count(static_cast<double>(packer_.tokens())) << " tokens | " << std::setprecision(1)
    << text_rate / 1e6 << " MB/s of text | " << (final ? "done in " + human_duration(el) : "ETA " + human_duration(eta));
  if (live_) {
    log_ << "\r\033[K" << s.str();
    if (final) log_ << "\n";
    log_ << std::flush;
  } else {
    log_ << s.str() << std::endl;
  }
}

PreprocessResult Run::go() {
  t0_ = last_progress_ = Clock::now();
  setup();
  fs::create_directories(plan_.out);
  tty_ = ::isatty(2) == 1 && &log_ == &std::cerr;
  live_ = opt_.progress == "tty" || (opt_.progress == "auto" && tty_);
  packer_.set_live(live_);

  PreprocessResult res;
  if (packer_.read_complete(&res)) {
    log_ << "preprocess: '" << plan_.out << "' is already complete (" << res.shards << " shards, "
         << res.tokens << " tokens); nothing to do" << std::endl;
    return res;
  }
  packer_.remove_temporaries();
  StartPosition start;
  resumed_ = packer_.load_state(&start);
  if (resumed_)
    log_ << "preprocess: resuming '" << plan_.out << "' after shard " << packer_.shards() << " (input "
         << packer_.position_file() << "/" << plan_.inputs.size() << ", line " << packer_.position_line()
         << ")" << std::endl;
  raw_at_start_ = packer_.raw_read();
  text_at_start_ = packer_.text_bytes();
  log_ << "preprocess: " << plan_.inputs.size() << " inputs (" << human_bytes(static_cast<double>(plan_.total_input_bytes))
       << "), " << plan_.threads << " threads, tokenizer vocab " << plan_.vocab << " (uint" << plan_.width * 8
       << " ids), " << opt_.packing << " packing, " << plan_.shard_tokens << " tokens per shard"
       << std::endl;

  pipe_ = std::make_unique<Pipeline>(plan_.budget, plan_.chunk_bytes, plan_.max_chunks);
  try {
    // A refused thread (ulimit) is a ThreadStartError; the catch below stops and joins the ones
    // already started (a joinable std::thread destroyed would end the process in std::terminate).
    threads_v_.reserve(static_cast<size_t>(plan_.threads) + 1);
    threads_v_.push_back(start_thread("the preprocess reader thread", [this, start] { reader_thread(start); }));
    for (int i = 0; i < plan_.threads; ++i)
      threads_v_.push_back(start_thread("preprocess encoding thread " + std::to_string(i + 1) + " of " +
                                            std::to_string(plan_.threads) + " (--threads)",
                                        [this] { encoder_thread(); }));
    // The results in chunk order, whatever order the encoders finish them in.
    for (int64_t next = 0;; ++next) {
      Result r;
      if (!pipe_->take_result(next, &r)) break;
      const size_t budget = r.end.budget;
      packer_.pack(r);
      pipe_->release(budget);
      progress(false);
    }
  } catch (...) {
    stop_threads();
    throw;
  }
  stop_threads();

  packer_.finish();
  progress(true);

  res.documents = packer_.documents();
  res.tokens = packer_.tokens();
  res.padding = packer_.padding();
  res.lines = packer_.lines();
  res.shards = packer_.shards();
  res.input_bytes = plan_.total_input_bytes;
  res.text_bytes = packer_.text_bytes();
  res.problems = packer_.problems();
  res.reports = packer_.reports();
  res.resumed = resumed_;
  res.seconds = std::chrono::duration<double>(Clock::now() - t0_).count();
  return res;
}

}  // namespace
}  // namespace pp

std::string check_open_file_limit() {
  constexpr rlim_t kNeed = kPreprocessMaxFiles + 16;  // + stdin/out/err and the runtime's own
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return {};
  if (rl.rlim_cur >= kNeed) return {};
  if (rl.rlim_max >= kNeed) {
    rl.rlim_cur = kNeed;
    if (::setrlimit(RLIMIT_NOFILE, &rl) == 0) return {};
  }
  return "the open-file limit (ulimit -n) is " + std::to_string(rl.rlim_cur) +
         ", and the hard limit " + std::to_string(rl.rlim_max) + "; xy-node preprocess needs " +
         std::to_string(kNeed) + " (it keeps at most " + std::to_string(kPreprocessMaxFiles) +
         " files open whatever the number of inputs and threads): run 'ulimit -n " +
         std::to_string(kNeed) + "' or more first";
}

PreprocessResult preprocess(const PreprocessOptions& opt, std::ostream& log) {
  pp::Run run(opt, log);
  return run.go();
}

}  // namespace xy
