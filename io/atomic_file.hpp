// Files that xy creates: owner-only by default, temporaries opened exclusively without following
// links, and publication by write + fsync + rename (the reader sees the old file or the new one,
// never half of one). Used by checkpoints, the stall report, the token cache, exports and
// preprocess (its shards, state file and manifest).
//
// File modes: every xy process adds 077 to the umask it was started with (files 0600,
// directories 0700), unless XY_UMASK (octal, e.g. 027 to let the group read) says otherwise; see
// docs/OPERATIONS.md, "Security".
#pragma once

#include <string>

namespace xy {

// Sets the process umask from XY_UMASK (octal 0..0777) or, without it, the current umask | 077.
// Throws std::invalid_argument naming XY_UMASK for a value that is not octal in range.
void apply_file_mode_policy();

// Opens `path` for writing as a new file: O_CREAT | O_EXCL | O_NOFOLLOW, mode 0666 & ~umask. A
// leftover at that path (a stale temporary, or a link someone planted there) is unlinked first
// (unlink removes a link, never what it points to), then the open is retried once. Returns the fd;
// throws std::runtime_error naming the path and errno's text.
int open_exclusive(const std::string& path);

// Writes all of `data` to fd (retrying short writes); throws std::runtime_error naming `path`.
void write_all_fd(int fd, const void* data, size_t n, const std::string& path);

// fsyncs a file or directory; throws std::runtime_error naming it.
void fsync_path(const std::string& path, bool is_dir);

// Publishes `tmp`, written through `fd` (from open_exclusive(tmp)), as `path`: fsync, close,
// rename, fsync of the directory. For files written piece by piece (token shards); the one
// implementation of the sequence, which write_file_atomic uses too. Closes fd in every case and
// removes tmp on failure. Throws std::runtime_error naming the file.
void publish_file_atomic(int fd, const std::string& tmp, const std::string& path);

// Writes `data` to `path` atomically: `path`.tmp (exclusive, see open_exclusive), then
// publish_file_atomic. Throws std::runtime_error naming the file.
void write_file_atomic(const std::string& path, const std::string& data);

// Creates directory `path` if it does not exist; an existing one is kept, but it must be a real
// directory, not a link (nor a file). Throws std::runtime_error naming it.
void make_dir_no_link(const std::string& path);

}  // namespace xy
