// TensorBoard event files by hand: TFRecord framing and the few protobuf fields TensorBoard's
// scalars need (the format is in health/tensorboard.hpp).
#include "health/tensorboard.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "io/atomic_file.hpp"

namespace xy {
namespace {

// The byte-at-a-time table of the reflected Castagnoli polynomial 0x82f63b78.
struct Crc32cTable {
  uint32_t t[256];
  Crc32cTable() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
  }
};

// Protobuf wire format: a key is (field << 3) | wire type; 0 varint, 1 fixed64, 2 length-delimited,
// 5 fixed32. Numbers are little-endian (this is x86/ARM: the host order, checked below).
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void key(std::string& out, int field, int wire) { varint(out, (static_cast<uint64_t>(field) << 3) | wire); }
template <typename T>
void fixed(std::string& out, T v) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "fixed32 or fixed64");
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void bytes_field(std::string& out, int field, const std::string& s) {
  key(out, field, 2);
  varint(out, s.size());
  out += s;
}

// The Event's header fields: wall_time (1) and step (2).
std::string event_head(double wall_time, int64_t step) {
  std::string e;
  key(e, 1, 1);
  fixed(e, wall_time);
  if (step != 0) {  // proto3: a zero is not written
    key(e, 2, 0);
    varint(e, static_cast<uint64_t>(step));
  }
  return e;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  std::string h = buf;
  for (char& c : h)
    if (c == '/') c = '_';
  return h;
}

}  // namespace

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the encoders write the host's byte order");

uint32_t TensorBoardWriter::crc32c(const void* data, size_t n) {
  static const Crc32cTable table;
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table.t[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t TensorBoardWriter::masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string TensorBoardWriter::record(const std::string& data) {
  std::string r;
  r.reserve(data.size() + 16);
  fixed(r, static_cast<uint64_t>(data.size()));
  fixed(r, masked_crc32c(r.data(), 8));
  r += data;
  fixed(r, masked_crc32c(data.data(), data.size()));
  return r;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, double wall_time) {
  make_dir_no_link(dir);
  const std::string base = dir + "/events.out.tfevents." + std::to_string(static_cast<long long>(wall_time)) +
                           "." + host_name() + "." + std::to_string(::getpid());
  for (int n = 0; fd_ < 0; ++n) {
    path_ = n ? base + "." + std::to_string(n) : base;
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd_ < 0 && (errno != EEXIST || n >= 100))
      throw std::runtime_error("cannot create the TensorBoard event file " + path_ + ": " + std::strerror(errno));
  }
  std::string e = event_head(wall_time, 0);
  bytes_field(e, 3, "brain.Event:2");
  write_event(e);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TensorBoardWriter::session_start(int64_t step, double wall_time) {
  std::string log;
  key(log, 1, 0);
  varint(log, 1);  // SessionLog.START
  std::string e = event_head(wall_time, step);
  bytes_field(e, 7, log);
  write_event(e);
}

void TensorBoardWriter::scalars(int64_t step, double wall_time,
                                const std::vector<std::pair<std::string, float>>& values) {
  if (values.empty()) return;
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    bytes_field(value, 1, tag);
    key(value, 2, 5);
    fixed(value, v);
    bytes_field(summary, 1, value);
  }
  std::string e = event_head(wall_time, step);
  bytes_field(e, 5, summary);
  write_event(e);
}

void TensorBoardWriter::write_event(const std::string& event) {
  const std::string r = record(event);
  write_all_fd(fd_, r.data(), r.size(), path_);
}

}  // namespace xy
