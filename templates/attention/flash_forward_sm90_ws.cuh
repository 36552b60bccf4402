// Attention forward on Hopper with warp specialisation (sm_90a), after FlashAttention-3: one
// producer warp loads Q (once a tile) and the K and V tiles into rings of kStages through the copy
// engine (TMA), and two or three consumer warpgroups of 64 query rows each run
// flash_forward_sm90.cuh's wgmma steps with no block-wide barrier in the main loop. A stage is
// published by its `full` mbarrier, which the copy engine completes once the tile's bytes have
// landed, and handed back through its `empty` mbarrier (one arrival per consumer warpgroup once its
// wgmma has read it). The producer warpgroup gives its registers to the consumers (setmaxnreg);
// three of its warps leave at once. The consumers take turns issuing their GEMMs (named barriers,
// FA3's ping-pong): one warpgroup issues P_j V_j and S_{j+1} = Q K_{j+1}^T back to back, then its
// softmax of S_{j+1} runs while the other warpgroups' pairs occupy the tensor cores; in mainloops
// 92 and 93 (FA3's intra-warpgroup overlap) also while its own P_j V_j does. Causal tiles run
// longest first (the grid's last query tile first): the short ones fill the last wave. In mainloop
// 93 a block stays on its SM and claims tiles one after another (persistent blocks), so that one
// tile's loads run under the last one's end.
//
// The copy engine reads whole boxes: past the tensor's rows it fills zeros, but a packed tile
// that crosses its sequence's end reads the next sequence's rows. Those keys are masked (as the
// sequence end always is) and their P is 0; those query rows are computed and never stored.
#pragma once

#include <cuda/std/cstdint>
#include <cuda/std/type_traits>

#include "attention/flash_forward_sm90.cuh"
#include "common/mbarrier.cuh"
#include "common/named_barrier.cuh"
#include "common/register_budget.cuh"
#include "common/tma.cuh"

namespace kjit::attention {

template <int kConsumers_, bool kPersistent = false>
struct FlashWsRoles {
  static constexpr int kConsumers = kConsumers_;  // warpgroups of 64 query rows
  static constexpr int kThreads = 128 * (kConsumers + 1);
  // The block's registers (its launch share, 65536 / kThreads rounded down to 8, a thread) less
  // the producer's share, for the consumers (multiples of 8). A persistent producer claims and
  // publishes items besides: at 24 it spills, so two consumers give it 8 each (three leave it
  // 32 from the block's slack). flash_forward.cpp's valid() counts the consumers' share.
  static constexpr int kProducerRegisters = kPersistent ? (kConsumers == 2 ? 40 : 32) : 24;
  static constexpr int kConsumerRegisters = kConsumers == 2 ? (kPersistent ? 232 : 240) : 160;
  static constexpr int kLaunchRegisters = 65536 / kThreads / 8 * 8;  // what ptxas gives a thread
  static_assert(kProducerRegisters <= kLaunchRegisters && kLaunchRegisters <= kConsumerRegisters &&
                    kProducerRegisters * 128 + kConsumerRegisters * 128 * kConsumers <=
                        kLaunchRegisters * kThreads,
                "setmaxnreg lowers the producer, raises the consumers, within the block's share");
  static_assert(kConsumers == 2 || kConsumers == 3, "two or three consumer warpgroups");
  // Named barrier ids 1..kConsumers: consumer c may issue its GEMMs once consumer c - 1 (the
  // last, for consumer 0) has issued its own.
  static constexpr int kTurnBarrier = 1;
};

// The block's work and the map of its queries. A plain launch's grid is (query tile, head,
// sequence), a head's tiles side by side (they read the same K/V), causal tiles longest first (the
// grid's last first). A grouped launch's is the wgmma loop's (flash_params.h): the heads of an
// L2-sized section along x, so that every head's longest tiles start first; with a head's tiles
// side by side the short group's tiles of the first heads ran before the long group's of the
// last (0.98x of separate calls against 1.05x, H100, docs/perf.md). A persistent block's items
// are the plain grid's blocks in that order, claimed one by one as blocks free up (as the
// hardware hands out a plain grid's blocks): the blocks running at once work on neighbouring
// tiles, whose K/V are the same in L2, and causal ones start longest first.
template <bool kCausal>
__device__ __forceinline__ BlockWork ws_block_work(const KjitFlashTmaParams& p) {
  const int tile = static_cast<int>(kCausal ? gridDim.x - 1 - blockIdx.x : blockIdx.x);
  return {p.call, tile, static_cast<int>(blockIdx.y), static_cast<int>(blockIdx.z)};
}
template <bool kCausal>
__device__ __forceinline__ BlockWork ws_block_work(const KjitGroupedFlashTmaParams& p) {
  return block_work(p.call);
}
template <bool kCausal>
__device__ __forceinline__ BlockWork ws_item_work(const KjitFlashTmaParams& p, int item) {
  const int x = item % p.tiles, rest = item / p.tiles;
  return {p.call, kCausal ? p.tiles - 1 - x : x, rest % p.call.heads_q, rest / p.call.heads_q};
}
__device__ __forceinline__ const KjitTensorMap& query_map(const KjitFlashTmaParams& p) {
  return p.tma_q;
}
__device__ __forceinline__ const KjitTensorMap& query_map(const KjitGroupedFlashTmaParams& p) {
  const int slot = static_cast<int>(blockIdx.y) % p.call.tile_start[p.call.groups];
  return p.tma_q[group_of_slot(p.call, slot)];
}

// The main loops, flash_forward.hpp's mainloop ids: 91, turns of [P_{j-1} V_{j-1}, S_j] as one
// commit group; 92, the intra-warpgroup overlap; 93, 92 over persistent blocks.
template <int kMainloop>
struct FlashWsLoop {
  static constexpr bool kOverlap = kMainloop >= 92, kPersistent = kMainloop == 93;
  static_assert(kMainloop >= 91 && kMainloop <= 93, "mainloop 91, 92 or 93");
};

// Tile n of a block's K/V stream (counted across its items): its ring stage, and the parity of
// that stage's (n / kStages)-th use, which its mbarriers' phases follow.
template <int kStages>
struct RingSlot {
  int stage, parity;
  __device__ explicit RingSlot(int n) : stage(n % kStages), parity((n / kStages) & 1) {}
};

// kStages K and V tiles in flight each (the host sizes the shared memory for them).
// Params: KjitFlashTmaParams, or KjitGroupedFlashTmaParams for a grouped launch (not persistent).
template <class T, int kHeadDim, int kBlockN, int kConsumers, int kStages, bool kCausal,
          int kMainloop, class Params = KjitFlashTmaParams>
__global__ void __launch_bounds__(FlashWsRoles<kConsumers>::kThreads, 1)
    flash_forward_sm90_ws(const __grid_constant__ Params params) {
  using L = FlashWsLoop<kMainloop>;
  using R = FlashWsRoles<kConsumers, L::kPersistent>;
  using S = FlashSm90Shape<kHeadDim, kBlockN, R::kConsumers>;
  static_assert(!L::kPersistent || cuda::std::is_same_v<Params, KjitFlashTmaParams>,
                "the persistent loop takes plain calls");
  extern __shared__ unsigned char shared_raw[];
  T* shared_q = reinterpret_cast<T*>(ptx::swizzle_aligned(shared_raw));
  T* shared_k = shared_q + S::kQElems;             // [kStages][swizzled kBlockN x kHeadDim]
  T* shared_v = shared_k + kStages * S::kKVElems;  // [kStages][swizzled kBlockN x kHeadDim]
  // q_empty: a persistent block's consumers are done with Q (one arrival a warpgroup);
  // item_full/item_empty: its next item, producer to consumers (one arrival a consumer warp), -1
  // ending them.
  __shared__ cuda::std::uint64_t q_full, q_empty, k_full[kStages], k_empty[kStages],
      v_full[kStages], v_empty[kStages], item_full, item_empty;
  __shared__ int item_slot;
  // The overlap's softmax writes its row sums here, a word a thread (apart, so that no two
  // threads race); nobody reads them (see softmax).
  __shared__ volatile float softmax_done[L::kOverlap ? R::kConsumers * 128 : 1];

  // A block's work: itself, or a persistent block's items (see ws_item_work). (A grouped block's
  // work is read once, by every thread: it copies its group through shared memory.)
  const BlockWork launch_work = ws_block_work<kCausal>(params);  // (unused when persistent)
  const FlashTile<T> launch_tile(launch_work, S::kBlockM);
  if (!L::kPersistent && !launch_tile.has_rows()) return;
  auto item_work = [&](int item) {
    if constexpr (L::kPersistent) {
      return ws_item_work<kCausal>(params, item);
    } else {
      return launch_work;
    }
  };
  auto item_tile = [&](const BlockWork& work) {
    if constexpr (L::kPersistent) {
      return FlashTile<T>(work, S::kBlockM);
    } else {
      return launch_tile;
    }
  };
  // The consumers' key-block count and the warpgroup index are read through a shuffle so that the
  // compiler knows they are uniform across each warp: wgmma issued under a branch it cannot prove
  // uniform is serialised (ptxas C7520; a grouped launch's key_blocks, from its group's
  // parameters, ran 1.5x slower so).
  auto key_blocks_of = [](const FlashTile<T>& tile) {
    return __shfl_sync(0xffffffffu, tile.key_blocks(S::kBlockM, kBlockN, kCausal), 0);
  };
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  if (threadIdx.x == 0) {
    ptx::mbarrier_init(&q_full, 1);  // the producer's arrival, and the bytes it announces
    ptx::mbarrier_init(&q_empty, R::kConsumers);
    ptx::mbarrier_init(&item_full, 1);
    ptx::mbarrier_init(&item_empty, 4 * R::kConsumers);
    for (int s = 0; s < kStages; ++s) {
      ptx::mbarrier_init(&k_full[s], 1);
      ptx::mbarrier_init(&v_full[s], 1);
      ptx::mbarrier_init(&k_empty[s], R::kConsumers);
      ptx::mbarrier_init(&v_empty[s], R::kConsumers);
    }
    ptx::fence_mbarrier_init();
  }
  __syncthreads();

  if (warpgroup == 0) {
    ptx::release_registers<R::kProducerRegisters>();
    if (threadIdx.x != 0) return;
    const KjitTensorMap& tma_q = query_map(params);
    // A Q tile is read once, a K/V tile by every query tile of its head: Q's lines leave the L2
    // first (the grouped forward at 32k keys read its K/V 1.25x from DRAM without, 1.08x with;
    // the plain calls 1.01x faster).
    const cuda::std::uint64_t q_policy = ptx::l2_evict_first();
    // K and V tiles loaded for the items before, and Q tiles: the rings' and Q's running counts.
    int loaded = 0, q_loaded = 0;
    int item = L::kPersistent ? static_cast<int>(blockIdx.x) : 0;
    for (int step = 0;; ++step) {
      if constexpr (L::kPersistent) {
        // Claims the next item (the first is the block's own) and publishes it, or -1 past the
        // last, to the consumers.
        if (step > 0) {
          item = atomicAdd(params.next_item, 1) + static_cast<int>(gridDim.x);
          ptx::mbarrier_wait(&item_empty, (step - 1) & 1);  // the consumers took the last
        }
        item_slot = item < params.items ? item : -1;
        ptx::mbarrier_arrive(&item_full);
        if (item >= params.items) break;
      } else if (step > 0) {
        break;
      }
      const BlockWork work = item_work(item);
      const KjitFlashParams& p = work.p;
      const FlashTile<T> tile = item_tile(work);
      // (Its lone thread reads the count directly: the shuffle needs the whole warp.)
      const int key_blocks = tile.has_rows() ? tile.key_blocks(S::kBlockM, kBlockN, kCausal) : 0;
      if (key_blocks == 0) continue;  // the consumers store its rows without any tile
      // Tensor coordinates: (column, row, head, sequence), rows counted from the packed tensor's
      // start or the batched sequence's.
      const int batch = p.cu_seqlens_q ? 0 : tile.batch, kv_head = tile.head / p.group;
      const int q_row = tile.q_start + tile.row0;
      // (policy: none, or an L2 eviction policy for tma_load_4d)
      auto load = [&](T* dst, const KjitTensorMap& map, cuda::std::uint64_t* bar, int rows, int row,
                      int head, auto... policy) {
        ptx::mbarrier_arrive_expect_tx(bar, rows * kHeadDim * sizeof(T));
#pragma unroll
        for (int slab = 0; slab < S::kSlabs; ++slab)
          ptx::tma_load_4d(dst + slab * rows * S::kSlabCols, map, bar, slab * S::kSlabCols, row,
                           head, batch, policy...);
      };
      // Order K0, Q, K1, V0, K2, V1, .., V_{K-1}: V one tile behind K, as FA3 (a consumer needs
      // K_j for its turn before V_{j-1}).
      auto load_kv = [&](T* ring, cuda::std::uint64_t* empty, cuda::std::uint64_t* full,
                         const KjitTensorMap& map, int block) {
        const RingSlot<kStages> slot(loaded + block);
        ptx::mbarrier_wait(&empty[slot.stage], slot.parity ^ 1);  // 1 first: free
        load(ring + slot.stage * S::kKVElems, map, &full[slot.stage], kBlockN,
             tile.k_start + block * kBlockN, kv_head);
      };
      if (q_loaded == 0) {  // (maps of a call without keys are never touched)
        ptx::prefetch_tensor_map(tma_q);
        ptx::prefetch_tensor_map(params.tma_k);
        ptx::prefetch_tensor_map(params.tma_v);
      }
      // K_0 first: its stage is free while a persistent block's consumers still read the last
      // item's Q, which the next Q must wait for.
      load_kv(shared_k, k_empty, k_full, params.tma_k, 0);
      if (q_loaded > 0) ptx::mbarrier_wait(&q_empty, (q_loaded - 1) & 1);
      load(shared_q, tma_q, &q_full, S::kBlockM, q_row, tile.head, q_policy);
      for (int block = 1; block < key_blocks; ++block) {
        load_kv(shared_k, k_empty, k_full, params.tma_k, block);
        load_kv(shared_v, v_empty, v_full, params.tma_v, block - 1);
      }
      load_kv(shared_v, v_empty, v_full, params.tma_v, key_blocks - 1);
      loaded += key_blocks;
      ++q_loaded;
    }
    return;
  }

  ptx::claim_registers<R::kConsumerRegisters>();
  const int consumer = warpgroup - 1, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int warpgroup_row = 64 * consumer;  // within the tile
  const bool leader = threadIdx.x % 128 == 0;
  const bool last = consumer == R::kConsumers - 1;
  const int my_turn = R::kTurnBarrier + consumer,
            next_turn = R::kTurnBarrier + (consumer + 1) % R::kConsumers;
  // Turns: a warpgroup issues its GEMMs, then hands the tensor cores to the next consumer;
  // consumer 0 goes first (the last one's hand-over starts it). A block of one item skips the
  // last consumer's last hand-over, which nobody would wait for; a persistent block's consumer 0
  // takes it at the end instead.
  auto take_turn = [&] { ptx::named_barrier_sync(my_turn, 2 * 128); };
  auto pass_turn = [&](bool final) {
    if (L::kPersistent || !(last && final)) ptx::named_barrier_arrive(next_turn, 2 * 128);
  };
  if (L::kPersistent && last) ptx::named_barrier_arrive(next_turn, 2 * 128);

  int loaded = 0, q_loaded = 0;  // as the producer counts them
  for (int step = 0;; ++step) {
    int item = 0;
    if constexpr (L::kPersistent) {
      // Lane 0 reads the slot and hands it back itself (its arrival orders the read before the
      // producer's next write; racecheck flags a read by a lane that did not arrive). The read
      // is volatile so that ptxas does not hoist it out of the branch into every lane.
      ptx::mbarrier_wait(&item_full, step & 1);
      if (lane == 0) item = *const_cast<volatile int*>(&item_slot);
      item = __shfl_sync(0xffffffffu, item, 0);
      if (lane == 0) ptx::mbarrier_arrive(&item_empty);
      if (item < 0) break;
    } else if (step > 0) {
      break;
    }
    const BlockWork work = item_work(item);
    const KjitFlashParams& p = work.p;
    const FlashTile<T> tile = item_tile(work);
    if (!tile.has_rows()) continue;
    const int key_blocks = key_blocks_of(tile);
    const int warp_row = tile.row0 + warpgroup_row + 16 * warp;
    const int my_row = warp_row + lane / 4;  // and my_row + 8

    float acc_o[S::kSlabs][8][4] = {};
    float acc_s[S::kKeyTiles][4];
    unsigned prob[kBlockN / 16][4];  // P of the last softmax, the A operand of its P V
    RowPairStats stats;
    stats.reset();

    auto slot = [&](int block) { return RingSlot<kStages>(loaded + block); };
    auto issue_qk = [&](int block) {
      ptx::mbarrier_wait(&k_full[slot(block).stage], slot(block).parity);
      issue_scores<T, S>(acc_s, shared_q, warpgroup_row,
                         shared_k + slot(block).stage * S::kKVElems);
    };
    auto issue_pv = [&](int block) {
      ptx::mbarrier_wait(&v_full[slot(block).stage], slot(block).parity);
      issue_values<T, S>(acc_o, shared_v + slot(block).stage * S::kKVElems,
                         [&](int kk, unsigned(&a)[4]) {
                           for (int e = 0; e < 4; ++e)
                             a[e] = prob[kk][e];
                         });
    };
    // Ties O and P, which the wgmma read or write, to this point of the program.
    auto fence_operands = [&] {
#pragma unroll
      for (int slab = 0; slab < S::kSlabs; ++slab)
        ptx::fence_operand(acc_o[slab]);
      ptx::fence_operand(prob);
    };
    // Waits for S of `block` (`pending` later commit groups may still run), hands its K stage
    // back and folds it into the statistics, leaving O and P to a P V that may still run.
    float correction[2];
    auto softmax = [&](int block, auto pending) {
      ptx::wgmma_wait<decltype(pending)::value>();
      ptx::fence_operand(acc_s);
      if (leader) ptx::mbarrier_arrive(&k_empty[slot(block).stage]);
      softmax_step<kCausal, S>(acc_s, stats, tile, block * kBlockN, warp_row, my_row, p.scale_log2,
                               correction);
      // ptxas moves arithmetic past a wgmma wait but keeps shared stores before it: storing the
      // row sums (which need every exponential) keeps the softmax ahead of the wait for P V.
      if constexpr (decltype(pending)::value > 0)
        softmax_done[threadIdx.x - 128] = stats.sum[0] + stats.sum[1];
    };
    // Waits for P V of `block` and hands its V stage back.
    auto retire_values = [&](int block) {
      ptx::wgmma_wait<0>();
      fence_operands();
      if (leader) ptx::mbarrier_arrive(&v_empty[slot(block).stage]);
    };
    // Rescales O for the last softmax and rounds its P for the next P V.
    auto prepare_values = [&] {
      rescale_output<S>(acc_o, correction);
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk)
        probability_fragment<T>(acc_s, kk, prob[kk]);
    };

    using None = cuda::std::integral_constant<int, 0>;  // no later commit group pending
    if (key_blocks > 0) {
      ptx::mbarrier_wait(&q_full, q_loaded & 1);
      if (!L::kPersistent && last) ptx::named_barrier_arrive(next_turn, 2 * 128);
      if constexpr (!L::kOverlap) {
        // K + 1 turns a warpgroup: [S_0], [P_0 V_0, S_1], .., [P_{K-1} V_{K-1}], one commit
        // group each.
        for (int block = 0; block <= key_blocks; ++block) {
          const bool scores = block < key_blocks;
          take_turn();
          fence_operands();  // O's rescale and P's rounding stay before the wgmma that read them
          ptx::wgmma_fence();
          if (block > 0) issue_pv(block - 1);
          if (scores) issue_qk(block);
          ptx::wgmma_commit();
          pass_turn(!scores);
          if (block > 0) retire_values(block - 1);
          if (scores) {
            softmax(block, None{});
            prepare_values();
          }
        }
      } else {
        // The same turns, but in each S_j is committed apart from P_{j-1} V_{j-1} and waited
        // for alone, so the softmax of S_j runs under this warpgroup's own P V as well as under
        // the other warpgroups' GEMMs. The first and last turns are peeled: ptxas serialises the
        // wgmma of a loop whose commit groups depend on branches (C7514).
        take_turn();
        ptx::wgmma_fence();
        issue_qk(0);
        ptx::wgmma_commit();
        pass_turn(false);
        softmax(0, None{});
        prepare_values();
        for (int block = 1; block < key_blocks; ++block) {
          take_turn();
          fence_operands();
          ptx::wgmma_fence();
          issue_qk(block);
          ptx::wgmma_commit();
          issue_pv(block - 1);
          ptx::wgmma_commit();
          pass_turn(false);
          softmax(block, cuda::std::integral_constant<int, 1>{});
          retire_values(block - 1);
          prepare_values();
        }
        take_turn();
        fence_operands();
        ptx::wgmma_fence();
        issue_pv(key_blocks - 1);
        ptx::wgmma_commit();
        pass_turn(true);
        retire_values(key_blocks - 1);
      }
      if (L::kPersistent && leader) ptx::mbarrier_arrive(&q_empty);
      loaded += key_blocks;
      ++q_loaded;
    }

    const int row = my_row - tile.row0;
    store_rows<T>(*reinterpret_cast<const float(*)[S::kSlabs * 8][4]>(&acc_o),  // slabs in order
                  stats, tile.o + static_cast<long long>(row) * p.o_row_stride, p.o_row_stride,
                  tile.lse_row(p, my_row), tile.seqlen_q - my_row);
  }
  if (L::kPersistent && consumer == 0) take_turn();  // the last consumer's last hand-over
}

}  // namespace kjit::attention
