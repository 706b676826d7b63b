// JSONL corpus reading (plain or gzip), tokenization into one stream, and the flat token cache.
#include "io/atomic_file.hpp"
#include "io/corpus.hpp"

#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

#include "io/tokenizer.hpp"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token files are written in host byte order, which xy assumes to be little-endian"
#endif

namespace xy {
namespace {

// Reads '\n'-terminated lines from a plain or gzip file (zlib reads both, and concatenated gzip
// members as one stream). A trailing '\r' is dropped; the last line needs no '\n'.
class LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path) {
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr)
      throw std::runtime_error("cannot open corpus file '" + path + "': " +
                               (errno ? std::strerror(errno) : "out of memory"));
    gzbuffer(file_, 1 << 20);
    buf_.resize(1 << 20);
  }
  ~LineReader() {
    if (file_ != nullptr) gzclose(file_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Returns false at the end of the file; throws std::runtime_error on a read error or a gzip
  // stream that ends early.
  bool next(std::string* line) {
    line->clear();
    for (;;) {
      if (pos_ == end_) {
        if (eof_) {
          if (line->empty()) return false;
          break;  // the last line, without '\n'
        }
        fill();
        continue;
      }
      const char* start = buf_.data() + pos_;
      const void* nl = std::memchr(start, '\n', end_ - pos_);
      if (nl == nullptr) {
        line->append(start, end_ - pos_);
        pos_ = end_;
        continue;
      }
      const size_t n = static_cast<const char*>(nl) - start;
      line->append(start, n);
      pos_ += n + 1;
      break;
    }
    if (!line->empty() && line->back() == '\r') line->pop_back();
    return true;
  }

 private:
  void fill() {
    const int n = gzread(file_, buf_.data(), static_cast<unsigned>(buf_.size()));
    int code = Z_OK;
    const char* msg = gzerror(file_, &code);
    if (n < 0 || (code != Z_OK && code != Z_BUF_ERROR))
      throw std::runtime_error("cannot read corpus file '" + path_ + "': " +
                               (code == Z_ERRNO ? std::strerror(errno) : msg));
    if (n == 0) {
      // zlib reports a gzip stream cut short as Z_BUF_ERROR at the end, not as a failed read.
      if (code == Z_BUF_ERROR)
        throw std::runtime_error("corpus file '" + path_ + "' is truncated: " + msg);
      eof_ = true;
    }
    pos_ = 0;
    end_ = static_cast<size_t>(n);
  }

  std::string path_;
  gzFile file_ = nullptr;
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
};

bool is_blank(const std::string& s) {
  return s.find_first_not_of(" \t\r\f\v") == std::string::npos;
}

constexpr char kTokenMagic[8] = {'X', 'Y', 'T', 'O', 'K', '1', '\0', '\0'};
constexpr size_t kTokenHeaderBytes = sizeof(kTokenMagic) + 2 * sizeof(int64_t);

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace

void for_each_document(const std::vector<std::string>& files, const std::string& text_field,
                       const std::function<void(const std::string&)>& fn, CorpusStats* stats) {
  CorpusStats local;
  CorpusStats& st = stats ? *stats : local;
  std::string line;
  std::string text;
  for (const std::string& path : files) {
    LineReader reader(path);
    int64_t line_no = 0;
    while (reader.next(&line)) {
      ++line_no;
      ++st.lines;
      if (is_blank(line)) continue;  // counted as a line, neither a document nor a problem

      std::string problem;
      try {
        const nlohmann::json j = nlohmann::json::parse(line);
        if (!j.is_object()) {
          problem = std::string("not a JSON object but ") + j.type_name();
        } else if (auto it = j.find(text_field); it == j.end()) {
          problem = "no \"" + text_field + "\" field";
        } else if (!it->is_string()) {
          problem = "\"" + text_field + "\" is " + it->type_name() + ", not a string";
        } else {
          text = it->get_ref<const std::string&>();
          if (text.empty()) problem = "empty \"" + text_field + "\"";
        }
      } catch (const nlohmann::json::exception& e) {
        problem = std::string("malformed JSON: ") + e.what();
      }

      if (!problem.empty()) {
        ++st.skipped;
        if (st.first_problem.empty())
          st.first_problem = path + ":" + std::to_string(line_no) + ": " + problem;
        continue;
      }
      ++st.documents;
      fn(text);
    }
  }
}

std::vector<int32_t> tokenize_corpus(const std::vector<std::string>& files,
                                     const std::string& text_field, const Tokenizer& tok,
                                     CorpusStats* stats) {
  CorpusStats local;
  CorpusStats& st = stats ? *stats : local;
  const int32_t bos = tok.bos_id();
  const int32_t eos = tok.eos_id();
  std::vector<int32_t> out;
  for_each_document(files, text_field, [&](const std::string& text) {
    const size_t before = out.size();
    if (bos >= 0) out.push_back(bos);
    const std::vector<int32_t> ids = tok.encode(text);
    out.insert(out.end(), ids.begin(), ids.end());
    if (eos >= 0) out.push_back(eos);
    st.tokens += static_cast<int64_t>(out.size() - before);
  }, &st);
  return out;
}

void write_token_file(const std::string& path, const std::vector<int32_t>& ids, int64_t vocab) {
  if (vocab <= 0 || vocab > (int64_t{1} << 31))
    throw std::runtime_error("token file '" + path + "': vocab " + std::to_string(vocab) +
                             " is not in [1, 2^31]");
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      throw std::runtime_error("token file '" + path + "': id " + std::to_string(ids[i]) +
                               " at position " + std::to_string(i) + " is outside [0, " +
                               std::to_string(vocab) + ")");

  // Write a unique temporary file and rename it over `path`: readers (other ranks) never see a
  // half-written cache, and concurrent writers of the same cache do not interleave.
  std::random_device rd;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd());
  {
    File f(::fdopen(open_exclusive(tmp), "wb"));  // exclusive, no link followed
    if (!f) throw std::runtime_error("cannot create token file '" + tmp + "': " + std::strerror(errno));
    const int64_t count = static_cast<int64_t>(ids.size());
    bool ok = std::fwrite(kTokenMagic, sizeof(kTokenMagic), 1, f.get()) == 1 &&
              std::fwrite(&vocab, sizeof(vocab), 1, f.get()) == 1 &&
              std::fwrite(&count, sizeof(count), 1, f.get()) == 1 &&
              (ids.empty() || std::fwrite(ids.data(), sizeof(int32_t), ids.size(), f.get()) == ids.size());
    ok = ok && std::fflush(f.get()) == 0;
    const int write_errno = errno;
    ok = (std::fclose(f.release()) == 0) && ok;
    if (!ok) {
      std::remove(tmp.c_str());
      throw std::runtime_error("cannot write token file '" + tmp + "': " + std::strerror(write_errno));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename '" + tmp + "' to token file '" + path + "': " + std::strerror(e));
  }
}

std::vector<int32_t> read_token_file(const std::string& path, int64_t* vocab) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) throw std::runtime_error("cannot open token file '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(::fileno(f.get()), &st) != 0)
    throw std::runtime_error("cannot stat token file '" + path + "': " + std::strerror(errno));
  const int64_t file_bytes = static_cast<int64_t>(st.st_size);

  char magic[sizeof(kTokenMagic)];
  int64_t file_vocab = 0, count = 0;
  if (file_bytes < static_cast<int64_t>(kTokenHeaderBytes) ||
      std::fread(magic, sizeof(magic), 1, f.get()) != 1 ||
      std::fread(&file_vocab, sizeof(file_vocab), 1, f.get()) != 1 ||
      std::fread(&count, sizeof(count), 1, f.get()) != 1)
    throw std::runtime_error("token file '" + path + "' is truncated: " + std::to_string(file_bytes) +
                             " bytes, shorter than its " + std::to_string(kTokenHeaderBytes) +
                             "-byte header");
  if (std::memcmp(magic, kTokenMagic, sizeof(magic)) != 0)
    throw std::runtime_error("'" + path + "' is not an xy token file (magic is not XYTOK1)");
  if (file_vocab <= 0 || count < 0)
    throw std::runtime_error("token file '" + path + "' has a corrupt header: vocab " +
                             std::to_string(file_vocab) + ", count " + std::to_string(count));
  const int64_t expected = static_cast<int64_t>(kTokenHeaderBytes) +
                           count * static_cast<int64_t>(sizeof(uint32_t));
  if (count > (file_bytes / static_cast<int64_t>(sizeof(uint32_t))) || expected != file_bytes)
    throw std::runtime_error("token file '" + path + "' is " +
                             (file_bytes < expected ? "truncated" : "longer than its header says") +
                             ": the header says " + std::to_string(count) + " tokens (" +
                             std::to_string(expected) + " bytes), the file has " +
                             std::to_string(file_bytes) + " bytes");

  std::vector<int32_t> ids(static_cast<size_t>(count));
  if (count > 0 && std::fread(ids.data(), sizeof(uint32_t), ids.size(), f.get()) != ids.size())
    throw std::runtime_error("cannot read token file '" + path + "': " +
                             (std::ferror(f.get()) ? std::strerror(errno) : "unexpected end of file"));
  for (size_t i = 0; i < ids.size(); ++i)
    if (static_cast<uint32_t>(ids[i]) >= static_cast<uint64_t>(file_vocab))
      throw std::runtime_error("token file '" + path + "' is corrupt: id " +
                               std::to_string(static_cast<uint32_t>(ids[i])) + " at position " +
                               std::to_string(i) + " is not below its vocab " +
                               std::to_string(file_vocab));
  if (vocab) *vocab = file_vocab;
  return ids;
}

}  // namespace xy
