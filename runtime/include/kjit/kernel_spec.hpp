// What to compile: a source, the kernels to instantiate from it (name expressions such as
// "kjit::samples::saxpy<float>"), preprocessor defines, extra NVRTC options and a target arch.
#pragma once

#include <string>
#include <utility>
#include <vector>

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit {

class Source {
 public:
  enum class Kind { Embedded, File, String };

  // A template shipped in kjit's templates/ tree, e.g. "samples/saxpy.cuh". KJIT_TEMPLATE_DIR,
  // when set, is searched first so a kernel can be edited without rebuilding the library.
  static Source embedded(std::string template_path);
  // A file on disk. Quoted includes resolve next to it first, then in the kjit templates tree.
  static Source file(std::string path);
  // Source text held by the caller; `name` appears in diagnostics. Quoted includes resolve in
  // the kjit templates tree.
  static Source string(std::string name, std::string text);

  Kind kind() const { return kind_; }
  const std::string& name() const { return name_; }
  const std::string& text() const { return text_; }  // only for Kind::String

 private:
  Source(Kind kind, std::string name, std::string text)
      : kind_(kind), name_(std::move(name)), text_(std::move(text)) {}
  Kind kind_;
  std::string name_;
  std::string text_;
};

struct KernelSpec {
  KernelSpec(Source source, std::vector<std::string> name_expressions)
      : source(std::move(source)), name_expressions(std::move(name_expressions)) {}

  Source source;
  std::vector<std::string> name_expressions;
  std::vector<std::pair<std::string, std::string>> defines;  // -DNAME=VALUE, any order
  std::vector<std::string> options;                          // extra NVRTC options
  std::string arch;  // "sm_90a", "sm_80", ...; empty: the current device's

  // One line naming the specialisation, for errors and listings.
  std::string describe() const;
};

}  // namespace kjit
#pragma GCC visibility pop
