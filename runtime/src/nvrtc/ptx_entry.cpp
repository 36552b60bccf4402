#include "nvrtc/ptx_entry.hpp"

#include <string>

namespace kjit::nvrtc {

int entry_parameter_count(std::string_view ptx, std::string_view lowered_name) {
  const std::string head = ".entry " + std::string(lowered_name) + "(";
  const std::size_t start = ptx.find(head);
  if (start == std::string_view::npos) return -1;
  const std::size_t open = start + head.size();
  const std::size_t close = ptx.find(')', open);
  if (close == std::string_view::npos) return -1;
  const std::string_view list = ptx.substr(open, close - open);
  int count = 0;
  for (std::size_t at = list.find(".param"); at != std::string_view::npos;
       at = list.find(".param", at + 6)) {
    ++count;
  }
  return count;
}

}  // namespace kjit::nvrtc
