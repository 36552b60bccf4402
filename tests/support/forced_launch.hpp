// A kernel family's call launched with a config the test picks instead of the op's choice (every
// config of a search space, a main loop forced): the spec compiled for the current device's arch.
#pragma once

#include "driver/arch.hpp"
#include "kjit/jit.hpp"
#include "ops/kernel_family.hpp"

namespace kjit::test {

template <class F>
void launch_forced(const typename F::Config& config, const ops::Call<F>& call,
                   StreamHandle stream) {
  F::launch(load(F::spec(config, call.problem, arch::current())), config, call.problem, call.args,
            stream);
}

}  // namespace kjit::test
