// The reading side of `xy-node preprocess` (see pipeline.hpp): inputs found, opened one at a
// time, decompressed (plain, gzip, zstd) and cut into chunks of whole lines.
#pragma once

#include <string>

#include "preprocess/pipeline.hpp"

namespace xy {
namespace pp {

// The reader thread's body: reads plan.inputs from `start` on, cuts them into chunks of about
// plan.chunk_bytes of whole lines (never spanning two files; lines longer than max_line_bytes
// become line_too_long records without being buffered; a cut or corrupt gzip/zstd stream ends
// its file with a truncated_file / corrupt_file record) and queues them on `pipe`. Throws
// PreprocessError on an I/O error; returns early when the pipeline stops.
void read_inputs(const Plan& plan, const StartPosition& start, int64_t max_line_bytes, Pipeline& pipe);

// The whole file in *out; false if it cannot be opened.
bool read_file(const std::string& path, std::string* out);

}  // namespace pp
}  // namespace xy
