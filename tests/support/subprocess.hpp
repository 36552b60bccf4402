// Runs a program with extra environment variables, capturing its output: for the tests that need
// separate processes (racing writers, keys across processes, the CLI, no-driver behaviour).
#pragma once

#include <chrono>

#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

namespace kjit::test {

struct ProcessResult {
  int exit_code = -1;  // 128 + signal when killed by one
  std::string out;
  std::string err;
};

class Subprocess {
 public:
  // Starts `argv` with `env` added to this process's environment.
  Subprocess(const std::vector<std::string>& argv,
             const std::vector<std::pair<std::string, std::string>>& env = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ProcessResult wait();
  // Waits at most `timeout`, then kills the process (exit code 128 + 9 says it was killed).
  ProcessResult wait_for(std::chrono::milliseconds timeout);
  void kill();  // SIGKILL; wait() then reports 128 + 9

 private:
  ProcessResult collect(int status);  // of the exited child, with its output
  pid_t pid_ = -1;
  std::string out_path_, err_path_;
};

// Paths of the project's own programs: the build-time location, unless the environment says
// otherwise (KJIT_TEST_HELPER, KJIT_CLI) because the binaries were moved to another machine.
std::string test_helper_path();
std::string cli_path();

inline ProcessResult run_process(const std::vector<std::string>& argv,
                                 const std::vector<std::pair<std::string, std::string>>& env = {}) {
  return Subprocess(argv, env).wait();
}

}  // namespace kjit::test
