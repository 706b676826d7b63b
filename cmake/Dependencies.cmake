# Finds xy's dependencies through the standard mechanisms only (CMAKE_PREFIX_PATH and system
# paths), so that a CUDA LibTorch elsewhere works with the same CMake. Defines imported targets
# xy::torch, xy::caf, xy::sentencepiece, xy::toml, xy::zstd.
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

# LibTorch: Debian's libtorch-dev (CPU) or a CUDA LibTorch on CMAKE_PREFIX_PATH.
find_package(Torch REQUIRED)
add_library(xy::torch INTERFACE IMPORTED)
target_link_libraries(xy::torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(xy::torch INTERFACE ${TORCH_INCLUDE_DIRS})
# c10d's Gloo backend is declared behind USE_C10D_GLOO; Debian's headers need libgloo-dev.
find_path(GLOO_INCLUDE_DIR gloo/config.h)
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

# GoogleTest.
if(XY_TESTS)
  find_package(GTest REQUIRED)
endif()
