#include "autotune/tunable_op.hpp"

namespace kjit::autotune {

const TunableOp& merge_states_tunable();  // merge_states_tunable.cpp
const TunableOp& attention_tunable();     // attention_tunable.cpp

const std::vector<const TunableOp*>& registry() {
  static const std::vector<const TunableOp*> ops{&merge_states_tunable(), &attention_tunable()};
  return ops;
}

const TunableOp* find_op(const std::string& name) {
  for (const TunableOp* op : registry()) {
    if (op->name() == name) return op;
  }
  return nullptr;
}

}  // namespace kjit::autotune
