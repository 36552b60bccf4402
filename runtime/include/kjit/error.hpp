// Exceptions thrown by kjit. Every failure a caller can act on is a kjit::Error; subclasses
// carry the structured parts (compile log, options) for callers that want them.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A caller's argument is invalid (wrong dtype, shape, stride, alignment, null pointer, ...).
// what() names the argument.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// No usable CUDA driver (libcuda.so.1 missing, or no device). CPU-only features keep working.
class NoDriverError : public Error {
 public:
  using Error::Error;
};

// A CUDA driver call failed; `result` is the CUresult value.
class DriverError : public Error {
 public:
  DriverError(int result, const std::string& message) : Error(message), result(result) {}
  int result;
};

// NVRTC rejected a program. what() holds everything needed to act on it; the parts are kept
// separately for tools.
class CompileError : public Error {
 public:
  CompileError(const std::string& message, std::string log, std::vector<std::string> options,
               std::string excerpt)
      : Error(message),
        log(std::move(log)),
        options(std::move(options)),
        excerpt(std::move(excerpt)) {}
  std::string log;
  std::vector<std::string> options;
  std::string excerpt;  // numbered source lines around the first error
};

// KJIT_NO_JIT=1 and a specialisation that is in neither cache. what() names the specialisation.
class MissingKernelError : public Error {
 public:
  using Error::Error;
};

}  // namespace kjit
#pragma GCC visibility pop
