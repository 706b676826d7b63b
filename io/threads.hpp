// Starting threads without std::terminate. std::thread's constructor throws std::system_error
// when the system refuses a thread (EAGAIN: `ulimit -u`, or `ulimit -v` too low to map its stack).
// Uncaught, or caught while another std::thread of a std::vector is still joinable (its
// destructor then calls std::terminate), that ends the process in "terminate called ..." with
// exit 134. start_thread() turns the failure into a ThreadStartError naming what could not be
// started; the callers join or detach what they had started before rethrowing, and the commands
// report it as one line with exit code 1.
#pragma once

#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace xy {

class ThreadStartError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class F>
std::thread start_thread(const std::string& what, F&& fn) {
  try {
    return std::thread(std::forward<F>(fn));
  } catch (const std::system_error& e) {
    throw ThreadStartError("cannot start " + what + ": " + e.what() +
                           " (too many threads, or too little address space for their stacks: "
                           "check ulimit -u and ulimit -v)");
  }
}

// Starts n threads that wait, then lets them end: throws ThreadStartError (naming `what` and how
// many of the n started) when the system refuses one. For set-ups whose threads are started deep
// inside a library that cannot recover from a refused one (c10d's ProcessGroupGloo, CAF's
// scheduler and detached actors end in std::terminate): checked first, their failure is one line.
// Stacks are unmapped when the threads end, so the room found is there for the real ones (unless
// something else takes it in between).
inline void check_threads_available(int n, const std::string& what) {
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  std::vector<std::thread> started;
  started.reserve(static_cast<size_t>(n > 0 ? n : 0));
  auto release = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      go = true;
    }
    cv.notify_all();
    for (auto& t : started) t.join();
  };
  try {
    for (int i = 0; i < n; ++i)
      started.emplace_back([&] {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return go; });
      });
  } catch (const std::system_error& e) {
    const size_t got = started.size();
    release();
    throw ThreadStartError("cannot start " + what + ": only " + std::to_string(got) + " of the " +
                           std::to_string(n) + " threads it needs could be started: " + e.what() +
                           " (too many threads, or too little address space for their stacks: "
                           "check ulimit -u and ulimit -v)");
  }
  release();
}

}  // namespace xy
