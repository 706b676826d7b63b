// `xy-node preprocess`: reader thread -> encoding workers -> in-order packer and shard writer
// (see preprocess.hpp; the format is in shard_format.hpp and docs/DATA.md).
#include "io/atomic_file.hpp"
#include "preprocess/preprocess.hpp"
#include "io/sha256.hpp"

#include <fcntl.h>
#include <glob.h>
#include <openssl/evp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "io/shard_format.hpp"
#include "io/threads.hpp"
#include "io/tokenizer.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

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

namespace {

std::string errno_text(int e) { return std::strerror(e); }

// ---- small utilities ------------------------------------------------------------------------

// SHA-256: io/sha256.hpp (shared with the checkpoint writer).

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
};

void write_all(int fd, const void* p, size_t n, const std::string& path) {
  try {
    write_all_fd(fd, p, n, "'" + path + "'");  // io/atomic_file.hpp: retries EINTR and short writes
  } catch (const std::exception& e) {
    throw PreprocessError(e.what());
  }
}

void fsync_dir(const std::string& dir) {
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.fd >= 0) ::fsync(d.fd);
}

// A temporary file of ours: created exclusively without following a link (a stale one, or a link
// planted at its name, is removed first: io/atomic_file.hpp), mode 0666 & ~umask (owner-only).
int open_new(const std::string& path) {
  try {
    return open_exclusive(path);
  } catch (const std::exception& e) {
    throw PreprocessError(e.what());
  }
}

// Writes `data` to path through a temporary file, fsync and rename: readers see the old file or
// the new one, never half of one.
void publish_file(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  {
    Fd f(open_new(tmp));
    write_all(f.fd, data.data(), data.size(), tmp);
    if (::fdatasync(f.fd) != 0) throw PreprocessError("cannot sync '" + tmp + "': " + errno_text(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    throw PreprocessError("cannot rename '" + tmp + "' to '" + path + "': " + errno_text(errno));
  fsync_dir(fs::path(path).parent_path().string());
}

bool read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

// Valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool valid_utf8(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

bool blank(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n' && p[i] != '\f' && p[i] != '\v')
      return false;
  return true;
}

bool has_input_extension(const std::string& name) {
  for (const char* base : {".jsonl", ".json"})
    for (const char* comp : {"", ".gz", ".zst"}) {
      const std::string ext = std::string(base) + comp;
      if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
        return true;
    }
  return false;
}

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

// ---- decompressing input ----------------------------------------------------------------------

// One input file as a stream of decompressed bytes: plain, gzip (concatenated members too) or
// zstd, told apart by their magic bytes. Hashes the raw bytes as it reads them. One fd.
class InputStream {
 public:
  enum class Status { kOk, kEof, kTruncated, kCorrupt };

  explicit InputStream(const std::string& path) : path_(path), raw_(1 << 20) {
    fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd_.fd < 0) throw PreprocessError("cannot open input '" + path + "': " + errno_text(errno));
    ::posix_fadvise(fd_.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    refill();
    const auto* b = reinterpret_cast<const unsigned char*>(raw_.data());
    if (raw_end_ >= 2 && b[0] == 0x1f && b[1] == 0x8b) kind_ = kGzip;
    else if (raw_end_ >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd) kind_ = kZstd;
    if (kind_ == kGzip) {
      std::memset(&zs_, 0, sizeof(zs_));
      if (inflateInit2(&zs_, 15 + 16) != Z_OK) throw PreprocessError("zlib: inflateInit2 failed");
      zinit_ = true;
    } else if (kind_ == kZstd) {
      zd_ = ZSTD_createDCtx();
      if (zd_ == nullptr) throw PreprocessError("zstd: cannot create a decompression context");
    }
  }
  ~InputStream() {
    if (zinit_) inflateEnd(&zs_);
    if (zd_) ZSTD_freeDCtx(zd_);
  }
  InputStream(const InputStream&) = delete;
  InputStream& operator=(const InputStream&) = delete;

  // Reads up to cap decompressed bytes into out. Returns the count (> 0), or 0 with status() set
  // to kEof, kTruncated or kCorrupt (and detail() saying why). Throws on an I/O error.
  size_t read(char* out, size_t cap) {
    if (status_ != Status::kOk) return 0;
    for (;;) {
      if (kind_ == kPlain) {
        if (raw_pos_ == raw_end_ && !refill()) {
          status_ = Status::kEof;
          return 0;
        }
        const size_t n = std::min(cap, raw_end_ - raw_pos_);
        std::memcpy(out, raw_.data() + raw_pos_, n);
        raw_pos_ += n;
        return n;
      }
      if (raw_pos_ == raw_end_ && !raw_eof_) refill();
      const bool at_end = raw_pos_ == raw_end_ && raw_eof_;
      if (kind_ == kGzip) {
        if (member_done_) {
          if (at_end) {
            status_ = Status::kEof;
            return 0;
          }
          inflateReset(&zs_);  // another gzip member follows
          member_done_ = false;
        }
        // Called at the end of the input too: inflate may still hold output.
        zs_.next_in = reinterpret_cast<Bytef*>(raw_.data() + raw_pos_);
        zs_.avail_in = static_cast<uInt>(raw_end_ - raw_pos_);
        zs_.next_out = reinterpret_cast<Bytef*>(out);
        zs_.avail_out = static_cast<uInt>(std::min<size_t>(cap, 1u << 30));
        const int rc = inflate(&zs_, Z_NO_FLUSH);
        raw_pos_ = raw_end_ - zs_.avail_in;
        const size_t n = static_cast<size_t>(reinterpret_cast<char*>(zs_.next_out) - out);
        if (rc == Z_STREAM_END) {
          member_done_ = true;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
          // Hand out what was decoded before the error; report the error on the next call.
          fail(Status::kCorrupt, std::string("gzip data error: ") + (zs_.msg ? zs_.msg : "?"));
          return n;
        }
        if (n > 0) return n;
        if (!member_done_ && at_end)
          return fail(Status::kTruncated, "the gzip stream ends in the middle of a member");
      } else {  // zstd
        ZSTD_inBuffer in{raw_.data(), raw_end_, raw_pos_};
        ZSTD_outBuffer o{out, cap, 0};
        const size_t rc = ZSTD_decompressStream(zd_, &o, &in);
        const bool progressed = in.pos > raw_pos_ || o.pos > 0;
        raw_pos_ = in.pos;
        if (ZSTD_isError(rc))
          return fail(Status::kCorrupt, std::string("zstd data error: ") + ZSTD_getErrorName(rc));
        if (progressed) frame_done_ = rc == 0;  // 0: a frame is complete and flushed
        if (o.pos > 0) return o.pos;
        if (at_end) {
          if (frame_done_) {
            status_ = Status::kEof;
            return 0;
          }
          return fail(Status::kTruncated, "the zstd stream ends in the middle of a frame");
        }
      }
    }
  }

  Status status() const { return status_; }
  const std::string& detail() const { return detail_; }
  int64_t raw_consumed() const { return raw_total_ - static_cast<int64_t>(raw_end_ - raw_pos_); }
  // The SHA-256 of the whole file: reads (and hashes) whatever has not been read yet.
  std::string finish_hash() {
    while (refill_raw_only()) {
    }
    return sha_.hex();
  }

 private:
  enum Kind { kPlain, kGzip, kZstd };

  size_t fail(Status s, std::string why) {
    status_ = s;
    detail_ = std::move(why);
    return 0;
  }
  bool refill() {
    raw_pos_ = raw_end_ = 0;
    if (raw_eof_) return false;
    for (;;) {
      const ssize_t n = ::read(fd_.fd, raw_.data(), raw_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw PreprocessError("cannot read input '" + path_ + "': " + errno_text(errno));
      }
      if (n == 0) {
        raw_eof_ = true;
        return false;
      }
      sha_.update(raw_.data(), static_cast<size_t>(n));
      raw_total_ += n;
      raw_end_ = static_cast<size_t>(n);
      return true;
    }
  }
  bool refill_raw_only() {
    raw_pos_ = raw_end_;
    return refill();
  }

  std::string path_;
  Fd fd_;
  std::vector<char> raw_;
  size_t raw_pos_ = 0, raw_end_ = 0;
  int64_t raw_total_ = 0;
  bool raw_eof_ = false;
  Kind kind_ = kPlain;
  z_stream zs_;
  bool zinit_ = false, member_done_ = false;
  ZSTD_DCtx* zd_ = nullptr;
  bool frame_done_ = false;
  Status status_ = Status::kOk;
  std::string detail_;
  Sha256 sha_;
};

// ---- chunks and results -----------------------------------------------------------------------

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

// Checks and encodes one chunk (any worker thread).
Result encode_chunk(Chunk& c, const Tokenizer& tok, const std::string& field) {
  Result r;
  r.end = std::move(c.end);
  r.items.reserve(c.lines.size());
  r.tokens.reserve(c.blob.size() / 2);
  const int32_t bos = tok.bos_id(), eos = tok.eos_id();
  for (LineRec& l : c.lines) {
    Item it;
    it.line = l.line;
    if (l.problem != kNoProblem) {
      it.problem = l.problem;
      it.detail = std::move(l.detail);
      r.items.push_back(std::move(it));
      continue;
    }
    const char* p = c.blob.data() + l.offset;
    auto fail = [&](Problem pr, std::string d) {
      it.problem = static_cast<int8_t>(pr);
      it.detail = std::move(d);
    };
    if (!valid_utf8(reinterpret_cast<const unsigned char*>(p), static_cast<size_t>(l.len))) {
      fail(Problem::kInvalidUtf8, "the line is not valid UTF-8");
    } else {
      json j = json::parse(p, p + l.len, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        // Parse again with exceptions only for the message (rare).
        try {
          const json again = json::parse(p, p + l.len);
          (void)again;
          fail(Problem::kMalformedJson, "malformed JSON");
        } catch (const json::exception& e) {
          fail(Problem::kMalformedJson, std::string("malformed JSON: ") + e.what());
        }
      } else if (!j.is_object()) {
        fail(Problem::kMalformedJson, std::string("not a JSON object but ") + j.type_name());
      } else if (auto f = j.find(field); f == j.end()) {
        fail(Problem::kMissingField, "no \"" + field + "\" field");
      } else if (!f->is_string()) {
        fail(Problem::kNotString, "\"" + field + "\" is " + f->type_name() + ", not a string");
      } else {
        const std::string& text = f->get_ref<const std::string&>();
        if (blank(text.data(), text.size())) {
          fail(Problem::kEmptyText, "\"" + field + "\" is empty");
        } else {
          const size_t before = r.tokens.size();
          if (bos >= 0) r.tokens.push_back(bos);
          const std::vector<int32_t> ids = tok.encode(text);
          r.tokens.insert(r.tokens.end(), ids.begin(), ids.end());
          if (eos >= 0) r.tokens.push_back(eos);
          it.tokens = static_cast<int64_t>(r.tokens.size() - before);
        }
      }
    }
    r.items.push_back(std::move(it));
  }
  std::string().swap(c.blob);
  return r;
}

// ---- the run ------------------------------------------------------------------------------------

struct InputInfo {
  std::string path;
  int64_t bytes = 0;
  int64_t mtime_ns = 0;
};

struct ShardInfo {
  int64_t tokens = 0, documents = 0, first_token = 0, first_document = 0;
  uint32_t crc32 = 0;
};

struct FileStats {  // per input, filled as its chunks are packed
  int64_t lines = 0, documents = 0, tokens = 0;
  std::string sha256;
};

constexpr char kStateMagic[8] = {'X', 'Y', 'P', 'P', 'S', 'T', '0', '1'};

class Run {
 public:
  Run(const PreprocessOptions& opt, std::ostream& log) : opt_(opt), log_(log) {}
  ~Run() { stop_threads(); }  // never destroy a joinable thread, whatever was thrown

  PreprocessResult go();

 private:
  void setup();
  json settings_json() const;
  bool load_state();
  void save_state();
  void write_manifest();
  void reader_main();
  void worker_main();
  void pack(Result& r);
  void emit(const int32_t* p, int64_t n);
  void finish_shard();
  void flush_shard_buffer();
  void report_problem(const Item& it, int32_t file);
  void progress(bool final);
  void stop_threads();

  const PreprocessOptions& opt_;
  std::ostream& log_;

  // Constant after setup().
  std::vector<InputInfo> inputs_;
  std::unique_ptr<Tokenizer> tok_;
  std::string tok_sha_;
  int64_t vocab_ = 0;
  int32_t bos_ = -1, eos_ = -1;
  int64_t width_ = 2;         // bytes per token on disk
  int64_t shard_tokens_ = 0;
  bool llm_code_ = false;
  int threads_ = 1;
  size_t budget_ = 0, chunk_bytes_ = 0;
  int max_chunks_ = 0;  // chunks in flight at most: 4 (threads + 1)
  int64_t total_input_bytes_ = 0;
  json settings_;
  std::string out_;

  // Start position (from the state file on resume). Read by the reader thread before it starts.
  int32_t start_file_ = 0;
  int64_t start_offset_ = 0, start_line_ = 0;

  // Threads and their queues.
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
  std::vector<std::thread> threads_v_;

  // Packer state (the calling thread only).
  int64_t tokens_ = 0, documents_ = 0, padding_ = 0, lines_ = 0, text_bytes_ = 0;
  std::array<int64_t, kProblemKinds> problems_{};
  std::vector<std::string> reports_;
  std::vector<ShardInfo> shards_;
  std::vector<FileStats> files_;
  int32_t pos_file_ = 0;
  int64_t pos_offset_ = 0, pos_line_ = 0, pos_raw_done_ = 0;  // raw bytes of finished files
  int64_t cur_raw_ = 0;
  // The open shard.
  Fd shard_fd_;
  std::string shard_tmp_;
  int64_t open_tokens_ = 0;
  std::vector<int64_t> open_docs_;
  uint32_t open_crc_ = 0;
  std::vector<char> wbuf_;
  // Tokens and document starts written since the last shard completed in the current chunk: the
  // carry saved with the state (always the whole open shard at a checkpoint).
  std::vector<int32_t> carry_;
  bool completed_in_chunk_ = false;

  // Progress.
  using Clock = std::chrono::steady_clock;
  Clock::time_point t0_, last_progress_;
  int64_t raw_at_start_ = 0, text_at_start_ = 0;
  bool tty_ = false, live_ = false;
  bool resumed_ = false;
};

}  // namespace

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

namespace {

void Run::setup() {
  if (const std::string e = check_options(opt_); !e.empty()) throw PreprocessError(e);
  llm_code_ = opt_.packing == "llm-code";
  if (const std::string m = check_open_file_limit(); !m.empty()) throw PreprocessError(m);

  threads_ = opt_.threads > 0 ? opt_.threads : std::max(1u, std::thread::hardware_concurrency());
  // Text in flight costs about 4x its size (the line bytes, the parsed JSON string, the ids).
  budget_ = static_cast<size_t>(opt_.memory_mb) * (1u << 20) / 4;  // max_line_bytes <= it (checked)
  // Enough chunks in flight to keep every worker busy while the writer waits for the oldest or
  // syncs a finished shard; by default they share the budget.
  max_chunks_ = 4 * (threads_ + 1);
  chunk_bytes_ = opt_.chunk_bytes > 0
                     ? static_cast<size_t>(opt_.chunk_bytes)
                     : std::clamp<size_t>(budget_ / static_cast<size_t>(max_chunks_), 64 << 10, 1 << 20);

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
    total_input_bytes_ += in.bytes;
    inputs_.push_back(std::move(in));
  }

  try {
    tok_ = Tokenizer::load(opt_.tokenizer);
  } catch (const TokenizerError& e) {
    throw PreprocessError(e.what());
  }
  tok_sha_ = sha256_file(opt_.tokenizer);
  vocab_ = tok_->vocab_size();
  bos_ = tok_->bos_id();
  eos_ = tok_->eos_id();
  if (llm_code_ && eos_ < 0)
    throw PreprocessError("--packing llm-code pads with EOS, but tokenizer '" + opt_.tokenizer +
                          "' has no EOS piece");
  width_ = vocab_ <= 65536 ? 2 : 4;
  shard_tokens_ = opt_.shard_tokens > 0 ? opt_.shard_tokens : (opt_.shard_mb << 20) / width_;
  out_ = opt_.output;
  settings_ = settings_json();
}

json Run::settings_json() const {
  json s;
  s["inputs"] = json::array();
  for (const auto& in : inputs_)
    s["inputs"].push_back({{"path", in.path}, {"bytes", in.bytes}, {"mtime_ns", in.mtime_ns}});
  s["tokenizer_sha256"] = tok_sha_;
  s["text_field"] = opt_.text_field;
  s["packing"] = opt_.packing;
  s["seq_len"] = llm_code_ ? opt_.seq_len : 0;
  s["group_documents"] = llm_code_ ? opt_.group_documents : 0;
  s["shard_tokens"] = shard_tokens_;
  s["token_bytes"] = width_;
  s["max_line_bytes"] = opt_.max_line_bytes;
  return s;
}

// Names the first setting that differs, for the "different settings" message.
std::string first_difference(const json& a, const json& b) {
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!b.contains(it.key()) || b[it.key()] != it.value()) return it.key();
  for (auto it = b.begin(); it != b.end(); ++it)
    if (!a.contains(it.key())) return it.key();
  return "?";
}

// The state file: magic, uint64 JSON length, JSON, int32 carry tokens, int64 carry doc starts.
void Run::save_state() {
  json s;
  s["settings"] = settings_;
  s["position"] = {{"file", pos_file_}, {"offset", pos_offset_}, {"line", pos_line_},
                   {"raw_done", pos_raw_done_}};
  s["counts"] = {{"tokens", tokens_}, {"documents", documents_}, {"padding", padding_},
                 {"lines", lines_}, {"text_bytes", text_bytes_}};
  s["problems"] = problems_;
  s["reports"] = reports_;
  s["shards"] = json::array();
  for (const auto& sh : shards_)
    s["shards"].push_back({sh.tokens, sh.documents, sh.first_token, sh.first_document, sh.crc32});
  s["files"] = json::array();
  for (const auto& f : files_) s["files"].push_back({f.lines, f.documents, f.tokens, f.sha256});
  s["carry_tokens"] = carry_.size();
  s["carry_docs"] = open_docs_.size();
  const std::string j = s.dump();
  std::string data(kStateMagic, sizeof(kStateMagic));
  const uint64_t len = j.size();
  data.append(reinterpret_cast<const char*>(&len), sizeof(len));
  data += j;
  data.append(reinterpret_cast<const char*>(carry_.data()), carry_.size() * sizeof(int32_t));
  data.append(reinterpret_cast<const char*>(open_docs_.data()), open_docs_.size() * sizeof(int64_t));
  publish_file((fs::path(out_) / shard::kState).string(), data);
}

bool Run::load_state() {
  const std::string path = (fs::path(out_) / shard::kState).string();
  std::string data;
  if (!read_file(path, &data)) return false;
  auto corrupt = [&](const std::string& why) {
    return PreprocessError("the state file '" + path + "' is unusable (" + why +
                           "); delete the output directory and start again");
  };
  if (data.size() < 16 || std::memcmp(data.data(), kStateMagic, 8) != 0) throw corrupt("bad magic");
  uint64_t len = 0;
  std::memcpy(&len, data.data() + 8, 8);
  if (len > data.size() - 16) throw corrupt("truncated");
  const json s = json::parse(data.substr(16, len), nullptr, false);
  if (s.is_discarded()) throw corrupt("bad JSON");
  if (s["settings"] != settings_)
    throw PreprocessError("'" + out_ + "' holds an interrupted run with different settings (" +
                          first_difference(settings_, s["settings"]) +
                          " differs); use another --output or delete it");
  const json& p = s["position"];
  pos_file_ = p["file"];
  pos_offset_ = p["offset"];
  pos_line_ = p["line"];
  pos_raw_done_ = p["raw_done"];
  const json& c = s["counts"];
  tokens_ = c["tokens"];
  documents_ = c["documents"];
  padding_ = c["padding"];
  lines_ = c["lines"];
  text_bytes_ = c["text_bytes"];
  problems_ = s["problems"].get<std::array<int64_t, kProblemKinds>>();
  reports_ = s["reports"].get<std::vector<std::string>>();
  for (const auto& sh : s["shards"])
    shards_.push_back({sh[0], sh[1], sh[2], sh[3], sh[4].get<uint32_t>()});
  for (const auto& f : s["files"]) files_.push_back({f[0], f[1], f[2], f[3]});
  const size_t nt = s["carry_tokens"], nd = s["carry_docs"];
  if (data.size() != 16 + len + nt * 4 + nd * 8) throw corrupt("wrong size");
  std::vector<int32_t> carry(nt);
  std::memcpy(carry.data(), data.data() + 16 + len, nt * 4);
  std::vector<int64_t> docs(nd);
  std::memcpy(docs.data(), data.data() + 16 + len + nt * 4, nd * 8);
  // Every shard the state lists must still be there as written.
  for (size_t k = 0; k < shards_.size(); ++k) {
    const std::string f = (fs::path(out_) / shard::shard_name(static_cast<int64_t>(k))).string();
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    if (ec || static_cast<int64_t>(size) != shard::file_bytes(shards_[k].tokens, shards_[k].documents, width_))
      throw corrupt("shard " + f + " is missing or has the wrong size");
  }
  // Reopen the shard in progress with the carry: the tokens of the open shard at the checkpoint.
  const int64_t carry_start = tokens_ - static_cast<int64_t>(nt);
  open_tokens_ = 0;
  open_docs_.clear();
  tokens_ = carry_start;
  emit(carry.data(), static_cast<int64_t>(nt));
  open_docs_ = docs;
  start_file_ = pos_file_;
  start_offset_ = pos_offset_;
  start_line_ = pos_line_;
  return true;
}

// Packs a token run into the open shard, completing shards as they fill.
void Run::emit(const int32_t* p, int64_t n) {
  while (n > 0) {
    if (shard_fd_.fd < 0) {
      shard_tmp_ = (fs::path(out_) / (shard::shard_name(static_cast<int64_t>(shards_.size())) + ".tmp")).string();
      shard_fd_.reset(open_new(shard_tmp_));
      const char zeros[shard::kHeaderBytes] = {0};
      write_all(shard_fd_.fd, zeros, sizeof(zeros), shard_tmp_);
      open_crc_ = static_cast<uint32_t>(crc32(0L, Z_NULL, 0));
      wbuf_.clear();
    }
    const int64_t take = std::min(n, shard_tokens_ - open_tokens_);
    const size_t at = wbuf_.size();
    wbuf_.resize(at + static_cast<size_t>(take * width_));
    char* w = wbuf_.data() + at;
    if (width_ == 2) {
      for (int64_t i = 0; i < take; ++i) {
        const uint16_t h = static_cast<uint16_t>(p[i]);
        std::memcpy(w + 2 * i, &h, 2);
      }
    } else {
      std::memcpy(w, p, static_cast<size_t>(take) * 4);
    }
    carry_.insert(carry_.end(), p, p + take);
    if (wbuf_.size() >= (1u << 20)) flush_shard_buffer();
    open_tokens_ += take;
    tokens_ += take;
    p += take;
    n -= take;
    if (open_tokens_ == shard_tokens_) finish_shard();
  }
}

void Run::flush_shard_buffer() {
  if (wbuf_.empty()) return;
  open_crc_ = static_cast<uint32_t>(crc32(open_crc_, reinterpret_cast<const Bytef*>(wbuf_.data()),
                                          static_cast<uInt>(wbuf_.size())));
  write_all(shard_fd_.fd, wbuf_.data(), wbuf_.size(), shard_tmp_);
  wbuf_.clear();
}

void Run::finish_shard() {
  if (shard_fd_.fd < 0) return;
  const int64_t pad = shard::padded(open_tokens_ * width_) - open_tokens_ * width_;
  wbuf_.insert(wbuf_.end(), static_cast<size_t>(pad), '\0');
  const char* d = reinterpret_cast<const char*>(open_docs_.data());
  wbuf_.insert(wbuf_.end(), d, d + open_docs_.size() * sizeof(int64_t));
  flush_shard_buffer();

  ShardInfo info;
  info.tokens = open_tokens_;
  info.documents = static_cast<int64_t>(open_docs_.size());
  info.first_token = tokens_ - open_tokens_;
  info.first_document = documents_ - info.documents;
  info.crc32 = open_crc_;
  shard::ShardHeader h{};
  std::memcpy(h.magic, shard::kMagic, sizeof(h.magic));
  h.version = shard::kVersion;
  h.token_bytes = static_cast<uint32_t>(width_);
  h.index = static_cast<int64_t>(shards_.size());
  h.first_token = info.first_token;
  h.tokens = info.tokens;
  h.first_document = info.first_document;
  h.documents = info.documents;
  h.crc32 = info.crc32;
  if (::pwrite(shard_fd_.fd, &h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h)))
    throw PreprocessError("cannot write '" + shard_tmp_ + "': " + errno_text(errno));
  if (::fdatasync(shard_fd_.fd) != 0)
    throw PreprocessError("cannot sync '" + shard_tmp_ + "': " + errno_text(errno));
  shard_fd_.reset();
  const std::string final_name = shard_tmp_.substr(0, shard_tmp_.size() - 4);
  if (::rename(shard_tmp_.c_str(), final_name.c_str()) != 0)
    throw PreprocessError("cannot rename '" + shard_tmp_ + "': " + errno_text(errno));
  shards_.push_back(info);
  open_tokens_ = 0;
  open_docs_.clear();
  carry_.clear();
  completed_in_chunk_ = true;
}

void Run::report_problem(const Item& it, int32_t file) {
  const Problem p = static_cast<Problem>(it.problem);
  ++problems_[static_cast<size_t>(it.problem)];
  const std::string where = inputs_[static_cast<size_t>(file)].path + ":" + std::to_string(it.line);
  const std::string msg = where + ": " + problem_name(p) + ": " + it.detail;
  if (opt_.strict)
    throw PreprocessError(msg + " (--strict stops at the first bad line)");
  if (static_cast<int>(reports_.size()) < opt_.report_limit) {
    reports_.push_back(msg);
    if (live_) log_ << "\r\033[K";
    log_ << "preprocess: skipped " << msg << std::endl;
  }
}

// Packs one chunk's results (in chunk order).
void Run::pack(Result& r) {
  const ChunkEnd& e = r.end;
  const int32_t file = e.file;
  if (files_.size() <= static_cast<size_t>(file)) files_.resize(static_cast<size_t>(file) + 1);
  FileStats& fst = files_[static_cast<size_t>(file)];
  completed_in_chunk_ = false;
  carry_.clear();
  const int32_t* t = r.tokens.data();
  for (const Item& it : r.items) {
    if (it.problem != kNoProblem) {
      report_problem(it, file);
      continue;
    }
    open_docs_.push_back(tokens_);
    ++documents_;  // before emit: a shard completed inside this document counts it as started
    emit(t, it.tokens);
    t += it.tokens;
    ++fst.documents;
    fst.tokens += it.tokens;
    if (llm_code_ && documents_ % opt_.group_documents == 0) {
      // The group is complete: pad the stream with EOS to a multiple of the sample length.
      const int64_t pad = (opt_.seq_len - tokens_ % opt_.seq_len) % opt_.seq_len;
      const std::vector<int32_t> eos(static_cast<size_t>(pad), eos_);
      emit(eos.data(), pad);
      padding_ += pad;
    }
  }
  lines_ += e.lines_read;
  fst.lines += e.lines_read;
  text_bytes_ += e.text_bytes;
  if (e.file_done) {
    fst.sha256 = e.sha256;
    pos_raw_done_ += inputs_[static_cast<size_t>(file)].bytes;
    pos_file_ = file + 1;
    pos_offset_ = pos_line_ = 0;
    cur_raw_ = 0;
  } else {
    pos_file_ = file;
    pos_offset_ = e.offset;
    pos_line_ = e.line;
    cur_raw_ = e.raw;
  }
  if (completed_in_chunk_) {
    save_state();
    if (opt_.stop_after_shards > 0 && static_cast<int64_t>(shards_.size()) >= opt_.stop_after_shards)
      throw PreprocessError("stopped after " + std::to_string(shards_.size()) + " shards (test hook)");
  }
}

void Run::reader_main() {
  try {
    int64_t seq = 0;
    std::vector<char> buf(1 << 20);
    for (int32_t f = start_file_; f < static_cast<int32_t>(inputs_.size()) && !stop_; ++f) {
      InputStream in(inputs_[static_cast<size_t>(f)].path);
      int64_t offset = 0;  // decompressed bytes consumed
      int64_t line = 0;
      // Resume: skip what the state says was consumed.
      if (f == start_file_ && start_offset_ > 0) {
        while (offset < start_offset_) {
          const size_t n = in.read(buf.data(), static_cast<size_t>(std::min<int64_t>(
                                                   static_cast<int64_t>(buf.size()), start_offset_ - offset)));
          if (n == 0)
            throw PreprocessError("input '" + inputs_[static_cast<size_t>(f)].path +
                                  "' is shorter than when the interrupted run read it");
          offset += static_cast<int64_t>(n);
        }
        line = start_line_;
      }

      Chunk c;
      bool too_long = false;      // inside a line longer than max_line_bytes
      int64_t line_start = 0;     // offset in c.blob of the line being read
      int64_t text_in_chunk = 0;  // decompressed bytes in the chunk
      auto acquire = [&]() {      // wait for room in the in-flight budget before filling a chunk
        std::unique_lock<std::mutex> lk(mu_);
        // Room: at most max_chunks_ chunks and at most the memory budget.
        cv_.wait(lk, [&] {
          return stop_ || inflight_chunks_ == 0 ||
                 (inflight_chunks_ < max_chunks_ && inflight_ + chunk_bytes_ <= budget_);
        });
        inflight_ += chunk_bytes_;
        ++inflight_chunks_;
      };
      auto ship = [&](bool file_done) {
        c.seq = seq++;
        c.end.file = f;
        c.end.offset = offset;
        c.end.line = line;
        c.end.raw = in.raw_consumed();
        c.end.text_bytes = text_in_chunk;
        c.end.file_done = file_done;
        if (file_done) c.end.sha256 = in.finish_hash();
        c.end.budget = chunk_bytes_;
        {
          std::lock_guard<std::mutex> lk(mu_);
          work_.push_back(std::move(c));
          ++chunks_made_;
        }
        cv_.notify_all();
        c = Chunk();
        line_start = 0;
        text_in_chunk = 0;
      };
      auto end_line = [&](bool dropped_cr_ok) {
        ++line;
        ++c.end.lines_read;
        if (too_long) {
          LineRec r;
          r.line = line;
          r.problem = static_cast<int8_t>(Problem::kLineTooLong);
          r.detail = "longer than --max-line-bytes " + std::to_string(opt_.max_line_bytes);
          c.lines.push_back(std::move(r));
          too_long = false;
          c.blob.resize(static_cast<size_t>(line_start));
          return;
        }
        int64_t len = static_cast<int64_t>(c.blob.size()) - line_start;
        if (dropped_cr_ok && len > 0 && c.blob.back() == '\r') --len;
        if (blank(c.blob.data() + line_start, static_cast<size_t>(len))) {
          c.blob.resize(static_cast<size_t>(line_start));
          return;
        }
        c.blob.resize(static_cast<size_t>(line_start + len));
        LineRec r;
        r.offset = line_start;
        r.len = len;
        r.line = line;
        c.lines.push_back(std::move(r));
        line_start = static_cast<int64_t>(c.blob.size());
      };

      acquire();
      for (;;) {
        if (stop_) return;
        const size_t n = in.read(buf.data(), buf.size());
        if (n == 0) break;
        const char* p = buf.data();
        const char* end = p + n;
        text_in_chunk += static_cast<int64_t>(n);
        while (p < end) {
          const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
          const char* stop_at = nl ? nl : end;
          if (!too_long) {
            c.blob.append(p, static_cast<size_t>(stop_at - p));
            if (static_cast<int64_t>(c.blob.size()) - line_start > opt_.max_line_bytes) {
              too_long = true;
              c.blob.resize(static_cast<size_t>(line_start));
            }
          }
          if (nl == nullptr) {
            offset += end - p;
            break;
          }
          offset += nl + 1 - p;
          p = nl + 1;
          end_line(true);
          if (c.blob.size() >= chunk_bytes_) {
            // The chunk ends here; the rest of the buffer goes into the next one.
            text_in_chunk -= end - p;
            ship(false);
            acquire();
            text_in_chunk += end - p;
          }
        }
      }
      // End of the file: a last line without '\n' counts, unless the stream was cut or corrupt.
      const bool partial = too_long || static_cast<int64_t>(c.blob.size()) > line_start;
      if (in.status() == InputStream::Status::kEof) {
        if (partial) end_line(false);
      } else {
        c.blob.resize(static_cast<size_t>(line_start));
        LineRec r;
        r.line = line + 1;
        r.problem = static_cast<int8_t>(in.status() == InputStream::Status::kTruncated
                                            ? Problem::kTruncatedFile
                                            : Problem::kCorruptFile);
        r.detail = in.detail() + " (" + std::to_string(offset) +
                   " bytes decompressed; the lines before it are kept)";
        c.lines.push_back(std::move(r));
      }
      ship(true);
    }
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lk(mu_);
    if (thread_error_.empty()) thread_error_ = e.what();
    stop_ = true;
  } catch (...) {  // nothing may escape a thread (std::terminate)
    std::lock_guard<std::mutex> lk(mu_);
    if (thread_error_.empty()) thread_error_ = "the reader thread failed with an unknown exception";
    stop_ = true;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    reader_done_ = true;
  }
  cv_.notify_all();
}

void Run::worker_main() {
  try {
    for (;;) {
      Chunk c;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !work_.empty() || reader_done_; });
        if (stop_ || work_.empty()) return;
        c = std::move(work_.front());
        work_.pop_front();
      }
      const int64_t seq = c.seq;
      Result r = encode_chunk(c, *tok_, opt_.text_field);
      {
        std::lock_guard<std::mutex> lk(mu_);
        done_.emplace(seq, std::move(r));
      }
      cv_.notify_all();
    }
  } catch (const std::exception& e) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (thread_error_.empty()) thread_error_ = e.what();
      stop_ = true;
    }
    cv_.notify_all();
  } catch (...) {  // nothing may escape a thread (std::terminate)
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (thread_error_.empty()) thread_error_ = "an encoding thread failed with an unknown exception";
      stop_ = true;
    }
    cv_.notify_all();
  }
}

void Run::stop_threads() {
  stop_ = true;
  cv_.notify_all();
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
  const double raw = static_cast<double>(pos_raw_done_ + cur_raw_);
  const double total = static_cast<double>(total_input_bytes_);
  const double raw_rate = el > 0 ? (raw - static_cast<double>(raw_at_start_)) / el : 0;
  const double text_rate = el > 0 ? static_cast<double>(text_bytes_ - text_at_start_) / el : 0;
  const double eta = raw_rate > 0 ? (total - raw) / raw_rate : -1;
  std::ostringstream s;
  s << "preprocess: " << human_bytes(raw) << " / " << human_bytes(total) << " read ("
    << std::fixed << std::setprecision(1) << (total > 0 ? 100 * raw / total : 100.0) << "%) | "
    << human_count(static_cast<double>(documents_)) << " docs | "
    << human_count(static_cast<double>(tokens_)) << " tokens | " << std::setprecision(1)
    << text_rate / 1e6 << " MB/s of text | " << (final ? "done in " + human_duration(el) : "ETA " + human_duration(eta));
  if (live_) {
    log_ << "\r\033[K" << s.str();
    if (final) log_ << "\n";
    log_ << std::flush;
  } else {
    log_ << s.str() << std::endl;
  }
}

void Run::write_manifest() {
  json m;
  m["format"] = "xy-shards";
  m["version"] = shard::kVersion;
  m["tokenizer"] = {{"path", opt_.tokenizer}, {"sha256", tok_sha_}, {"vocab", vocab_},
                    {"bos_id", bos_}, {"eos_id", eos_}};
  m["packing"] = opt_.packing;
  m["seq_len"] = llm_code_ ? opt_.seq_len : 0;
  m["group_documents"] = llm_code_ ? opt_.group_documents : 0;
  m["text_field"] = opt_.text_field;
  m["token_bytes"] = width_;
  m["shard_tokens"] = shard_tokens_;
  m["counts"] = {{"documents", documents_}, {"tokens", tokens_}, {"padding", padding_},
                 {"lines", lines_}, {"text_bytes", text_bytes_}};
  json skipped = json::object();
  int64_t total_skipped = 0;
  for (int k = 0; k < kProblemKinds; ++k) {
    skipped[problem_name(static_cast<Problem>(k))] = problems_[static_cast<size_t>(k)];
    total_skipped += problems_[static_cast<size_t>(k)];
  }
  m["counts"]["skipped"] = total_skipped;
  m["skipped"] = skipped;
  m["reports"] = reports_;
  m["inputs"] = json::array();
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const FileStats& f = files_[i];
    m["inputs"].push_back({{"path", inputs_[i].path}, {"bytes", inputs_[i].bytes},
                           {"sha256", f.sha256}, {"lines", f.lines}, {"documents", f.documents},
                           {"tokens", f.tokens}});
  }
  m["shards"] = json::array();
  for (size_t k = 0; k < shards_.size(); ++k) {
    const ShardInfo& s = shards_[k];
    char crc[16];
    std::snprintf(crc, sizeof(crc), "%08x", s.crc32);
    m["shards"].push_back({{"file", shard::shard_name(static_cast<int64_t>(k))}, {"tokens", s.tokens},
                           {"documents", s.documents}, {"first_token", s.first_token},
                           {"first_document", s.first_document}, {"crc32", crc}});
  }
  m["settings"] = settings_;
  publish_file((fs::path(out_) / shard::kManifest).string(), m.dump(1) + "\n");
}

PreprocessResult Run::go() {
  t0_ = last_progress_ = Clock::now();
  setup();
  fs::create_directories(out_);
  tty_ = ::isatty(2) == 1 && &log_ == &std::cerr;
  live_ = opt_.progress == "tty" || (opt_.progress == "auto" && tty_);

  PreprocessResult res;
  // Complete already?
  std::string mtext;
  if (read_file((fs::path(out_) / shard::kManifest).string(), &mtext)) {
    const json m = json::parse(mtext, nullptr, false);
    if (!m.is_discarded() && m.contains("settings") && m["settings"] == settings_) {
      res.already_complete = true;
      res.documents = m["counts"]["documents"];
      res.tokens = m["counts"]["tokens"];
      res.padding = m["counts"]["padding"];
      res.lines = m["counts"]["lines"];
      res.text_bytes = m["counts"]["text_bytes"];
      res.shards = static_cast<int64_t>(m["shards"].size());
      res.input_bytes = total_input_bytes_;
      for (int k = 0; k < kProblemKinds; ++k)
        res.problems[static_cast<size_t>(k)] = m["skipped"][problem_name(static_cast<Problem>(k))];
      res.reports = m["reports"].get<std::vector<std::string>>();
      log_ << "preprocess: '" << out_ << "' is already complete (" << res.shards << " shards, "
           << res.tokens << " tokens); nothing to do" << std::endl;
      return res;
    }
    std::string why = m.is_discarded() || !m.contains("settings")
                          ? std::string("an unreadable manifest")
                          : first_difference(settings_, m["settings"]) + " differs";
    throw PreprocessError("'" + out_ + "' holds the output of a run with different settings (" +
                          why + "); use another --output or delete it");
  }
  // Leftovers of an interrupted shard are rewritten; remove them.
  for (const auto& e : fs::directory_iterator(out_)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) fs::remove(e.path());
  }
  resumed_ = load_state();
  if (resumed_)
    log_ << "preprocess: resuming '" << out_ << "' after shard " << shards_.size() << " (input "
         << pos_file_ << "/" << inputs_.size() << ", line " << pos_line_ << ")" << std::endl;
  raw_at_start_ = pos_raw_done_;
  text_at_start_ = text_bytes_;
  log_ << "preprocess: " << inputs_.size() << " inputs (" << human_bytes(static_cast<double>(total_input_bytes_))
       << "), " << threads_ << " threads, tokenizer vocab " << vocab_ << " (uint" << width_ * 8
       << " ids), " << opt_.packing << " packing, " << shard_tokens_ << " tokens per shard"
       << std::endl;

  try {
    // A refused thread (ulimit) is a ThreadStartError; the catch below stops and joins the ones
    // already started (a joinable std::thread destroyed would end the process in std::terminate).
    threads_v_.reserve(static_cast<size_t>(threads_) + 1);
    threads_v_.push_back(start_thread("the preprocess reader thread", [this] { reader_main(); }));
    for (int i = 0; i < threads_; ++i)
      threads_v_.push_back(start_thread("preprocess encoding thread " + std::to_string(i + 1) + " of " +
                                            std::to_string(threads_) + " (--threads)",
                                        [this] { worker_main(); }));
    for (int64_t next = 0;; ++next) {
      Result r;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] {
          return !thread_error_.empty() || done_.count(next) != 0 || (reader_done_ && next >= chunks_made_);
        });
        if (!thread_error_.empty()) throw PreprocessError(thread_error_);
        auto it = done_.find(next);
        if (it == done_.end()) break;  // the reader is done and every chunk is packed
        r = std::move(it->second);
        done_.erase(it);
      }
      const size_t budget = r.end.budget;
      pack(r);
      {
        std::lock_guard<std::mutex> lk(mu_);
        inflight_ -= budget;
        --inflight_chunks_;
      }
      cv_.notify_all();
      progress(false);
    }
  } catch (...) {
    stop_threads();
    throw;
  }
  stop_threads();

  if (llm_code_) {  // pad the last group too
    const int64_t pad = (opt_.seq_len - tokens_ % opt_.seq_len) % opt_.seq_len;
    const std::vector<int32_t> eos(static_cast<size_t>(pad), eos_);
    emit(eos.data(), pad);
    padding_ += pad;
  }
  if (open_tokens_ > 0) finish_shard();
  if (files_.size() < inputs_.size()) files_.resize(inputs_.size());
  write_manifest();
  // Shards of an earlier, longer attempt cannot exist (the settings match), but be tidy.
  for (int64_t k = static_cast<int64_t>(shards_.size());; ++k) {
    const fs::path f = fs::path(out_) / shard::shard_name(k);
    if (!fs::exists(f)) break;
    fs::remove(f);
  }
  fs::remove(fs::path(out_) / shard::kState);
  pos_raw_done_ = total_input_bytes_;
  cur_raw_ = 0;
  progress(true);

  res.documents = documents_;
  res.tokens = tokens_;
  res.padding = padding_;
  res.lines = lines_;
  res.shards = static_cast<int64_t>(shards_.size());
  res.input_bytes = total_input_bytes_;
  res.text_bytes = text_bytes_;
  res.problems = problems_;
  res.reports = reports_;
  res.resumed = resumed_;
  res.seconds = std::chrono::duration<double>(Clock::now() - t0_).count();
  return res;
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& p) {
    if (seen.insert(p).second) out.push_back(p);
  };
  for (const std::string& a : args) {
    if (a.find_first_of("*?[") != std::string::npos && !fs::exists(a)) {
      glob_t g{};
      const int rc = ::glob(a.c_str(), GLOB_ERR, nullptr, &g);
      if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        globfree(&g);
        throw PreprocessError("input pattern '" + a + "' matches no file");
      }
      if (rc != 0) {
        globfree(&g);
        throw PreprocessError("cannot expand input pattern '" + a + "'");
      }
      std::vector<std::string> matches;
      for (size_t i = 0; i < g.gl_pathc; ++i)
        if (fs::is_regular_file(g.gl_pathv[i])) matches.push_back(g.gl_pathv[i]);
      globfree(&g);
      std::sort(matches.begin(), matches.end());
      for (const auto& m : matches) add(m);
    } else if (fs::is_directory(a)) {
      std::vector<std::string> files;
      for (const auto& e : fs::recursive_directory_iterator(a))
        if (e.is_regular_file() && has_input_extension(e.path().filename().string()))
          files.push_back(e.path().string());
      if (files.empty())
        throw PreprocessError("input directory '" + a +
                              "' holds no *.jsonl / *.json file (optionally .gz or .zst)");
      std::sort(files.begin(), files.end());
      for (const auto& f : files) add(f);
    } else if (fs::exists(a)) {
      add(a);
    } else {
      throw PreprocessError("input '" + a + "' does not exist");
    }
  }
  if (out.empty()) throw PreprocessError("no inputs given");
  return out;
}

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

std::string sha256_file(const std::string& path) {
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw PreprocessError("cannot open '" + path + "': " + errno_text(errno));
  Sha256 sha;
  std::vector<char> buf(1 << 20);
  for (;;) {
    const ssize_t n = ::read(f.fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw PreprocessError("cannot read '" + path + "': " + errno_text(errno));
    }
    if (n == 0) break;
    sha.update(buf.data(), static_cast<size_t>(n));
  }
  return sha.hex();
}

PreprocessResult preprocess(const PreprocessOptions& opt, std::ostream& log) {
  Run run(opt, log);
  return run.go();
}

}  // namespace xy
