// MLA decode's input rules, on the host (fake device pointers: validation reads only the host
// copies): every refusal names the argument, and the table's name the sequence.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kjit/error.hpp"
#include "ops/mla/mla_inputs.hpp"

namespace kjit::test {
namespace {

void* fake(std::uintptr_t offset = 0) {
  return reinterpret_cast<void*>(0x200000 + offset);
}

// B = 2 sequences of 100 and 0 tokens over 4 blocks of 64 tokens, GLM's 20 heads, s_q 2.
struct Decode {
  std::vector<std::int32_t> table{3, 1, -1, -1, -1, -1};
  std::vector<std::int32_t> lengths{100, 0};
  TensorView q{fake(), DType::BFloat16, {2, 2, 20, 576}};
  TensorView out{fake(), DType::BFloat16, {2, 2, 20, 512}};
  TensorView lse{fake(), DType::Float32, {2, 2, 20}};
  mla::PagedCache cache{TensorView(fake(), DType::BFloat16, {4, 64, 576}),
                        TensorView(fake(), DType::Int32, {2, 3}), table.data(),
                        TensorView(fake(), DType::Int32, {2}), lengths.data()};
  ops::MlaDecodeShape check() const { return ops::check_mla_decode(q, cache, out, lse); }
};

void expect_refused(const Decode& d, const std::string& says) {
  try {
    d.check();
    ADD_FAILURE() << "accepted; expected an error saying \"" << says << "\"";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(MlaDecodeValidation, AcceptsAGoodCallAndReportsItsShape) {
  Decode d;
  const ops::MlaDecodeShape s = d.check();
  EXPECT_EQ(s.batch, 2);
  EXPECT_EQ(s.s_q, 2);
  EXPECT_EQ(s.heads, 20);
  EXPECT_EQ(s.block_size, 64);
  EXPECT_EQ(s.num_blocks, 4);
  EXPECT_EQ(s.max_blocks, 3);
  EXPECT_EQ(s.longest, 100);
  EXPECT_EQ(s.keys, 100);
  d.lse = TensorView();  // the lse is optional
  EXPECT_NO_THROW(d.check());
  d.cache.cache = TensorView(fake(), DType::BFloat16, {4, 32, 576});  // TensorRT-LLM's 32
  d.lengths[0] = 96;
  d.table[2] = 0;
  EXPECT_NO_THROW(d.check());
}

// Every sequence empty, the table [2, 0] with the strides torch gives it, (1, 1): accepted, as an
// empty tensor's strides say nothing about its layout.
TEST(MlaDecodeValidation, AcceptsAnEmptyTableWhateverItsStrides) {
  Decode d;
  d.lengths = {0, 0};
  d.cache.block_table = TensorView(fake(), DType::Int32, {2, 0}, {1, 1});
  const ops::MlaDecodeShape s = d.check();
  EXPECT_EQ(s.max_blocks, 0);
  EXPECT_EQ(s.keys, 0);
  d.cache.block_table = TensorView(fake(), DType::Int32, {3, 0}, {1, 1});
  expect_refused(d, "block_table must be contiguous int32 [2, 0]");
}

TEST(MlaDecodeValidation, RefusesShapesAndDtypes) {
  Decode d;
  d.q = TensorView(fake(), DType::BFloat16, {2, 2, 20, 512});
  expect_refused(d, "576 wide");
  d = Decode();
  d.out = TensorView(fake(), DType::BFloat16, {2, 2, 20, 576});
  expect_refused(d, "out must be [2, 2, 20, 512]");
  d = Decode();
  d.cache.cache = TensorView(fake(), DType::Float16, {4, 64, 576});
  expect_refused(d, "cache");
  d = Decode();
  d.q = TensorView(fake(), DType::Float32, {2, 2, 20, 576});
  expect_refused(d, "fp16 or bf16");
  d = Decode();
  d.q = TensorView(fake(), DType::BFloat16, {2, 5, 20, 576});
  d.out = TensorView(fake(), DType::BFloat16, {2, 5, 20, 512});
  d.lse = TensorView();
  expect_refused(d, "s_q");
  d = Decode();
  d.cache.cache = TensorView(fake(), DType::BFloat16, {4, 16, 576});
  expect_refused(d, "32 or 64 tokens");
  d = Decode();
  d.lse = TensorView(fake(), DType::BFloat16, {2, 2, 20});
  expect_refused(d, "lse must be fp32 [2, 2, 20]");
  d = Decode();
  d.q = TensorView(fake(8), DType::BFloat16, {2, 2, 20, 576});
  expect_refused(d, "q must be 16-byte aligned");
  d = Decode();
  d.q = TensorView(nullptr, DType::BFloat16, {2, 2, 20, 576});
  expect_refused(d, "q is a null pointer");
}

TEST(MlaDecodeValidation, RefusesTablesAndLengthsNamingTheSequence) {
  Decode d;
  d.table[1] = 4;  // past the cache's 4 blocks, in use by sequence 0's second block
  expect_refused(d, "sequence 0: block_table[0][1] = 4 is outside the cache's 4 blocks");
  d = Decode();
  d.table[0] = -1;
  expect_refused(d, "sequence 0: block_table[0][0] = -1");
  d = Decode();
  d.table[2] = 99;  // not in use: sequence 0 has two blocks
  EXPECT_NO_THROW(d.check());
  d = Decode();
  d.lengths[1] = 193;  // the table holds 3 x 64
  expect_refused(d, "sequence 1: length 193 is outside the block table's 192 tokens");
  d = Decode();
  d.lengths[1] = -1;
  expect_refused(d, "sequence 1: length -1");
  d = Decode();
  d.cache.host_lengths = nullptr;
  expect_refused(d, "host copy of lengths");
  d = Decode();
  d.cache.host_block_table = nullptr;
  expect_refused(d, "host copy of block_table");
  d = Decode();
  d.cache.block_table = TensorView(fake(), DType::Int32, {3, 3});
  expect_refused(d, "block_table must be contiguous int32 [2, 3]");
  d = Decode();
  d.cache.lengths = TensorView(fake(), DType::Int64, {2});
  expect_refused(d, "lengths must be contiguous int32 [2]");
}

}  // namespace
}  // namespace kjit::test
