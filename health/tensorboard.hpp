// TensorBoard event files written without TensorFlow or a protobuf library (docs/OPERATIONS.md,
// "The metrics log and the report"). An event file is a sequence of TFRecords:
//   uint64 length (little-endian), uint32 masked CRC32C of those 8 bytes, the data,
//   uint32 masked CRC32C of the data;   masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8
// each holding one tensorflow.Event protobuf (tensorflow/core/util/event.proto), encoded by hand:
//   Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//                Summary summary = 5; SessionLog session_log = 7; }
//   Summary    { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
//   SessionLog { SessionStatus status = 1; }   (START = 1)
// The first record says file_version "brain.Event:2": with a version >= 2 TensorBoard's event
// accumulator treats a SessionLog START as a restart and drops what it read at that step and after
// (the resumed run writes those steps again). tests/tb_read.py reads these files independently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace xy {

class TensorBoardWriter {
 public:
  // Creates dir (no link) and a new file in it, events.out.tfevents.<unix time>.<hostname>.<pid>
  // (".N" appended if that name exists: two writers of one process in one second), owner-only,
  // and writes the file_version record. Throws std::runtime_error naming the path.
  TensorBoardWriter(const std::string& dir, double wall_time);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // A SessionLog START at `step`: TensorBoard forgets the scalars it has at `step` and after.
  void session_start(int64_t step, double wall_time);
  // One event with these (tag, value) scalars. Each record is one write(), so a reader (or a
  // crash) sees whole records only, unless the disk fills mid-record.
  void scalars(int64_t step, double wall_time, const std::vector<std::pair<std::string, float>>& values);

  const std::string& path() const { return path_; }

  // The pieces, public for tests: CRC32C (Castagnoli, as TFRecord uses), its masked form, a
  // framed record.
  static uint32_t crc32c(const void* data, size_t n);
  static uint32_t masked_crc32c(const void* data, size_t n);
  static std::string record(const std::string& data);

 private:
  void write_event(const std::string& event);

  std::string path_;
  int fd_ = -1;
};

}  // namespace xy
