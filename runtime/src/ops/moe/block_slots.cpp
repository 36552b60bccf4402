#include "ops/moe/block_slots.hpp"

#include <fmt/format.h>

#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kBlockSlotsCheck("moe block slots");

}  // namespace

void MoeBlockSlots::check(const Problem& p) {
  if (p.blocks < 0 || p.blocks > (1ll << 31) - 1 || p.experts < 1 || p.experts > (1ll << 31) - 1)
    kBlockSlotsCheck.fail(fmt::format("{} blocks and {} experts (1 or more): at most 2^31 - 1 each",
                                      p.blocks, p.experts));
}

KernelSpec MoeBlockSlots::spec(const Config&, const Problem&, const Arch& arch) {
  KernelSpec s(sources()[0], {"kjit::moe::moe_block_slots"});
  s.arch = arch.name();
  return s;
}

void MoeBlockSlots::launch(const Program& program, const Config& c, const Problem& p,
                           const Args& args, StreamHandle stream) {
  if (p.blocks == 0) return;
  const auto grid = static_cast<unsigned>((p.blocks + c.threads - 1) / c.threads);
  program.kernel().launch({{grid}, {static_cast<unsigned>(c.threads)}, 0, stream, {}}, args);
}

std::vector<MoeBlockSlots::Problem> MoeBlockSlots::shipped(const Arch&) {
  return {{DType::Int32, 4, 64}};
}

std::vector<TensorSpec> MoeBlockSlots::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const auto experts = static_cast<float>(p.experts);
  return {{"block_expert", DType::Int32, {p.blocks}, Role::Input, -1.f, experts},
          {"slot_of_expert", DType::Int32, {p.experts}, Role::Input, -1.f, experts},
          {"block_slot", DType::Int32, {p.blocks}, Role::Output}};
}

MoeBlockSlots::Args MoeBlockSlots::args(const Problem&, const std::vector<TensorView>& t) {
  return validate(t.at(0), t.at(1), t.at(2)).args;
}

std::vector<Preset<MoeBlockSlots::Problem>> MoeBlockSlots::presets() {
  Preset<Problem> glm{"glm-4.7-flash-offload", {}}, dsv3{"deepseek-v3-offload", {}};
  for (std::int64_t t : {1, 16, 256}) {  // decode batches: blocks of 64 rows as align pads them
    glm.problems.push_back({DType::Int32, moe::align_capacity(t * 4, 64, 64) / 64, 64});
    dsv3.problems.push_back({DType::Int32, moe::align_capacity(t * 8, 256, 64) / 64, 256});
  }
  return {glm, dsv3};
}

Call<MoeBlockSlots> MoeBlockSlots::validate(const TensorView& block_expert,
                                            const TensorView& slot_of_expert,
                                            const TensorView& block_slot) {
  kBlockSlotsCheck.ndim(block_expert, "block_expert", 1, "[blocks]");
  kBlockSlotsCheck.ndim(slot_of_expert, "slot_of_expert", 1, "[E]");
  Call<MoeBlockSlots> call{};
  Problem& p = call.problem;
  p = {DType::Int32, block_expert.size(0), slot_of_expert.size(0)};
  check(p);
  kBlockSlotsCheck.vector(block_expert, "block_expert", DType::Int32, p.blocks);
  kBlockSlotsCheck.vector(slot_of_expert, "slot_of_expert", DType::Int32, p.experts);
  kBlockSlotsCheck.vector(block_slot, "block_slot", DType::Int32, p.blocks);
  Args& a = call.args;
  a.block_expert = static_cast<const int*>(block_expert.data);
  a.slot_of_expert = static_cast<const int*>(slot_of_expert.data);
  a.block_slot = static_cast<int*>(block_slot.data);
  a.blocks = static_cast<int>(p.blocks);
  a.experts = static_cast<int>(p.experts);
  return call;
}

}  // namespace kjit::ops

namespace kjit::moe {

void map_block_experts(const TensorView& block_expert, const TensorView& slot_of_expert,
                       const TensorView& block_slot, StreamHandle stream) {
  ops::run(ops::MoeBlockSlots::validate(block_expert, slot_of_expert, block_slot), stream);
}

}  // namespace kjit::moe
