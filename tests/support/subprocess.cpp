#include "tests/support/subprocess.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace kjit::test {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string temp_path(const char* what) {
  static std::atomic<int> counter{0};
  const char* base = std::getenv("TMPDIR");
  return std::string(base && *base ? base : "/tmp") + "/kjit-sub-" + std::to_string(::getpid()) +
         "-" + std::to_string(counter++) + "." + what;
}

}  // namespace

std::string test_helper_path() {
  const char* v = std::getenv("KJIT_TEST_HELPER");
  return v && *v ? v : KJIT_TEST_HELPER;
}

std::string cli_path() {
  const char* v = std::getenv("KJIT_CLI");
  return v && *v ? v : KJIT_CLI;
}

Subprocess::Subprocess(const std::vector<std::string>& argv,
                       const std::vector<std::pair<std::string, std::string>>& env)
    : out_path_(temp_path("out")), err_path_(temp_path("err")) {
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    for (const auto& [k, v] : env)
      ::setenv(k.c_str(), v.c_str(), 1);
    const int out = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int in = ::open("/dev/null", O_RDONLY);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::dup2(in, 0);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
}

Subprocess::~Subprocess() {
  if (pid_ > 0) wait();
}

void Subprocess::kill() {
  if (pid_ > 0) ::kill(pid_, SIGKILL);
}

ProcessResult Subprocess::wait_for(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) return collect(status);
    ::usleep(10000);
  }
  kill();
  return wait();
}

ProcessResult Subprocess::wait() {
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  return collect(status);
}

ProcessResult Subprocess::collect(int status) {
  ProcessResult r;
  pid_ = -1;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out_path_);
  r.err = slurp(err_path_);
  ::unlink(out_path_.c_str());
  ::unlink(err_path_.c_str());
  return r;
}

}  // namespace kjit::test
