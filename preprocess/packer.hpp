// The writing side of `xy-node preprocess` (see pipeline.hpp): the calling thread packs the
// encoded documents, in chunk order, into one token stream cut into shards (with each shard's
// document index), saves the resume state after every chunk that completed a shard, and writes
// the manifest at the end. Format: io/shard_format.hpp and docs/DATA.md.
#pragma once

#include <array>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "preprocess/pipeline.hpp"

namespace xy {
namespace pp {

class Packer {
 public:
  Packer(const PreprocessOptions& opt, const Plan& plan, std::ostream& log)
      : opt_(opt), plan_(plan), log_(log) {}

  // When the output directory holds a complete output: true with its counts in *res if its
  // settings are the plan's; throws PreprocessError if they are not (or it is unreadable).
  bool read_complete(PreprocessResult* res) const;
  // Removes the temporaries of an interrupted run (its open shard is rewritten from the state).
  void remove_temporaries() const;
  // Resumes from the state file if there is one: counts, shards, the open shard's tokens, and
  // in *start where the reader continues. Throws PreprocessError if it does not fit the plan.
  bool load_state(StartPosition* start);
  // Packs one chunk's results (in chunk order). Throws PreprocessError for a bad line under
  // --strict, an I/O error, or the --stop-after-shards test hook.
  void pack(Result& r);
  // After the last chunk: pads the last llm-code group, completes the last shard, writes the
  // manifest and removes the state file.
  void finish();

  // A live progress line is on the terminal: a report clears it first.
  void set_live(bool live) { live_ = live; }

  int64_t tokens() const { return tokens_; }
  int64_t documents() const { return documents_; }
  int64_t padding() const { return padding_; }
  int64_t lines() const { return lines_; }
  int64_t text_bytes() const { return text_bytes_; }
  int64_t shards() const { return static_cast<int64_t>(shards_.size()); }
  const std::array<int64_t, kProblemKinds>& problems() const { return problems_; }
  const std::vector<std::string>& reports() const { return reports_; }
  int32_t position_file() const { return pos_file_; }
  int64_t position_line() const { return pos_line_; }
  // Input bytes (compressed) of what has been packed: the finished files and the current one's.
  int64_t raw_read() const { return pos_raw_done_ + cur_raw_; }

 private:
  struct ShardInfo {
    int64_t tokens = 0, documents = 0, first_token = 0, first_document = 0;
    uint32_t crc32 = 0;
  };
  struct FileStats {  // per input, filled as its chunks are packed
    int64_t lines = 0, documents = 0, tokens = 0;
    std::string sha256;
  };

  void save_state();
  void write_manifest();
  void emit(const int32_t* p, int64_t n);
  void finish_shard();
  void flush_shard_buffer();
  void report_problem(const Item& it, int32_t file);

  const PreprocessOptions& opt_;
  const Plan& plan_;
  std::ostream& log_;
  bool live_ = false;

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
};

}  // namespace pp
}  // namespace xy
