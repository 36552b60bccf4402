// What ptxas reported for one kernel: the numbers that decide occupancy and whether a
// specialisation may ship (no spills, no stack frame, no serialised wgmma).
#pragma once

#include <string>

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit {

struct ResourceUsage {
  int registers = 0;
  int static_shared_bytes = 0;
  int spill_store_bytes = 0;
  int spill_load_bytes = 0;
  int stack_frame_bytes = 0;
  int barriers = 0;
  // ptxas serialised this kernel's wgmma (its C75xx "Potential Performance Loss" notes): each
  // waits for the previous, so the tensor cores idle between them. 1 or 0.
  int serialized_wgmma = 0;

  bool spills() const { return spill_store_bytes > 0 || spill_load_bytes > 0; }
  std::string summary() const;  // "32 regs, 0 B smem, 0 B stack, 0/0 B spill"
};

}  // namespace kjit
#pragma GCC visibility pop
