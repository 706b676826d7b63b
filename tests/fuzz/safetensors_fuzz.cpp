// libFuzzer target for the safetensors header parser (io/safetensors.cpp: parse_header).
//
// Any input must either parse into tensors that lie inside the buffer and tile the data section,
// or throw SafetensorsError; anything else (a crash, a sanitizer report, another exception, a
// violated invariant) is a finding. Built with clang and -DXY_FUZZ=ON (see docs/INTEROP.md);
// tests/fuzz/replay_main.cpp replays the corpus through the same function in every build.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const xy::st::Header h = xy::st::parse_header(data, size, "<fuzz>");
    if (h.data_start < 8 || h.data_start > size) std::abort();
    uint64_t covered = 0;
    for (const auto& t : h.tensors) {
      if (t.begin != covered || t.end < t.begin || t.end > size - h.data_start) std::abort();
      if (static_cast<uint64_t>(t.numel()) * xy::st::dtype_size(t.dtype) != t.nbytes()) std::abort();
      covered = t.end;
    }
    if (covered != size - h.data_start) std::abort();
  } catch (const xy::st::SafetensorsError&) {
  }
  return 0;
}
