// Process exit codes of xy-node (documented in README.md). A header of its own, without LibTorch:
// the xy-node launcher (apps/launcher.cpp) uses them too.
#pragma once

namespace xy {

enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        // an error with a message (bad data, I/O, a failed collective)
  kExitUsage = 2,        // bad command line or configuration
  kExitStall = 3,        // the watchdog found an operation past its deadline; see the stall report
  kExitPeerLost = 4,     // another node was killed, frozen or cut off (no heartbeat); see the report
  kExitWatchdogStuck = 5,  // the watchdog itself stopped running (its watcher ended the process)
};

}  // namespace xy
