// A GPU architecture as kjit names it to NVRTC ("sm_90a", "sm_80"), and what the kernel families
// need to know of it: its version, whether it has wgmma, its shared-memory limit. The current
// device's arch is cached per thread (device_info costs several driver calls).
#pragma once

#include <string>
#include <string_view>

namespace kjit {

class Arch {
 public:
  // Parses "sm_<digits>" with an optional "a" or "f" suffix; throws InvalidArgument otherwise.
  // Implicit, so that a literal "sm_90a" reads as an Arch where one is expected.
  Arch(std::string name);                              // NOLINT(google-explicit-constructor)
  Arch(const char* name) : Arch(std::string(name)) {}  // NOLINT(google-explicit-constructor)

  const std::string& name() const { return name_; }
  int version() const { return version_; }  // "sm_90a" -> 90
  // A small integer unique per arch (version and suffix), for memo keys.
  int id() const { return version_ * 4 + (suffix_ == 'a' ? 1 : suffix_ == 'f' ? 2 : 0); }

  bool has_wgmma() const { return name_ == "sm_90a"; }
  // The opt-in shared-memory limit per block (the CUDA programming guide's table).
  unsigned max_shared_bytes() const;

  // Throws InvalidArgument (one line, naming what this NVRTC supports) unless NVRTC can
  // compile for this arch: "sm_12" parses but is no GPU.
  void check_supported() const;

  friend bool operator==(const Arch& a, const Arch& b) { return a.name_ == b.name_; }

 private:
  std::string name_;
  int version_ = 0;
  char suffix_ = 0;
};

namespace arch {

bool is_real(std::string_view name);  // "sm_" digits, optionally "a" or "f"

// The calling thread's current device: its arch, and its multiprocessor count (a persistent
// kernel's grid).
const Arch& current();
int current_multiprocessors();

// `requested` when set (a CLI's --arch, checked against NVRTC), else the current device's arch;
// throws Error saying to pass --arch where there is no GPU to ask.
Arch requested_or_current(const std::string& requested);

}  // namespace arch
}  // namespace kjit
