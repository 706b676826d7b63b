# Finds xy's dependencies through the standard mechanisms only (CMAKE_PREFIX_PATH and system
# paths), so that a CUDA LibTorch elsewhere works with the same CMake. Defines imported targets
# xy::torch, xy::caf, xy::sentencepiece, xy::toml, xy::zstd, xy::pcre2, xy::utf8proc.
find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)  # SHA-256 of inputs and tokenizer (libssl-dev)

# xy_find_c_library(TARGET HEADER LIBRARY WHAT DEBIAN_PACKAGE): an imported target xy::TARGET
# for a C library found by path (CMAKE_PREFIX_PATH and system paths, not only pkg-config), or a
# configure error naming the Debian package.
function(xy_find_c_library target header library what package)
  string(TOUPPER "${target}" var)
  find_path(${var}_INCLUDE_DIR ${header})
  find_library(${var}_LIB ${library})
  if(NOT ${var}_INCLUDE_DIR OR NOT ${var}_LIB)
    message(FATAL_ERROR "${what} not found (Debian: ${package}); run scripts/setup.sh")
  endif()
  add_library(xy::${target} INTERFACE IMPORTED)
  target_include_directories(xy::${target} INTERFACE ${${var}_INCLUDE_DIR})
  target_link_libraries(xy::${target} INTERFACE ${${var}_LIB})
endfunction()

# zstd (.zst inputs of xy-node preprocess).
xy_find_c_library(zstd zstd.h zstd zstd libzstd-dev)
find_package(nlohmann_json 3 REQUIRED)

# Byte-level BPE tokenizers (io/bpe_tokenizer.*): PCRE2 (8-bit, JIT) runs the pre-tokenizer
# regexes, utf8proc the NFC normalizer.
xy_find_c_library(pcre2 pcre2.h pcre2-8 PCRE2 libpcre2-dev)
xy_find_c_library(utf8proc utf8proc.h utf8proc utf8proc libutf8proc-dev)

# LibTorch: Debian's libtorch-dev (CPU) or a CUDA LibTorch on CMAKE_PREFIX_PATH.
find_package(Torch REQUIRED)
add_library(xy::torch INTERFACE IMPORTED)
target_link_libraries(xy::torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(xy::torch INTERFACE ${TORCH_INCLUDE_DIRS})
# c10d's Gloo backend is declared behind USE_C10D_GLOO; Debian's headers need libgloo-dev.
find_path(GLOO_INCLUDE_DIR gloo/config.h HINTS ${TORCH_INCLUDE_DIRS})  # Debian: libgloo-dev; pip LibTorch ships them
if(GLOO_INCLUDE_DIR)
  target_compile_definitions(xy::torch INTERFACE USE_C10D_GLOO)
  target_include_directories(xy::torch INTERFACE ${GLOO_INCLUDE_DIR})
else()
  message(FATAL_ERROR "gloo headers not found (Debian: libgloo-dev); run scripts/setup.sh")
endif()

# CAF 0.17.6 ships no CMake config: find it by hand. Link order matters: openssl, io, core.
find_path(CAF_INCLUDE_DIR caf/all.hpp)
find_library(CAF_CORE_LIB caf_core)
find_library(CAF_IO_LIB caf_io)
if(NOT CAF_INCLUDE_DIR OR NOT CAF_CORE_LIB OR NOT CAF_IO_LIB)
  message(FATAL_ERROR "CAF 0.17 not found (Debian: libcaf-dev); run scripts/setup.sh")
endif()
add_library(xy::caf INTERFACE IMPORTED)
target_include_directories(xy::caf INTERFACE ${CAF_INCLUDE_DIR})
target_link_libraries(xy::caf INTERFACE ${CAF_IO_LIB} ${CAF_CORE_LIB} Threads::Threads)

# SentencePiece: its .pc hard-codes /usr, so find_path/find_library.
find_path(SPM_INCLUDE_DIR sentencepiece_processor.h)
find_library(SPM_LIB sentencepiece)
find_library(SPM_TRAIN_LIB sentencepiece_train)
if(NOT SPM_INCLUDE_DIR OR NOT SPM_LIB OR NOT SPM_TRAIN_LIB)
  message(FATAL_ERROR "SentencePiece not found (Debian: libsentencepiece-dev); run scripts/setup.sh")
endif()
add_library(xy::sentencepiece INTERFACE IMPORTED)
target_include_directories(xy::sentencepiece INTERFACE ${SPM_INCLUDE_DIR})
target_link_libraries(xy::sentencepiece INTERFACE ${SPM_TRAIN_LIB} ${SPM_LIB})

# toml++ (header-only).
find_path(TOMLPP_INCLUDE_DIR toml++/toml.h)
if(NOT TOMLPP_INCLUDE_DIR)
  message(FATAL_ERROR "toml++ not found (Debian: libtomlplusplus-dev); run scripts/setup.sh")
endif()
add_library(xy::toml INTERFACE IMPORTED)
target_include_directories(xy::toml INTERFACE ${TOMLPP_INCLUDE_DIR})

# cpp-httplib (the status server): Debian's libcpp-httplib-dev is a compiled library with a
# pkg-config file (with OpenSSL, zlib and brotli support compiled in: the same defines are needed).
find_package(PkgConfig REQUIRED)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

# GoogleTest.
if(XY_TESTS)
  find_package(GTest REQUIRED)
endif()

# The CUDA build: NCCL, the one LibTorch loads (PyTorch's nvidia-nccl wheel first on
# CMAKE_PREFIX_PATH), so that one process never holds two NCCLs.
if(XY_CUDA)
  find_path(NCCL_INCLUDE_DIR nccl.h PATH_SUFFIXES include)
  find_library(NCCL_LIB NAMES nccl libnccl.so.2 PATH_SUFFIXES lib)
  if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIB)
    message(FATAL_ERROR "NCCL not found: put its prefix (e.g. PyTorch's nvidia/nccl) on CMAKE_PREFIX_PATH")
  endif()
  message(STATUS "xy: CUDA build with NCCL ${NCCL_LIB}")
endif()
