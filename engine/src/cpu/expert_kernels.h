// Packed-weight SwiGLU expert kernels for the CPU backend (AVX-512).
//
// Why not OpenBLAS alone: an MoE layer runs every expert on a few dozen rows
// (T * K / E), and cblas_sgemm repacks the whole weight matrix on every call,
// so at ~48 rows an expert's GEMMs spend a quarter of their time packing.
// Here the weights are packed once (when they reach the backend) into panels
// that the micro-kernel streams directly, the SwiGLU runs in the epilogue of
// the gate/up GEMM (the [rows, 2F] activation never reaches memory), and the
// token rows are the only thing packed per call (rows * K floats).
//
// Layouts (floats, row-major sources as in backend.h's ExpertWeights):
// - gate/up: ceil(F / 32) panels; panel j holds, for every k in [0, H), the 32
//   gate columns [32 j, 32 j + 32) then the 32 matching up columns (zeros past F).
// - down: ceil(H / 64) panels; panel j holds, for every k in [0, F), columns
//   [64 j, 64 j + 64) (zeros past H).
//
// All arithmetic is fp32 with fp32 sums (fused multiply-adds in k order), so
// results agree with OpenBLAS to fp32 rounding, not bit for bit.
// Thread safety: the functions are pure; distinct outputs may run in parallel.

#ifndef MOE_ENGINE_SRC_CPU_EXPERT_KERNELS_H_
#define MOE_ENGINE_SRC_CPU_EXPERT_KERNELS_H_

#include <cstddef>

namespace moe::engine::cpu {

// Whether this CPU runs the kernels (AVX-512F, checked at run time). When not,
// the backend keeps its OpenBLAS path and packs nothing.
bool PackedKernelsAvailable();

// Floats of the packed gate/up and down matrices of one expert.
size_t PackedGateUpFloats(int hidden, int ffn);
size_t PackedDownFloats(int ffn, int hidden);
// Floats of the first panel of a packed matrix whose inner size is `k` (what
// is worth prefetching before a call).
size_t FirstPanelFloats(int k);
// Floats of the per-call row workspace for `rows` rows and inner size `k`.
size_t PackedRowsFloats(int rows, int k);

// Packs `gate_up` [H, 2F] and `down` [F, H] (layouts above).
void PackGateUp(const float* gate_up, int hidden, int ffn, float* packed);
void PackDown(const float* down, int ffn, int hidden, float* packed);

// act[r, :F] = silu(x[r] W_gate) * (x[r] W_up) for r in [0, rows); `x` has
// leading dimension `hidden`, `act` leading dimension `ffn`. `rows_ws` holds
// PackedRowsFloats(rows, hidden) floats. `next` (may be null): the first
// `next_floats` floats of what the caller runs next (packed weights), fetched
// into cache during the last panel.
void GateUpSwiGlu(const float* x, int rows, int hidden, int ffn, const float* packed_gate_up,
                  const float* next, size_t next_floats, float* rows_ws, float* act);

// y[r, :H] = act[r, :F] W_down for r in [0, rows); `rows_ws` holds
// PackedRowsFloats(rows, ffn) floats; `next` as above.
void Down(const float* act, int rows, int ffn, int hidden, const float* packed_down,
          const float* next, size_t next_floats, float* rows_ws, float* y);

}  // namespace moe::engine::cpu

#endif  // MOE_ENGINE_SRC_CPU_EXPERT_KERNELS_H_
