// The user-facing text of an error message. LibTorch's c10::Error (and the enforce failures of
// c10, Gloo and the CPU allocator) carry a C++ backtrace in what(): "message\nException raised
// from ...", or "message\nframe #0: ...". Users get the message only; xy's own messages never
// contain these markers. A header without LibTorch, so that the launcher can use it too.
#pragma once

#include <string>

namespace xy {

inline std::string without_backtrace(std::string what) {
  for (const char* marker : {"\nException raised from ", "\nframe #0"}) {
    const size_t at = what.find(marker);
    if (at != std::string::npos) what.erase(at);
  }
  while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
  return what;
}

}  // namespace xy
