/* Parameters of templates/moe/balance.cuh (plain C layout, passed by value). */
#pragma once

struct KjitMoeBalanceParams {
  const int* ids;     /* [T, k] contiguous; ids outside [0, E) are not counted */
  const float* probs; /* [T, E], rows probs_stride apart: the router's probabilities */
  const void* logits; /* [T, E], rows logits_stride apart (fp32, bf16 or fp16); null: no z-loss */
  const int* cu_seqlens; /* [S + 1]: the sequences' token ranges; null: one sequence [0, T) */
  float* bias;           /* [E]: updated in place when not null (DeepSeek's aux-loss-free rule) */
  /* Per (sequence, chunk) partials: counts [S][chunks][E], probability sums [S][chunks][E],
     sums of squared logsumexp [S][chunks]. */
  int* part_counts;
  float* part_probs;
  float* part_z;
  int* counts;   /* [E] */
  float* f;      /* [E]: counts / (k T) */
  float* p;      /* [E]: mean probability over the tokens */
  float* losses; /* [4]: aux, seq_aux, z, max_vio */
  long long probs_stride, logits_stride;
  int tokens, experts, top_k, sequences, chunks, chunk_tokens;
  float aux_coeff, z_coeff, bias_rate;
};
