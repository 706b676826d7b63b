// `xy-node preprocess`: JSONL corpora (plain, .gz, .zst) -> SentencePiece ids -> packed token
// shards + document index + manifest, multithreaded, streaming, deterministic and restartable.
//
// Pipeline: one reader thread opens the inputs one at a time, decompresses them and cuts them into
// chunks of whole lines (never spanning two files); a pool of worker threads checks and encodes
// the chunks; the calling thread takes the results in chunk order, packs the documents and writes
// the shards one at a time. The output depends only on the inputs and the settings, never on the
// thread count or timing. Open files: the input being read, the shard being written and the state
// file, whatever the number of inputs and threads. Memory: the chunks in flight are bounded by
// `memory_mb` (see PreprocessOptions). Format and semantics: docs/DATA.md.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace xy {

// Thrown for bad settings, unusable inputs, --strict problems and I/O failures; what() is the
// user-facing message (with file:line where there is one).
class PreprocessError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Kinds of bad input, each counted; the line is skipped (or, with strict, the run stops).
enum class Problem : int {
  kMalformedJson = 0,  // not parseable as JSON, or not a JSON object
  kMissingField,       // the object has no text field
  kNotString,          // the text field is not a string
  kInvalidUtf8,        // the line is not valid UTF-8
  kEmptyText,          // the text field is "" (or only whitespace)
  kLineTooLong,        // the line is longer than max_line_bytes (skipped without being buffered)
  kTruncatedFile,      // a gzip/zstd stream ends early: the lines before it are kept
  kCorruptFile,        // a gzip/zstd stream has bad data: the lines before it are kept
};
constexpr int kProblemKinds = 8;
const char* problem_name(Problem p);  // "malformed_json", "missing_field", ...

struct PreprocessOptions {
  std::vector<std::string> inputs;  // files, directories (searched recursively) or globs
  std::string output;               // output directory (created)
  std::string tokenizer;            // SentencePiece .model, or tokenizer.json (or its directory)
  std::string text_field = "text";  // JSON key holding each document's text
  std::string packing = "concat";   // "concat" or "llm-code"
  int64_t seq_len = 0;              // llm-code: the sample length groups are padded to (required)
  int64_t group_documents = 1000;   // llm-code: documents per padded group
  int threads = 0;                  // encoding threads; 0 = all cores
  int64_t shard_mb = 256;           // shard size in MiB of tokens (uint16 or uint32 ids)
  int64_t shard_tokens = 0;         // tokens per shard, exactly; 0 = from shard_mb
  int64_t memory_mb = 1024;         // bound on text + tokens in flight (RSS ~ this + tokenizer)
  int64_t max_line_bytes = 8 << 20; // longer lines are skipped as line_too_long
  // Bytes of text per unit of work (and between resume points); 0 = memory_mb / 4 / (4 *
  // (threads + 1)), clamped to [64 KiB, 1 MiB].
  int64_t chunk_bytes = 0;
  bool strict = false;              // the first bad line is an error (with file:line)
  int report_limit = 10;            // how many bad lines are reported with file:line
  // Progress on `log`: "auto" (a live line when log is stderr on a TTY, else periodic lines),
  // "tty", "lines", "none"; periodic lines every progress_every_s seconds.
  std::string progress = "auto";
  double progress_every_s = 10;
  // Test hook: stop (throw PreprocessError "stopped") once this many shards are complete and their
  // state is saved, as if killed there; 0 = never.
  int64_t stop_after_shards = 0;
};

struct PreprocessResult {
  int64_t documents = 0;
  int64_t tokens = 0;         // including BOS/EOS and llm-code padding
  int64_t padding = 0;        // llm-code EOS padding tokens
  int64_t lines = 0;
  int64_t shards = 0;
  int64_t input_bytes = 0;    // bytes of the input files (compressed)
  int64_t text_bytes = 0;     // bytes of the decompressed JSONL read
  std::array<int64_t, kProblemKinds> problems{};
  std::vector<std::string> reports;  // the first report_limit problems, "file:line: kind: detail"
  bool resumed = false;              // continued an interrupted run
  bool already_complete = false;     // the output was complete: nothing was done
  double seconds = 0;
};

// Limits of the numeric settings (far above any real use; they stop absurd values, and the
// overflows they would cause, before anything is done).
constexpr int64_t kPreprocessMaxThreads = 1024;
constexpr int64_t kPreprocessMaxSeqLen = int64_t{1} << 24;
constexpr int64_t kPreprocessMaxShardMb = int64_t{1} << 20;       // 1 TiB of ids per shard
constexpr int64_t kPreprocessMaxShardTokens = int64_t{1} << 40;
constexpr int64_t kPreprocessMaxMemoryMb = int64_t{1} << 30;
constexpr int64_t kPreprocessMaxReports = 1000000;

// The first problem with the settings of `opt` ("--flag V is out of range: ..."), or "" when
// they are usable. preprocess() throws it; the command line reports it as a usage error.
std::string check_options(const PreprocessOptions& opt);

// Expands files, directories and globs into the ordered list of input files: arguments in order;
// a directory's files (*.jsonl, *.json, with optional .gz/.zst) and a glob's matches sorted by
// name; duplicates dropped. Throws PreprocessError for a path that does not exist or matches
// nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& args);

// Runs (or resumes, or finds complete) the preprocessing of `opt` into opt.output. `log` receives
// progress and the summary. Throws PreprocessError.
PreprocessResult preprocess(const PreprocessOptions& opt, std::ostream& log);

// Open files the preprocessor needs at most besides stdin/out/err, whatever the inputs and
// threads; and a check of RLIMIT_NOFILE against it (raising the soft limit when the hard one
// allows). Returns an empty string when fine, else the message to show.
constexpr int kPreprocessMaxFiles = 16;
std::string check_open_file_limit();

// SHA-256 of a file as 64 lowercase hex digits. Throws PreprocessError.
std::string sha256_file(const std::string& path);

}  // namespace xy
