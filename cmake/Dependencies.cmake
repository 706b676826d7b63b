# Finds xy's dependencies through the standard mechanisms only (CMAKE_PREFIX_PATH and system
# paths), so that a CUDA LibTorch elsewhere works with the same CMake. Defines imported targets
# xy::torch, xy::caf, xy::sentencepiece, xy::toml, xy::zstd, xy::pcre2, xy::utf8proc.
find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)  # SHA-256 of inputs and tokenizer (libssl-dev)

# zstd (.zst inputs of xy-node preprocess): Debian's libzstd-dev.
find_path(ZSTD_INCLUDE_DIR zstd.h)
find_library(ZSTD_LIB zstd)
if(NOT ZSTD_INCLUDE_DIR OR NOT ZSTD_LIB)
  message(FATAL_ERROR "zstd not found (Debian: libzstd-dev); run scripts/setup.sh")
endif()
add_library(xy::zstd INTERFACE IMPORTED)
target_include_directories(xy::zstd INTERFACE ${ZSTD_INCLUDE_DIR})
target_link_libraries(xy::zstd INTERFACE ${ZSTD_LIB})
find_package(nlohmann_json 3 REQUIRED)

# Byte-level BPE tokenizers (io/bpe_tokenizer.*): PCRE2 (8-bit, JIT) runs the pre-tokenizer
# regexes, utf8proc the NFC normalizer. Debian's libpcre2-dev and libutf8proc-dev; found by path
# (CMAKE_PREFIX_PATH), not only through pkg-config.
find_path(PCRE2_INCLUDE_DIR pcre2.h)
find_library(PCRE2_LIB pcre2-8)
if(NOT PCRE2_INCLUDE_DIR OR NOT PCRE2_LIB)
  message(FATAL_ERROR "PCRE2 not found (Debian: libpcre2-dev); run scripts/setup.sh")
endif()
add_library(xy::pcre2 INTERFACE IMPORTED)
target_include_directories(xy::pcre2 INTERFACE ${PCRE2_INCLUDE_DIR})
target_link_libraries(xy::pcre2 INTERFACE ${PCRE2_LIB})
find_path(UTF8PROC_INCLUDE_DIR utf8proc.h)
find_library(UTF8PROC_LIB utf8proc)
if(NOT UTF8PROC_INCLUDE_DIR OR NOT UTF8PROC_LIB)
  message(FATAL_ERROR "utf8proc not found (Debian: libutf8proc-dev); run scripts/setup.sh")
endif()
add_library(xy::utf8proc INTERFACE IMPORTED)
target_include_directories(xy::utf8proc INTERFACE ${UTF8PROC_INCLUDE_DIR})
target_link_libraries(xy::utf8proc INTERFACE ${UTF8PROC_LIB})

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
