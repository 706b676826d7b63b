// Internals of `xy-node preprocess` shared by its parts (not a public header; the interface is
// preprocess.hpp): the units of work that travel reader -> encoders -> packer, the plan fixed
// before the threads start, and the queues between the threads.
//
//   reader.cpp   one thread: inputs -> decompressed text -> chunks of whole lines   (Chunk)
//   encoder.cpp  N threads: a chunk's lines -> checked documents -> token ids        (Result)
//   packer.cpp   the calling thread, in chunk order: ids -> shards, state, manifest
//   preprocess.cpp  the options, the plan, the threads, progress and the summary
#pragma once

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "preprocess/preprocess.hpp"

namespace xy {

class Tokenizer;

namespace pp {

using json = nlohmann::json;

// An fd closed on scope exit.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  void reset(int f = -1) {
    if (fd >= 0) ::close(fd);
    fd = f;
  }
  int release() {  // the caller owns (and closes) the fd from now on
    const int f = fd;
    fd = -1;
    return f;
  }
};

std::string errno_text(int e);

// Runs fn, turning the std::runtime_error of io/atomic_file.hpp into a PreprocessError (what the
// command reports as one line, exit 1).
template <class F>
auto as_preprocess_error(F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const PreprocessError&) {
    throw;
  } catch (const std::exception& e) {
    throw PreprocessError(e.what());
  }
}

// Whitespace only (also what makes a line blank, and a text empty).
bool blank(const char* p, size_t n);

// ---- units of work --------------------------------------------------------------------------

constexpr int8_t kNoProblem = -1;

struct LineRec {
  int64_t offset = 0, len = 0;  // in Chunk::blob
  int64_t line = 0;             // 1-based line number in its file
  int8_t problem = kNoProblem;  // set by the reader for line_too_long / truncated / corrupt
  std::string detail;
};

// Where a chunk ends in its input; what the packer records when the chunk is done.
struct ChunkEnd {
  int32_t file = 0;
  int64_t offset = 0;      // decompressed bytes of the file consumed
  int64_t line = 0;        // lines of the file consumed
  int64_t raw = 0;         // raw (compressed) bytes of the file consumed
  int64_t lines_read = 0;  // lines in this chunk, blank ones included
  int64_t text_bytes = 0;  // decompressed bytes in this chunk
  bool file_done = false;
  std::string sha256;      // of the whole file, when file_done
  size_t budget = 0;       // bytes of the in-flight budget held
};

struct Chunk {
  int64_t seq = 0;
  std::string blob;
  std::vector<LineRec> lines;
  ChunkEnd end;
};

struct Item {
  int64_t line = 0;
  int8_t problem = kNoProblem;
  int64_t tokens = 0;  // a document's token count (BOS + ids + EOS)
  std::string detail;
};

struct Result {
  std::vector<int32_t> tokens;  // the documents' tokens back to back
  std::vector<Item> items;      // documents and problems in line order
  ChunkEnd end;
};

// ---- the plan: fixed before any thread starts -----------------------------------------------

struct InputInfo {
  std::string path;
  int64_t bytes = 0;
  int64_t mtime_ns = 0;
};

struct Plan {
  std::vector<InputInfo> inputs;
  std::unique_ptr<Tokenizer> tok;
  std::string tok_sha;
  int64_t vocab = 0;
  int32_t bos = -1, eos = -1;
  int64_t width = 2;  // bytes per token on disk
  int64_t shard_tokens = 0;
  bool llm_code = false;
  int threads = 1;
  size_t budget = 0, chunk_bytes = 0;
  int max_chunks = 0;  // chunks in flight at most: 4 (threads + 1)
  int64_t total_input_bytes = 0;
  json settings;  // what must match for a resume or an "already complete"
  std::string out;

  Plan();
  ~Plan();
};

// Where the reader starts (from the state file on resume).
struct StartPosition {
  int32_t file = 0;
  int64_t offset = 0, line = 0;
};

// ---- the queues between the threads ---------------------------------------------------------

// The reader fills chunks within the in-flight budget and queues them; the encoders take them
// and leave their results by sequence number; the packer takes the results in sequence order
// and gives the budget back. The first error of any thread stops all of them.
class Pipeline {
 public:
  Pipeline(size_t budget, size_t chunk_bytes, int max_chunks)
      : budget_(budget), chunk_bytes_(chunk_bytes), max_chunks_(max_chunks) {}

  // Reader: waits for room for one more chunk (at most max_chunks and the memory budget; one is
  // always allowed), then holds chunk_bytes of the budget for it.
  void acquire();
  // Reader: queues a filled chunk for the encoders.
  void push_work(Chunk c);
  // Reader: no more chunks (after the last, or after an error).
  void reader_done();

  // Encoder: the next chunk to encode; false when there is none left or the run stops.
  bool take_work(Chunk* c);
  // Encoder: the result of chunk `seq`.
  void put_result(int64_t seq, Result r);

  // Packer: waits for the result of chunk `seq`; false when the reader is done and every chunk
  // was taken. Throws PreprocessError with the first thread's error.
  bool take_result(int64_t seq, Result* r);
  // Packer: chunk packed; gives back its budget.
  void release(size_t budget);

  // Any thread: records the first error and stops the run.
  void fail(const std::string& what);
  // Stops the threads (they return at their next wait or check).
  void stop();
  bool stopped() const { return stop_; }

 private:
  const size_t budget_, chunk_bytes_;
  const int max_chunks_;
  std::mutex mu_;
  std::condition_variable cv_;          // any change below
  std::deque<Chunk> work_;              // GUARDED_BY(mu_)
  std::map<int64_t, Result> done_;      // GUARDED_BY(mu_), by chunk seq
  size_t inflight_ = 0;                 // GUARDED_BY(mu_): budget bytes of chunks not yet packed
  int inflight_chunks_ = 0;             // GUARDED_BY(mu_): chunks not yet packed
  bool reader_done_ = false;            // GUARDED_BY(mu_)
  int64_t chunks_made_ = 0;             // GUARDED_BY(mu_)
  std::string thread_error_;            // GUARDED_BY(mu_): first exception of a thread
  std::atomic<bool> stop_{false};
};

}  // namespace pp
}  // namespace xy
