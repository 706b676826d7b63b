// The run's record, for the morning after: <work_dir>/metrics.jsonl (one JSON object per line) and
// TensorBoard scalars under <work_dir>/tb/ (docs/OPERATIONS.md, "The metrics log"). LibTorch-free.
//
// Lines (every one has "time", Unix seconds):
//   a step        {"step": N, "loss", "grad_norm", "lr", "loss_scale", "skipped", "overflow_units",
//                  "tokens" (seen so far, all ranks), "tokens_target", "tokens_per_s", "mfu",
//                  "step_s", "compute_s", "wait_optimizer_s", "exposed_comm_s", "end_of_step_s",
//                  "wait_batch_s", "host_rss_gib", "gpu_mem_gib", "eta_s"}
//   an evaluation {"eval": NAME, "step": N, "loss", "ppl", "tokens", "samples", "seconds"}
//   an event      {"event": "start" | "restart" | "end", ...}: start has "step" (0 or the step
//                 resumed from) and "resumed_from"; restart (written by the supervisor,
//                 apps/supervise.cpp) has "attempt", "of", "reason"; end has "step" and "exit_code".
//
// Every step exactly once across resumes and restarts: a run that starts at step S (0 when fresh)
// first drops the step and evaluation lines after S (the file is rewritten atomically), then
// appends. Event lines are kept. Only node 0 writes (its first rank's view, which after the
// end-of-step all-reduce is the job's). A line of an existing file that is not a JSON object stops
// the open with "path:N: ..." (move the file away to start a new log), except a last line without
// its newline: a write the process never finished (power loss), which is dropped.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

namespace xy {

class TensorBoardWriter;

class MetricsLog {
 public:
  // Opens (creating) <work_dir>/metrics.jsonl for a run starting at `start_step` and drops what
  // follows it; with `tensorboard`, a new event file under <work_dir>/tb/ that first tells
  // TensorBoard to discard its scalars after start_step (SessionLog START). Throws
  // std::runtime_error naming the file when it cannot be read or written.
  MetricsLog(const std::string& work_dir, int64_t start_step, bool tensorboard);
  ~MetricsLog();

  // Appends the line (one write() with O_APPEND; "time" added when absent; NaN becomes null);
  // throws std::runtime_error naming the file when the write fails. Numeric fields of a step line become TensorBoard
  // scalars "train/<field>"; an evaluation's loss and ppl "eval/<name>/loss", "eval/<name>/ppl".
  void step(const nlohmann::json& line);
  void eval(const nlohmann::json& line);
  void event(const nlohmann::json& line);

  const std::string& path() const { return path_; }

 private:
  void append(nlohmann::json line);

  std::mutex mu_;
  std::string path_;
  int fd_ = -1;
  std::unique_ptr<TensorBoardWriter> tb_;
};

// Appends one event line to <work_dir>/metrics.jsonl (created owner-only if absent) without
// opening a MetricsLog, which would drop lines: for the supervisor's restart events
// (apps/supervise.cpp), written while no engine runs. Throws std::runtime_error naming the file.
void append_metrics_event(const std::string& work_dir, const nlohmann::json& line);

// Reads every line of a metrics.jsonl as a JSON array (skipping none: a line that is not a JSON
// object throws, naming path:line; only a last line without its newline, a write still under way
// or never finished, is left out). Throws naming the path when there is no file. For `xy-node
// report`.
nlohmann::json read_metrics(const std::string& path);

}  // namespace xy
