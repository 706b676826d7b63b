// `xy-node preprocess`, the packer (see packer.hpp): shards, the resume state and the manifest.
// Every file is published through io/atomic_file.hpp (temporary, fsync, rename, fsync of the
// directory), so that a kill at any point leaves complete files or none.
#include "preprocess/packer.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "io/atomic_file.hpp"
#include "io/shard_format.hpp"
#include "preprocess/reader.hpp"

namespace fs = std::filesystem;

namespace xy {
namespace pp {

namespace {

constexpr char kStateMagic[8] = {'X', 'Y', 'P', 'P', 'S', 'T', '0', '1'};

// io/atomic_file.hpp's functions, with their errors as PreprocessError.
int open_new(const std::string& path) {
  return as_preprocess_error([&] { return open_exclusive(path); });
}
void write_all(int fd, const void* p, size_t n, const std::string& path) {
  as_preprocess_error([&] { write_all_fd(fd, p, n, "'" + path + "'"); });
}
void publish(const std::string& path, const std::string& data) {
  as_preprocess_error([&] { write_file_atomic(path, data); });
}

// Names the first setting that differs, for the "different settings" message.
std::string first_difference(const json& a, const json& b) {
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!b.contains(it.key()) || b[it.key()] != it.value()) return it.key();
  for (auto it = b.begin(); it != b.end(); ++it)
    if (!a.contains(it.key())) return it.key();
  return "?";
}

}  // namespace

bool Packer::read_complete(PreprocessResult* res) const {
  std::string mtext;
  if (!read_file((fs::path(plan_.out) / shard::kManifest).string(), &mtext)) return false;
  const json m = json::parse(mtext, nullptr, false);
  if (!m.is_discarded() && m.contains("settings") && m["settings"] == plan_.settings) {
    res->already_complete = true;
    res->documents = m["counts"]["documents"];
    res->tokens = m["counts"]["tokens"];
    res->padding = m["counts"]["padding"];
    res->lines = m["counts"]["lines"];
    res->text_bytes = m["counts"]["text_bytes"];
    res->shards = static_cast<int64_t>(m["shards"].size());
    res->input_bytes = plan_.total_input_bytes;
    for (int k = 0; k < kProblemKinds; ++k)
      res->problems[static_cast<size_t>(k)] = m["skipped"][problem_name(static_cast<Problem>(k))];
    res->reports = m["reports"].get<std::vector<std::string>>();
    return true;
  }
  std::string why = m.is_discarded() || !m.contains("settings")
                        ? std::string("an unreadable manifest")
                        : first_difference(plan_.settings, m["settings"]) + " differs";
  throw PreprocessError("'" + plan_.out + "' holds the output of a run with different settings (" +
                        why + "); use another --output or delete it");
}

void Packer::remove_temporaries() const {
  // Leftovers of an interrupted shard are rewritten; remove them.
  for (const auto& e : fs::directory_iterator(plan_.out)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) fs::remove(e.path());
  }
}

// The state file: magic, uint64 JSON length, JSON, int32 carry tokens, int64 carry doc starts.
void Packer::save_state() {
  json s;
  s["settings"] = plan_.settings;
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
  publish((fs::path(plan_.out) / shard::kState).string(), data);
}

bool Packer::load_state(StartPosition* start) {
  const std::string path = (fs::path(plan_.out) / shard::kState).string();
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
  if (s["settings"] != plan_.settings)
    throw PreprocessError("'" + plan_.out + "' holds an interrupted run with different settings (" +
                          first_difference(plan_.settings, s["settings"]) +
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
    const std::string f = (fs::path(plan_.out) / shard::shard_name(static_cast<int64_t>(k))).string();
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    if (ec || static_cast<int64_t>(size) != shard::file_bytes(shards_[k].tokens, shards_[k].documents, plan_.width))
      throw corrupt("shard " + f + " is missing or has the wrong size");
  }
  // Reopen the shard in progress with the carry: the tokens of the open shard at the checkpoint.
  const int64_t carry_start = tokens_ - static_cast<int64_t>(nt);
  open_tokens_ = 0;
  open_docs_.clear();
  tokens_ = carry_start;
  emit(carry.data(), static_cast<int64_t>(nt));
  open_docs_ = docs;
  start->file = pos_file_;
  start->offset = pos_offset_;
  start->line = pos_line_;
  return true;
}

// Packs a token run into the open shard, completing shards as they fill.
void Packer::emit(const int32_t* p, int64_t n) {
  while (n > 0) {
    if (shard_fd_.fd < 0) {
      shard_tmp_ = (fs::path(plan_.out) / (shard::shard_name(static_cast<int64_t>(shards_.size())) + ".tmp")).string();
      shard_fd_.reset(open_new(shard_tmp_));
      const char zeros[shard::kHeaderBytes] = {0};
      write_all(shard_fd_.fd, zeros, sizeof(zeros), shard_tmp_);
      open_crc_ = static_cast<uint32_t>(crc32(0L, Z_NULL, 0));
      wbuf_.clear();
    }
    const int64_t take = std::min(n, plan_.shard_tokens - open_tokens_);
    const size_t at = wbuf_.size();
    wbuf_.resize(at + static_cast<size_t>(take * plan_.width));
    char* w = wbuf_.data() + at;
    if (plan_.width == 2) {
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
    if (open_tokens_ == plan_.shard_tokens) finish_shard();
  }
}

void Packer::flush_shard_buffer() {
  if (wbuf_.empty()) return;
  open_crc_ = static_cast<uint32_t>(crc32(open_crc_, reinterpret_cast<const Bytef*>(wbuf_.data()),
                                          static_cast<uInt>(wbuf_.size())));
  write_all(shard_fd_.fd, wbuf_.data(), wbuf_.size(), shard_tmp_);
  wbuf_.clear();
}

void Packer::finish_shard() {
  if (shard_fd_.fd < 0) return;
  const int64_t pad = shard::padded(open_tokens_ * plan_.width) - open_tokens_ * plan_.width;
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
  h.token_bytes = static_cast<uint32_t>(plan_.width);
  h.index = static_cast<int64_t>(shards_.size());
  h.first_token = info.first_token;
  h.tokens = info.tokens;
  h.first_document = info.first_document;
  h.documents = info.documents;
  h.crc32 = info.crc32;
  if (::pwrite(shard_fd_.fd, &h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h)))
    throw PreprocessError("cannot write '" + shard_tmp_ + "': " + errno_text(errno));
  // fsync, rename into place, fsync of the directory: the one sequence of io/atomic_file.hpp.
  const std::string final_name = shard_tmp_.substr(0, shard_tmp_.size() - 4);
  as_preprocess_error([&] { publish_file_atomic(shard_fd_.release(), shard_tmp_, final_name); });
  shards_.push_back(info);
  open_tokens_ = 0;
  open_docs_.clear();
  carry_.clear();
  completed_in_chunk_ = true;
}

void Packer::report_problem(const Item& it, int32_t file) {
  const Problem p = static_cast<Problem>(it.problem);
  ++problems_[static_cast<size_t>(it.problem)];
  const std::string where = plan_.inputs[static_cast<size_t>(file)].path + ":" + std::to_string(it.line);
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
void Packer::pack(Result& r) {
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
    if (plan_.llm_code && documents_ % opt_.group_documents == 0) {
      // The group is complete: pad the stream with EOS to a multiple of the sample length.
      const int64_t pad = (opt_.seq_len - tokens_ % opt_.seq_len) % opt_.seq_len;
      const std::vector<int32_t> eos(static_cast<size_t>(pad), plan_.eos);
      emit(eos.data(), pad);
      padding_ += pad;
    }
  }
  lines_ += e.lines_read;
  fst.lines += e.lines_read;
  text_bytes_ += e.text_bytes;
  if (e.file_done) {
    fst.sha256 = e.sha256;
    pos_raw_done_ += plan_.inputs[static_cast<size_t>(file)].bytes;
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

void Packer::write_manifest() {
  json m;
  m["format"] = "xy-shards";
  m["version"] = shard::kVersion;
  m["tokenizer"] = {{"path", opt_.tokenizer}, {"sha256", plan_.tok_sha}, {"vocab", plan_.vocab},
                    {"bos_id", plan_.bos}, {"eos_id", plan_.eos}};
  m["packing"] = opt_.packing;
  m["seq_len"] = plan_.llm_code ? opt_.seq_len : 0;
  m["group_documents"] = plan_.llm_code ? opt_.group_documents : 0;
  m["text_field"] = opt_.text_field;
  m["token_bytes"] = plan_.width;
  m["shard_tokens"] = plan_.shard_tokens;
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
  for (size_t i = 0; i < plan_.inputs.size(); ++i) {
    const FileStats& f = files_[i];
    m["inputs"].push_back({{"path", plan_.inputs[i].path}, {"bytes", plan_.inputs[i].bytes},
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
  m["settings"] = plan_.settings;
  publish((fs::path(plan_.out) / shard::kManifest).string(), m.dump(1) + "\n");
}

void Packer::finish() {
  if (plan_.llm_code) {  // pad the last group too
    const int64_t pad = (opt_.seq_len - tokens_ % opt_.seq_len) % opt_.seq_len;
    const std::vector<int32_t> eos(static_cast<size_t>(pad), plan_.eos);
    emit(eos.data(), pad);
    padding_ += pad;
  }
  if (open_tokens_ > 0) finish_shard();
  if (files_.size() < plan_.inputs.size()) files_.resize(plan_.inputs.size());
  write_manifest();
  // Shards of an earlier, longer attempt cannot exist (the settings match), but be tidy.
  for (int64_t k = static_cast<int64_t>(shards_.size());; ++k) {
    const fs::path f = fs::path(plan_.out) / shard::shard_name(k);
    if (!fs::exists(f)) break;
    fs::remove(f);
  }
  fs::remove(fs::path(plan_.out) / shard::kState);
  pos_raw_done_ = plan_.total_input_bytes;
  cur_raw_ = 0;
}

}  // namespace pp
}  // namespace xy
