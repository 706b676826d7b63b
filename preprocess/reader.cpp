// `xy-node preprocess`, the reader (see reader.hpp): one thread that opens the inputs one at a
// time, decompresses them and cuts them into chunks of whole lines; and finding the inputs.
#include "preprocess/reader.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "io/sha256.hpp"

namespace fs = std::filesystem;

namespace xy {
namespace pp {

bool read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

namespace {

bool has_input_extension(const std::string& name) {
  for (const char* base : {".jsonl", ".json"})
    for (const char* comp : {"", ".gz", ".zst"}) {
      const std::string ext = std::string(base) + comp;
      if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
        return true;
    }
  return false;
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

}  // namespace

void read_inputs(const Plan& plan, const StartPosition& start, int64_t max_line_bytes, Pipeline& pipe) {
  int64_t seq = 0;
  std::vector<char> buf(1 << 20);
  for (int32_t f = start.file; f < static_cast<int32_t>(plan.inputs.size()) && !pipe.stopped(); ++f) {
    InputStream in(plan.inputs[static_cast<size_t>(f)].path);
    int64_t offset = 0;  // decompressed bytes consumed
    int64_t line = 0;
    // Resume: skip what the state says was consumed.
    if (f == start.file && start.offset > 0) {
      while (offset < start.offset) {
        const size_t n = in.read(buf.data(), static_cast<size_t>(std::min<int64_t>(
                                                 static_cast<int64_t>(buf.size()), start.offset - offset)));
        if (n == 0)
          throw PreprocessError("input '" + plan.inputs[static_cast<size_t>(f)].path +
                                "' is shorter than when the interrupted run read it");
        offset += static_cast<int64_t>(n);
      }
      line = start.line;
    }

    Chunk c;
    bool too_long = false;      // inside a line longer than max_line_bytes
    int64_t line_start = 0;     // offset in c.blob of the line being read
    int64_t text_in_chunk = 0;  // decompressed bytes in the chunk
    auto ship = [&](bool file_done) {
      c.seq = seq++;
      c.end.file = f;
      c.end.offset = offset;
      c.end.line = line;
      c.end.raw = in.raw_consumed();
      c.end.text_bytes = text_in_chunk;
      c.end.file_done = file_done;
      if (file_done) c.end.sha256 = in.finish_hash();
      c.end.budget = plan.chunk_bytes;
      pipe.push_work(std::move(c));
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
        r.detail = "longer than --max-line-bytes " + std::to_string(max_line_bytes);
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

    pipe.acquire();
    for (;;) {
      if (pipe.stopped()) return;
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
          if (static_cast<int64_t>(c.blob.size()) - line_start > max_line_bytes) {
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
        if (c.blob.size() >= plan.chunk_bytes) {
          // The chunk ends here; the rest of the buffer goes into the next one.
          text_in_chunk -= end - p;
          ship(false);
          pipe.acquire();
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
}

}  // namespace pp

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
        if (e.is_regular_file() && pp::has_input_extension(e.path().filename().string()))
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

std::string sha256_file(const std::string& path) {
  pp::Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw PreprocessError("cannot open '" + path + "': " + pp::errno_text(errno));
  Sha256 sha;
  std::vector<char> buf(1 << 20);
  for (;;) {
    const ssize_t n = ::read(f.fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw PreprocessError("cannot read '" + path + "': " + pp::errno_text(errno));
    }
    if (n == 0) break;
    sha.update(buf.data(), static_cast<size_t>(n));
  }
  return sha.hex();
}

}  // namespace xy
