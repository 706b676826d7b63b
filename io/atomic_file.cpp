// Files that xy creates (see atomic_file.hpp).
#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace fs = std::filesystem;

namespace xy {

void apply_file_mode_policy() {
  const char* env = std::getenv("XY_UMASK");
  if (env && *env) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(env, &end, 8);
    if (errno != 0 || end == env || *end != '\0' || v < 0 || v > 0777)
      throw std::invalid_argument(std::string("XY_UMASK='") + env +
                                  "': not an octal file-mode mask between 000 and 777 (e.g. 077, 027)");
    ::umask(static_cast<mode_t>(v));
    return;
  }
  const mode_t old = ::umask(077);
  ::umask(old | 077);
}

int open_exclusive(const std::string& path) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd >= 0) return fd;
    if (errno != EEXIST || attempt > 0) break;
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      throw std::runtime_error("cannot create " + path + ": a directory is in the way");
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) break;
  }
  throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
}

void write_all_fd(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("write of " + path + " failed: " + std::strerror(errno));
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
}

void fsync_path(const std::string& path, bool is_dir) {
  const int fd = ::open(path.c_str(), (is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error("fsync of " + path + " failed: " + std::strerror(err));
}

void publish_file_atomic(int fd, const std::string& tmp, const std::string& path) {
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw std::runtime_error("fsync of " + tmp + " failed: " + std::strerror(err));
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("close of " + tmp + " failed: " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(err));
  }
  const fs::path parent = fs::path(path).parent_path();
  fsync_path(parent.empty() ? "." : parent.string(), true);
}

void write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  const int fd = open_exclusive(tmp);
  try {
    write_all_fd(fd, data.data(), data.size(), tmp);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  publish_file_atomic(fd, tmp, path);
}

void make_dir_no_link(const std::string& path) {
  if (::mkdir(path.c_str(), 0777) == 0) return;
  const int err = errno;
  struct stat st;
  if (err == EEXIST && ::lstat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return;
    throw std::runtime_error("cannot use " + path + ": it is " +
                             (S_ISLNK(st.st_mode) ? "a symbolic link" : "not a directory"));
  }
  throw std::runtime_error("cannot create directory " + path + ": " + std::strerror(err));
}

}  // namespace xy
