// SHA-256 (OpenSSL's EVP), incremental: checksums of checkpoint files, inputs and tokenizers.
#pragma once

#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace xy {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("OpenSSL: cannot initialise SHA-256");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  // The digest as 64 lowercase hex digits. Call once.
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned int i = 0; i < len; ++i) {
      s.push_back(digits[md[i] >> 4]);
      s.push_back(digits[md[i] & 15]);
    }
    return s;
  }

  // The digest of a whole file; throws std::runtime_error naming it if it cannot be read.
  static std::string of_file(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw std::runtime_error("cannot open " + path);
    Sha256 h;
    std::vector<char> buf(1 << 20);
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) h.update(buf.data(), n);
    const bool err = std::ferror(f);
    std::fclose(f);
    if (err) throw std::runtime_error("cannot read " + path);
    return h.hex();
  }

  // The digest of what is left to read from `fd` (not closed); `path` names it in errors.
  static std::string of_fd(int fd, const std::string& path) {
    Sha256 h;
    std::vector<char> buf(1 << 20);
    for (;;) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
      }
      h.update(buf.data(), static_cast<size_t>(n));
    }
    return h.hex();
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace xy
